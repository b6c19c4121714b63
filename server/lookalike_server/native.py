"""The native REST API under ``/v1``: collections, tokens, records, search, insert jobs.

JSON in snake_case; request and answer bodies are the structs in :mod:`lookalike_server.schemas`
(unknown fields are refused). Errors are ``{"status", "code", "message"}`` with a stable
``code`` (see :mod:`lookalike_server.errors`).

Auth: every route needs ``Authorization: Token <token>``: the admin token, or a token of one
collection with the ``read`` scope (search, get, list, stats, random, rank, near-duplicates,
job status) or the ``write`` scope (also insert, update, delete, jobs). Creating and dropping
collections and managing tokens needs the admin token. No token or an unknown or revoked one:
401 ``unauthorized``; a token of another collection or without the scope: 403 ``forbidden``.
Auth is checked before the request body is read.

Routes (``{name}`` is a collection):

=======  ==========================================  ===========================================
POST     /v1/collections                             create (admin) -> 201 description
GET      /v1/collections                             list (admin: all; a token: its own)
GET      /v1/collections/{name}                      description and stats
DELETE   /v1/collections/{name}                      drop, revoking its tokens (admin) -> 204
GET      /v1/types                                   the collection types available
POST     /v1/tokens                                  create a collection token (admin) -> 201
GET      /v1/tokens                                  list tokens (admin)
DELETE   /v1/tokens/{token_id}                       revoke (admin) -> 204
POST     /v1/collections/{name}/records              insert up to 1000 records
POST     /v1/collections/{name}/records/upload       insert uploaded files (multipart)
GET      /v1/collections/{name}/records              page through records (limit, cursor, filter)
GET      /v1/collections/{name}/records/{record_id}  one record
POST     /v1/collections/{name}/records/get          records by ids
PATCH    /v1/collections/{name}/records              update metadata
POST     /v1/collections/{name}/records/delete       delete by ids or filter
POST     /v1/collections/{name}/records/random       random records (with filter)
POST     /v1/collections/{name}/search               search
POST     /v1/collections/{name}/search/upload        search by an uploaded image (multipart)
POST     /v1/collections/{name}/rank                 rank given records against a query
POST     /v1/collections/{name}/near-duplicates      groups of near-duplicates
POST     /v1/collections/{name}/jobs                 insert job, up to 100 000 records -> 202
GET      /v1/jobs                                    insert jobs (admin: all; a token: its own)
GET      /v1/jobs/{job_id}                           an insert job's progress
=======  ==========================================  ===========================================

A record whose ``_id`` contains ``/`` (or is ``get``, ``delete``, ``random`` or ``upload``)
cannot be named in a path: read it with ``POST .../records/get``.
"""

from __future__ import annotations

import base64
import inspect
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import FromPath, FromQuery, JSONBody, MultipartBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from lookalike import errors as lk
from lookalike.engine import Collection
from lookalike.filters import parse as parse_filter
from lookalike_server.app import Services, services
from lookalike_server.auth import Principal
from lookalike_server.errors import ApiError, classify, error_body
from lookalike_server.jobs import JobQueue
from lookalike_server.schemas import (
    MAX_JOB_RECORDS,
    MAX_LIMIT,
    MAX_RECORDS,
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    DeleteBody,
    DeleteResponse,
    ErrorBody,
    GetBody,
    InsertBody,
    InsertResponse,
    JobBody,
    JobInfo,
    JobList,
    NearDuplicatesBody,
    NearDuplicatesResponse,
    QueryRecord,
    RandomBody,
    RankBody,
    RankResponse,
    RecordErrorOut,
    RecordList,
    RecordPageOut,
    RecordsFound,
    SearchBody,
    SearchOptions,
    SearchResponse,
    SearchUploadForm,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    TypeInfo,
    TypeList,
    UnavailableCollection,
    UpdateBody,
    UpdateResponse,
    UploadForm,
)

__all__ = ["handlers", "on_startup", "jobs_of", "RANDOM_EXACT_LIMIT"]

Access = Literal["any", "read", "write", "admin"]

#: ``records/random`` samples uniformly when at most this many records pass the filter.
RANDOM_EXACT_LIMIT = MAX_LIMIT
#: Fields a metadata update may not set (an image changes by inserting the record again).
IMAGE_FIELDS = ("_url", "_base64", "_file")


# -- auth, errors, shared helpers --------------------------------------------------------------


async def _authorize(request: Request[Any, Any, Any]) -> None:
    """Runs before every ``/v1`` handler, before the body is read: who calls (kept for the
    handler) and whether they may.

    The route's ``opt["access"]`` says what it needs: ``admin``, ``read`` or ``write`` on the
    collection of the path (``{name}``), or ``any`` valid token (the handler checks further).
    A ``before_request`` hook rather than a guard: Litestar copies the handler for each guard
    call and runs a synchronous guard in a worker thread, which cost more than the search
    itself; the check (a SHA-256 and an indexed lookup) runs inline."""
    found = services(request.app.state)
    principal = found.tokens.authenticate(request.headers.get("authorization"))
    request.state["principal"] = principal
    access: Access = request.route_handler.opt.get("access", "admin")
    if access == "admin":
        principal.require_admin()
    elif access in ("read", "write"):
        principal.require(str(request.path_params["name"]), access)


def _principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state["principal"]
    return principal


def _client_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    """Litestar's own 400s (a body that is not JSON, a broken multipart form) are bad bodies."""
    status, code, message, extra = classify(error)
    if status == 400 and code == "http_error":
        code = "invalid_body"
    return Response(error_body(status, code, message, **extra), status_code=status)


def _too_deep(request: Request[Any, Any, Any], error: RecursionError) -> Response[Any]:
    """A JSON body nested deeper than the decoder goes (thousands of levels) is a bad body."""
    return Response(error_body(400, "invalid_body", "the JSON is nested too deeply"), status_code=400)


def _services(request: Request[Any, Any, Any]) -> Services:
    return services(request.app.state)


def jobs_of(found: Services) -> JobQueue:
    """The insert job queue of a server (made at startup)."""
    queue = found.extra.get("jobs")
    if not isinstance(queue, JobQueue):
        raise lk.ClosedError("the insert job queue is not running")
    return queue


def _collection(request: Request[Any, Any, Any], name: str) -> Collection:
    return _services(request).engine.collection(name)


def _too_many(count: int, limit: int, what: str, hint: str = "") -> None:
    if count > limit:
        raise ApiError(400, "too_many_records", f"at most {limit} {what} per request, got {count}{hint}")


def _check_filter(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A filter checked before any work (400 ``invalid_filter`` naming what is wrong)."""
    if value is None or not value:
        return None
    parse_filter(value)
    return dict(value)


def _record_errors(errors: list[Any]) -> list[RecordErrorOut]:
    return [RecordErrorOut(position=e.position, id=e.id, code=e.code, message=e.message) for e in errors]


def _millis(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_ERROR_DESCRIPTIONS = {
    400: "Bad request: the body, a parameter, a filter or a query is invalid (see `code`)",
    401: "No token, or an unknown or revoked one (`unauthorized`)",
    403: "The token may not do this (`forbidden`): another collection's, or read-only",
    404: "No such collection, record, token or job",
    409: "A collection of this name exists already (`collection_exists`)",
    413: "The request body or an image is too large (`body_too_large`, `image_too_large`)",
    429: "Too many insert jobs are waiting (`too_many_jobs`)",
    503: "The disk is read-only (`storage_read_only`) or the server is shutting down: nothing was written",
    507: "The disk is full, or the collection reached its storage cap (`storage_full`): nothing was written",
}

#: The error answers of a route that writes to the disk (a full or read-only disk refuses it).
WRITES = (503, 507)


def _errors(*extra: int) -> dict[int, ResponseSpec]:
    """The error answers of a route, for the OpenAPI document."""
    return {
        status: ResponseSpec(data_container=ErrorBody, description=_ERROR_DESCRIPTIONS[status], generate_examples=False)
        for status in sorted({400, 401, 403, 404, *extra})
    }


# -- collections -------------------------------------------------------------------------------

#: Keys of ``Collection.stats()`` that the description shows under their own names.
_DESCRIBED = frozenset(
    {
        "name",
        "type",
        "ndim",
        "metric",
        "precision",
        "records",
        "count",
        "memory_bytes",
        "query_kinds",
        "type_version",
        "type_config",
    }
)


def _describe(collection: Collection) -> CollectionInfo:
    stats = collection.stats()
    config = collection.config
    return CollectionInfo(
        name=config.name,
        type=config.type,
        type_version=config.type_version,
        config=dict(config.type_config),
        ndim=config.ndim,
        metric=config.metric,
        precision=config.precision,
        fields_to_index=list(config.fields_to_index),
        product_id_field=config.product_id_field,
        store_images=config.store_images,
        query_kinds=list(collection.query_kinds),
        count=int(stats.get("records", len(collection))),
        memory_bytes=collection.memory_usage(),
        index={key: value for key, value in stats.items() if key not in _DESCRIBED},
    )


@post(
    "/collections",
    status_code=HTTP_201_CREATED,
    sync_to_thread=True,
    opt={"access": "admin"},
    responses=_errors(409, 413, *WRITES),
)
def create_collection(request: Request[Any, Any, Any], data: JSONBody[CollectionCreate]) -> CollectionInfo:
    """Creates a collection (admin). ``vectors`` collections need ``ndim``; image types fix
    ``ndim`` and ``metric`` themselves. 409 ``collection_exists`` when the name is taken."""
    engine = _services(request).engine
    try:
        collection = engine.create_collection(
            data.name,
            type=data.type,
            config=data.config,
            ndim=data.ndim,
            metric=data.metric,
            precision=data.precision,
            fields_to_index=data.fields_to_index,
            product_id_field=data.product_id_field,
            store_images=data.store_images,
            shards=data.shards,
            replicas=data.replicas,
        )
    except lk.PluginError as error:  # a type that is not allowed or failed to load
        raise ApiError(400, "unsupported", str(error)) from error
    return _describe(collection)


@get("/collections", sync_to_thread=True, opt={"access": "any"}, responses=_errors())
def list_collections(request: Request[Any, Any, Any]) -> CollectionList:
    """The collections this token may see: all for the admin token, else its own."""
    engine = _services(request).engine
    principal = _principal(request)
    names = engine.list_collections()
    if not principal.admin:
        names = [name for name in names if name == principal.collection]
    described: list[CollectionInfo] = []
    unavailable: list[UnavailableCollection] = []
    for name in names:
        try:
            described.append(_describe(engine.collection(name)))
        except lk.NotFoundError:
            continue  # dropped meanwhile
        except lk.LookalikeError as error:
            unavailable.append(UnavailableCollection(name=name, code=error.code, message=str(error)))
    return CollectionList(collections=described, unavailable=unavailable)


@get("/collections/{name:str}", sync_to_thread=True, opt={"access": "read"}, responses=_errors())
def describe_collection(request: Request[Any, Any, Any], name: FromPath[str]) -> CollectionInfo:
    """A collection's settings and state: record count, memory, index counters, query kinds."""
    return _describe(_collection(request, name))


@delete(
    "/collections/{name:str}",
    status_code=HTTP_204_NO_CONTENT,
    sync_to_thread=True,
    opt={"access": "admin"},
    responses=_errors(*WRITES),
)
def drop_collection(request: Request[Any, Any, Any], name: FromPath[str]) -> None:
    """Drops a collection and its data (admin), and revokes its tokens."""
    found = _services(request)
    found.engine.drop_collection(name)
    found.tokens.revoke_collection(name)


@get("/types", sync_to_thread=True, opt={"access": "any"}, responses=_errors())
def list_types(request: Request[Any, Any, Any]) -> TypeList:
    """The collection types of this server: description, version, query kinds, config schema."""
    types = _services(request).engine.collection_types()
    return TypeList(
        types=[
            TypeInfo(
                name=name,
                description=str(info.get("description", "")),
                version=str(info.get("version", "")),
                query_kinds=list(info.get("query_kinds", [])),
                config=dict(info.get("config", {})),
            )
            for name, info in types.items()
        ]
    )


# -- tokens ------------------------------------------------------------------------------------


def _token_info(row: Mapping[str, Any]) -> TokenInfo:
    return msgspec.convert(row, type=TokenInfo)


@post(
    "/tokens",
    status_code=HTTP_201_CREATED,
    sync_to_thread=True,
    opt={"access": "admin"},
    responses=_errors(413, *WRITES),
)
def create_token(request: Request[Any, Any, Any], data: JSONBody[TokenCreate]) -> TokenCreated:
    """A token for one collection with the ``read`` or ``write`` scope (admin). The token is
    in this answer only; keep it."""
    found = _services(request)
    if data.collection not in found.engine.list_collections():
        raise lk.CollectionNotFoundError(f"no collection named {data.collection!r}")
    token, described = found.tokens.create(data.collection, data.scope, data.note)
    info = _token_info(described)
    return TokenCreated(
        token=token, id=info.id, collection=info.collection, scope=info.scope, created=info.created, note=info.note
    )


@get("/tokens", sync_to_thread=True, opt={"access": "admin"}, responses=_errors())
def list_tokens(request: Request[Any, Any, Any], collection: FromQuery[str | None] = None) -> TokenList:
    """Every token (or those of one ``collection``), revoked ones included; never the secret."""
    return TokenList(tokens=[_token_info(row) for row in _services(request).tokens.list(collection)])


@delete(
    "/tokens/{token_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    sync_to_thread=True,
    opt={"access": "admin"},
    responses=_errors(*WRITES),
)
def revoke_token(request: Request[Any, Any, Any], token_id: FromPath[str]) -> None:
    """Revokes a token (admin); 404 ``token_not_found`` when no token has this id."""
    if not _services(request).tokens.revoke(token_id):
        raise ApiError(404, "token_not_found", f"no token with id {token_id!r}")


# -- records -----------------------------------------------------------------------------------


def _insert(collection: Collection, records: list[dict[str, Any]]) -> InsertResponse:
    result = collection.insert(records)
    return InsertResponse(inserted=list(result.ids), errors=_record_errors(result.errors))


@post(
    "/collections/{name:str}/records",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "write"},
    responses=_errors(413, *WRITES),
)
def insert_records(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[InsertBody]) -> InsertResponse:
    """Inserts up to 1000 records (an existing ``_id`` is replaced). Each record needs a string
    ``_id`` and an image (``_url``, ``_base64``) or, in ``vectors`` collections, a ``_vector``.
    A bad record never fails the batch: it is reported in ``errors`` with a ``code``."""
    _too_many(len(data.records), MAX_RECORDS, "records", f"; send larger batches to /v1/collections/{name}/jobs")
    return _insert(_collection(request, name), data.records)


def _upload_records(form: UploadForm) -> list[dict[str, Any]]:
    files = form.file
    _too_many(len(files), MAX_RECORDS, "files")
    if form.id is None:
        ids: list[Any] = [upload.filename or None for upload in files]
    else:
        ids = [form.id] if isinstance(form.id, str) else list(form.id)
    if len(ids) != len(files):
        raise ApiError(400, "invalid_body", f"{len(files)} files but {len(ids)} _id fields: give one _id per file")
    metadata: list[dict[str, Any]] = [{} for _ in files]
    if form.metadata is not None:
        try:
            decoded = msgspec.json.decode(form.metadata)
        except msgspec.DecodeError as error:
            raise ApiError(400, "invalid_body", f"metadata is not JSON: {error}") from error
        if isinstance(decoded, dict):
            metadata = [dict(decoded) for _ in files]
        elif isinstance(decoded, list) and len(decoded) == len(files) and all(isinstance(m, dict) for m in decoded):
            metadata = [dict(m) for m in decoded]
        else:
            raise ApiError(
                400, "invalid_body", "metadata must be a JSON object, or a JSON list with one object per file"
            )
    return [
        {**meta, "_id": id_, "_base64": _b64(upload.file.read())}
        for upload, id_, meta in zip(files, ids, metadata, strict=True)
    ]


@post(
    "/collections/{name:str}/records/upload",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "write"},
    responses=_errors(413, *WRITES),
)
def upload_records(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    data: MultipartBody[UploadForm],
) -> InsertResponse:
    """Inserts uploaded image files (``multipart/form-data``): ``file`` parts, one ``_id`` per
    file (default: the file name) and optional JSON ``metadata`` (an object for every record,
    or a list with one object per file). Answers like ``POST .../records``."""
    collection = _collection(request, name)
    return _insert(collection, _upload_records(data))


@get("/collections/{name:str}/records", sync_to_thread=True, opt={"access": "read"}, responses=_errors())
def list_records(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 100,
    cursor: FromQuery[str | None] = None,
    filter_: Annotated[str | None, QueryParameter(name="filter", description="a JSON filter (MongoDB syntax)")] = None,
) -> RecordPageOut:
    """A page of records in insertion order; pass ``next_cursor`` as ``cursor`` for the next."""
    flt: dict[str, Any] | None = None
    if filter_ is not None and filter_.strip():
        try:
            decoded = msgspec.json.decode(filter_)
        except msgspec.DecodeError as error:
            raise lk.InvalidFilterError(f"filter is not JSON: {error}") from error
        if not isinstance(decoded, dict):
            raise lk.InvalidFilterError(f"a filter must be a JSON object, got {type(decoded).__name__}")
        flt = _check_filter(decoded)
    try:
        page = _collection(request, name).records(filter=flt, limit=limit, cursor=cursor or None)
    except OverflowError as error:  # a cursor beyond any key (the engine hands it to SQLite)
        raise lk.InvalidInputError(f"invalid cursor {cursor!r}") from error
    return RecordPageOut(records=page.records, next_cursor=page.cursor)


@get(
    "/collections/{name:str}/records/{record_id:str}", sync_to_thread=True, opt={"access": "read"}, responses=_errors()
)
def get_record(request: Request[Any, Any, Any], name: FromPath[str], record_id: FromPath[str]) -> dict[str, Any]:
    """One record: ``_id`` and its metadata. 404 ``record_not_found``."""
    found = _collection(request, name).get([record_id])
    if not found:
        raise lk.RecordNotFoundError(f"no record with _id {record_id!r}")
    return found[0]


_IMAGE_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


#: Every media type the image route answers with (other formats go as bytes).
IMAGE_MEDIA_TYPES = (
    *dict.fromkeys(media_type for _, media_type in _IMAGE_TYPES),
    "image/webp",
    "application/octet-stream",
)


def _image_media_type(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in _IMAGE_TYPES:
        if data.startswith(magic):
            return media_type
    return "application/octet-stream"


@dataclass
class _ImageOperation(Operation):
    """The image route's success answer, in the OpenAPI document: the image's own media type."""

    def __post_init__(self) -> None:
        binary = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))
        if self.responses is not None:
            success = self.responses["200"]
            if isinstance(success, OpenAPIResponse):
                success.content = {media_type: binary for media_type in IMAGE_MEDIA_TYPES}


@get(
    "/collections/{name:str}/records/{record_id:str}/image",
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(),
    media_type="application/octet-stream",
    operation_class=_ImageOperation,
)
def get_record_image(request: Request[Any, Any, Any], name: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    """The original image of a record, as it was inserted, in collections created with
    ``store_images``. 400 ``unsupported`` when the collection does not store images, 404
    ``record_not_found`` when the record (or its image) is not there."""
    data = _collection(request, name).get_image(record_id)
    return Response(
        data,
        media_type=_image_media_type(data),
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"},
    )


@post(
    "/collections/{name:str}/records/get",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def get_records(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[GetBody]) -> RecordsFound:
    """Records by ``_id`` (up to 1000), in the order asked; unknown ids are listed in ``missing``."""
    _too_many(len(data.ids), MAX_RECORDS, "ids")
    records = _collection(request, name).get(data.ids, fields=data.fields)
    present = {record["_id"] for record in records}
    return RecordsFound(records=records, missing=[id_ for id_ in dict.fromkeys(data.ids) if id_ not in present])


@patch("/collections/{name:str}/records", sync_to_thread=True, opt={"access": "write"}, responses=_errors(413, *WRITES))
def update_records(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[UpdateBody]) -> UpdateResponse:
    """Sets the given metadata fields of existing records (up to 1000; other fields stay). All
    or nothing: 404 ``record_not_found`` when an ``_id`` does not exist."""
    _too_many(len(data.records), MAX_RECORDS, "records")
    for position, record in enumerate(data.records):
        given = [field for field in IMAGE_FIELDS if field in record]
        if given:
            raise ApiError(
                400,
                "invalid_record",
                f"record {position}: {given[0]} cannot be updated; insert the record again to change its image",
            )
    return UpdateResponse(updated=_collection(request, name).update(data.records))


@post(
    "/collections/{name:str}/records/delete",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "write"},
    responses=_errors(413, *WRITES),
)
def delete_records(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[DeleteBody]) -> DeleteResponse:
    """Deletes records by ``ids`` (unknown ones are ignored) or by a non-empty ``filter``."""
    if (data.ids is None) == (data.filter is None):
        raise ApiError(400, "invalid_body", 'give either "ids" or "filter"')
    collection = _collection(request, name)
    if data.ids is not None:
        _too_many(len(data.ids), MAX_RECORDS, "ids")
        return DeleteResponse(deleted=collection.remove(data.ids))
    flt = _check_filter(data.filter)
    if flt is None:
        raise lk.InvalidFilterError(
            "an empty filter would delete every record; pass a filter that selects some, or drop the collection"
        )
    return DeleteResponse(deleted=collection.remove(filter=flt))


def _random_query(collection: Collection, count: int) -> np.ndarray:
    """Random query rows for a collection (bytes for binary vectors)."""
    rng = np.random.default_rng()
    config = collection.config
    if config.precision == "binary":
        return rng.integers(0, 256, size=(count, config.ndim // 8), dtype=np.uint8)
    return rng.standard_normal((count, config.ndim)).astype(np.float32)


def _random_records(collection: Collection, count: int, flt: dict[str, Any] | None) -> list[dict[str, Any]]:
    total = collection.count(flt)
    want = min(count, total)
    if want == 0:
        return []
    if total <= RANDOM_EXACT_LIMIT:
        # Every passing record, by an exact scan over just them; then a uniform sample.
        everyone = collection.search(
            vector=_random_query(collection, 1)[0], limit=total, filter=flt, exact=True, fields=[]
        )
        ids = random.sample([hit["_id"] for hit in everyone], min(want, len(everyone)))
    else:
        # Too many to list: the nearest record to each of many random directions (spread over
        # the collection, not exactly uniform).
        seen: dict[str, None] = {}
        for _attempt in range(8):
            batch = collection.search_vectors(_random_query(collection, 2 * want), 4, filter=flt)
            for row in batch.ids:
                if row:
                    seen.setdefault(random.choice(row), None)
            if len(seen) >= want:
                break
        ids = random.sample(list(seen), min(want, len(seen)))
    return collection.get(ids)


@post(
    "/collections/{name:str}/records/random",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def random_records(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[RandomBody]) -> RecordList:
    """Up to ``count`` records picked at random among those passing ``filter``: uniformly when
    at most 10 000 pass, else the neighbours of random directions (spread, not uniform)."""
    collection = _collection(request, name)
    return RecordList(records=_random_records(collection, data.count, _check_filter(data.filter)))


# -- search ------------------------------------------------------------------------------------


def _query_record(query: QueryRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in (("_id", query.id), ("_url", query.url), ("_base64", query.base64), ("_vector", query.vector))
        if value is not None
    }


def _search(collection: Collection, options: SearchOptions, record: dict[str, Any] | None) -> SearchResponse:
    started = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if record is not None:
        kwargs["record"] = record
    if options.vector is not None:
        kwargs["vector"] = options.vector
    if options.text is not None:
        kwargs["text"] = options.text
    if options.colors is not None:
        kwargs["colors"] = msgspec.to_builtins(options.colors)
    hits = collection.search(
        **kwargs,
        text_weight=options.text_weight,
        limit=options.limit,
        offset=options.offset,
        filter=_check_filter(options.filter),
        group_by=options.group_by,
        group_size=options.group_size,
        fields=options.fields,
        exact=options.exact,
    )
    return SearchResponse(hits=hits, took_ms=_millis(started))


@post(
    "/collections/{name:str}/search",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def search(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[SearchBody]) -> SearchResponse:
    """The nearest records to a query: ``query`` (``_id``, ``_url``, ``_base64`` or ``_vector``),
    ``vector``, ``text``, ``query`` with ``text``, or ``colors``; with ``filter``, ``limit``,
    ``offset``, grouping and a field projection."""
    collection = _collection(request, name)
    return _search(collection, data, None if data.query is None else _query_record(data.query))


def _search_options(raw: str | None) -> SearchOptions:
    if raw is None or not raw.strip():
        return SearchOptions()
    try:
        return msgspec.json.decode(raw, type=SearchOptions)
    except msgspec.ValidationError as error:
        raise ApiError(400, "invalid_body", f"options: {error}") from error
    except msgspec.DecodeError as error:
        raise ApiError(400, "invalid_body", f"options is not JSON: {error}") from error


@post(
    "/collections/{name:str}/search/upload",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def search_upload(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    data: MultipartBody[SearchUploadForm],
) -> SearchResponse:
    """Search by an uploaded image (``multipart/form-data``): ``file`` and optional ``options``,
    a JSON object of the search options (``limit``, ``filter``, ``text``...)."""
    options = _search_options(data.options)
    collection = _collection(request, name)
    return _search(collection, options, {"_base64": _b64(data.file.file.read())})


@post(
    "/collections/{name:str}/rank",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def rank(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[RankBody]) -> RankResponse:
    """Ranks the given records (up to 1000 ``ids``) by their exact distance to the query,
    nearest first; ids that do not exist are listed in ``missing``."""
    started = time.perf_counter()
    _too_many(len(data.ids), MAX_RECORDS, "ids")
    if not data.ids:
        raise ApiError(400, "invalid_body", '"ids" must not be empty')
    collection = _collection(request, name)
    wanted = list(dict.fromkeys(data.ids))
    hits = collection.rank(wanted, record=_query_record(data.query), fields=data.fields)
    present = {hit["_id"] for hit in hits}
    return RankResponse(hits=hits, missing=[id_ for id_ in wanted if id_ not in present], took_ms=_millis(started))


@post(
    "/collections/{name:str}/near-duplicates",
    status_code=HTTP_200_OK,
    sync_to_thread=True,
    opt={"access": "read"},
    responses=_errors(413),
)
def near_duplicates(
    request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[NearDuplicatesBody]
) -> NearDuplicatesResponse:
    """Groups of near-duplicate records across the collection (or those passing ``filter``):
    records within ``threshold`` of each other (default: the type's calibrated threshold)."""
    collection = _collection(request, name)
    groups = collection.near_duplicates(data.threshold, filter=_check_filter(data.filter))
    return NearDuplicatesResponse(groups=groups)


# -- insert jobs -------------------------------------------------------------------------------


@post(
    "/collections/{name:str}/jobs",
    status_code=HTTP_202_ACCEPTED,
    sync_to_thread=True,
    opt={"access": "write"},
    responses=_errors(413, 429, 503),
)
def create_job(request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[JobBody]) -> JobInfo:
    """Queues an insert job of up to 100 000 records (like ``POST .../records``, in the
    background); follow it with ``GET /v1/jobs/{id}``. 429 ``too_many_jobs`` when the queue is full."""
    _too_many(len(data.records), MAX_JOB_RECORDS, "records")
    found = _services(request)
    found.engine.collection(name)  # 404 now rather than a failed job later
    return jobs_of(found).submit(name, data.records)


@get("/jobs", sync_to_thread=True, opt={"access": "any"}, responses=_errors())
def list_jobs(request: Request[Any, Any, Any]) -> JobList:
    """Insert jobs known to this server, newest first: all for the admin token, else those of
    the token's collection."""
    principal = _principal(request)
    queue = jobs_of(_services(request))
    return JobList(jobs=queue.list(None if principal.admin else principal.collection))


@get("/jobs/{job_id:str}", sync_to_thread=True, opt={"access": "any"}, responses=_errors())
def get_job(request: Request[Any, Any, Any], job_id: FromPath[str]) -> JobInfo:
    """An insert job's status and progress; 404 ``job_not_found``."""
    info = jobs_of(_services(request)).get(job_id)
    if info is None:
        raise ApiError(404, "job_not_found", f"no insert job with id {job_id!r}")
    _principal(request).require(info.collection, "read")
    return info


# -- wiring ------------------------------------------------------------------------------------

ROUTES: list[Any] = [
    create_collection,
    list_collections,
    describe_collection,
    drop_collection,
    list_types,
    create_token,
    list_tokens,
    revoke_token,
    insert_records,
    upload_records,
    list_records,
    get_record,
    get_record_image,
    get_records,
    update_records,
    delete_records,
    random_records,
    search,
    search_upload,
    rank,
    near_duplicates,
    create_job,
    list_jobs,
    get_job,
]


def handlers() -> list[Any]:
    """The ``/v1`` router: every route behind the auth guard, documented by its docstring."""
    for route in ROUTES:
        if route.description is None and route.fn.__doc__:
            route.description = inspect.cleandoc(route.fn.__doc__)
    return [
        Router(
            path="/v1",
            route_handlers=ROUTES,
            before_request=_authorize,
            exception_handlers={HTTPException: _client_error, RecursionError: _too_deep},
            tags=["native"],
        )
    ]


def on_startup(found: Services) -> None:
    """Starts the insert job worker (stopped when the services close) and its gauges."""
    queue = JobQueue(found.engine)
    found.extra["jobs"] = queue
    found.extra.setdefault("closers", []).append(queue.close)
    found.metrics.gauges.append(queue.gauges)
