"""Ximilar-compatible similarity routes: the unchanged ``ximilar-client`` SDK (and code written
against Ximilar's similarity API) pointed at this server works.

The wire protocol is the one in ``shared/ximilar-api.md``. In short:

- ``POST {prefix}/{method}`` for every Ximilar service prefix (:data:`SERVICE_PREFIXES`, old
  names and the text-search prefixes included) and the methods in :data:`METHODS`. The
  collection is named by the ``collection-id`` header (the collection's name here); its type
  fixes the model, whatever the prefix (a products collection answers on the photos prefix too).
- Auth: ``Authorization: Token <token>`` (or ``JWT``/``Bearer``): the admin token or a token of
  that collection; reads need the ``read`` scope, ``insert``/``update``/``delete`` ``write``.
- Every answer is a JSON object with ``"status": {"code": int, "text": str}``; the HTTP status
  is the same code (the SDK ignores it). Errors too (401, 404, 413, 500, a body that is not
  JSON...): they never carry ``records``/``answer_records``, so the SDK's batch helpers count
  them as errors. Success answers carry ``statistics.OperationTime`` (milliseconds).

Records and fields:

- ``_id``: a string (integers are accepted and turned into strings).
- Images: ``_base64`` (raw or data-URI) or ``_url`` (read by the server's safe fetcher). The SDK
  flag ``noresize`` is dropped. ``_file`` is a path on the *client's* machine (the SDK sends it
  with ``_base64``): it is never opened, only kept as metadata. When a record has both
  ``_base64`` and ``_url``, the image comes from ``_base64`` and ``_url`` is kept as metadata.
- The engine reserves field names starting with ``_``. Ximilar records use such names as
  ordinary metadata (``_file``, ``_estate_id``...), so they are stored under the name prefixed
  with ``ximilar`` (``_file`` -> ``ximilar_file``; a ``_url`` kept beside ``_base64`` ->
  ``ximilar_url``) and shown under their own name again in every answer, in
  ``fields_to_return`` and in filters. (So a field a native client names ``ximilar_x`` reads as
  ``_x`` here.) The engine's own ``_url``, ``_vector`` (``vectors`` collections) and the fields a
  type derives (``_colors``) keep their names.
- ``fields_to_return``: ``_id`` always; ``"*"`` all stored metadata (never image data or
  vectors). ``is_duplicate`` (``matching`` collections) is returned by searches when asked for
  or with ``"*"``.

Methods (what each answers is in the function that serves it):

- ``insert``: an ``_id`` that exists already is skipped with ``411 "record duplicate"`` (never
  overwritten; delete and insert again to change an image). The check and the write happen
  under the collection's write lock: of two concurrent inserts of one new ``_id``, one writes
  it and the other gets 411. Answer ``records`` +
  ``skipped_records`` (each with ``_reason.status``); status ``210 records inserted``, ``211
  some records inserted``, or when nothing was inserted ``411`` (all duplicates), ``412 hard
  capacity exceeded`` or ``400``. The optional capacity is the setting
  ``ximilar_max_records`` (``LOOKALIKE_XIMILAR_MAX_RECORDS``) (records per collection; unset or 0: unlimited).
- ``update``: merges the given metadata into the stored records (the vector stays).
- ``delete``/``get``: ``220``/``200``, ``206 some of the records not found``, ``404 records not
  found``.
- ``visualKNN``: the ``k`` nearest (after ``from``), by a stored ``_id`` (the record itself
  comes first, distance 0) or an image, with a MongoDB ``filter``. Distances are the engine's
  (smaller is closer; cosine distance for image types). Collections with a
  ``product_id_field`` keep the best image per product and ``k`` counts products.
- ``visualTagsKNN``: visualKNN re-ranked by tag overlap: among the best
  ``max(100, 5 * (from + k))`` hits, ``distance' = distance * (1 - 0.3 * jaccard(tags of the
  query, tags of the hit))`` (:data:`TAG_WEIGHT`); the query's tags are the stored record's
  ``tags`` (query by ``_id``) or the query record's own ``tags``. ``tags`` is a list of strings
  (or of objects with a ``name``), compared case-insensitively.
- ``visualRankRecords``: ranks the given ``records`` (``_id`` of stored records, or external
  images) against the query; ``k`` and ``radius`` optional. External images are compared with
  their first view (``matching`` also compares stored records' mirror and crop views).
- ``random``: ``count`` records picked uniformly among those passing ``filter`` when at most
  :data:`RANDOM_SCAN_LIMIT` do; above that, the neighbours of a random direction (fast, not
  uniform).
- ``allRecords``: ``?size=&page=`` (1-based) pages in insertion order, with ``next`` only when
  another page exists; without ``size`` every record passing ``filter``. Pages continue from the
  previous page's position (remembered per collection and page size), so deleting records
  while paging skips none.
- ``text``: ``query_record._text_data`` (types with text search; ``k`` defaults to 30); with an
  image too, both are mixed (``text_weight``, default 0.5).
- ``nearDuplicates``: with ``query_record``, its near-duplicates in the collection (hits within
  ``threshold``, default the type's calibrated duplicate threshold or
  :data:`DEFAULT_DUPLICATE_THRESHOLD`; the record itself left out); without, the groups of
  near-duplicates of the whole collection (``groups``: lists of records).
- ``ping``: needs a valid token, no collection.
"""

from __future__ import annotations

import functools
import math
import random as random_module
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import msgspec
import numpy as np
from litestar import Request, Response, post
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema

from lookalike import errors as lk
from lookalike.engine import Collection
from lookalike.filters import parse as parse_filter
from lookalike_server.app import VERSION, Services, services
from lookalike_server.auth import Scope
from lookalike_server.errors import ApiError, status_of
from lookalike_server.schemas import XimilarAnswer

__all__ = [
    "handlers",
    "on_startup",
    "is_ximilar_path",
    "error_response",
    "SERVICE_PREFIXES",
    "METHODS",
    "TAG_WEIGHT",
    "DEFAULT_DUPLICATE_THRESHOLD",
    "RANDOM_SCAN_LIMIT",
]

#: Service prefixes of the real service (current and old names, and text search); one server
#: answers all of them.
SERVICE_PREFIXES: tuple[str, ...] = (
    "similarity/photos/v2",
    "photo/search/v2",
    "similarity/products-new/v2",
    "similarity/products/v2",
    "similarity/colors/v2",
    "image_matching/v2",
    "similarity/custom/v2",
    "similarity/fashion-new/v2",
    "similarity/fashion/v2",
    "similarity/homedecor/v2",
    "similarity/text/photo/v2",
    "similarity/text/products/v2",
    "similarity/text/fashion/v2",
    "similarity/text/homedecor/v2",
)
PREFIXES: tuple[str, ...] = tuple("/" + prefix for prefix in SERVICE_PREFIXES)

#: Method -> the scope it needs (None: any valid token; no collection).
METHODS: dict[str, Scope | None] = {
    "ping": None,
    "insert": "write",
    "delete": "write",
    "update": "write",
    "get": "read",
    "visualKNN": "read",
    "visualTagsKNN": "read",
    "visualRankRecords": "read",
    "random": "read",
    "allRecords": "read",
    "text": "read",
    "nearDuplicates": "read",
}

#: visualTagsKNN: ``distance * (1 - TAG_WEIGHT * jaccard)``.
TAG_WEIGHT = 0.3
#: nearDuplicates threshold for types without a calibrated one (cosine distance of the embeddings).
DEFAULT_DUPLICATE_THRESHOLD = 0.05
#: random: sample uniformly when at most this many records pass the filter.
RANDOM_SCAN_LIMIT = 10_000
#: Records in one insert/update/get/delete/visualRankRecords request.
MAX_RECORDS = 1_000
MAX_K = 10_000
MAX_FROM = 100_000
#: Stored field names: a Ximilar field ``_x`` is kept as ``ximilar_x``.
ESCAPE = "ximilar"
#: Fields the engine itself understands under their own name.
ENGINE_FIELDS = frozenset({"_id", "_url", "_base64", "_vector"})
#: SDK flags that are not record data.
CLIENT_FLAGS = frozenset({"noresize", "_img_data"})
MAX_ID_LENGTH = 1024

OK = (200, "OK")


def is_ximilar_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)


def error_response(status: int, code: str, message: str) -> Response[Any]:
    """An error in Ximilar's envelope (also used by the global exception handler)."""
    if status == 401:
        body: dict[str, Any] = {"detail": "Invalid token.", "status": {"code": 401, "text": "Invalid token."}}
    else:
        body = {"status": {"code": status, "text": message}, "code": code, "detail": message}
    return Response(body, status_code=status)


# -- state ------------------------------------------------------------------------------------


@dataclass
class XimilarState:
    """What the routes keep between requests: where allRecords pages start."""

    max_records: int = 0
    #: (collection, its instance, size, filter) -> {page: cursor after that page}; least recently used first.
    cursors: OrderedDict[tuple[str, int, int, str], dict[int, str | None]] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cursor_after(self, key: tuple[str, int, int, str], page: int) -> tuple[int, str | None] | None:
        """The latest known page at or before `page` and the cursor after it."""
        with self.lock:
            pages = self.cursors.get(key)
            if not pages:
                return None
            self.cursors.move_to_end(key)
            known = [p for p in pages if p <= page]
            if not known:
                return None
            best = max(known)
            return best, pages[best]

    def remember(self, key: tuple[str, int, int, str], page: int, cursor: str | None) -> None:
        with self.lock:
            pages = self.cursors.setdefault(key, {})
            self.cursors.move_to_end(key)
            pages[page] = cursor
            if len(pages) > 10_000:
                pages.pop(min(pages))
            while len(self.cursors) > 256:
                self.cursors.popitem(last=False)


def on_startup(found: Services) -> None:
    found.extra["ximilar"] = XimilarState(max_records=found.settings.ximilar_max_records)


def _state(found: Services) -> XimilarState:
    state = found.extra.get("ximilar")
    if not isinstance(state, XimilarState):
        state = XimilarState(max_records=found.settings.ximilar_max_records)
        found.extra["ximilar"] = state
    return state


# -- request helpers --------------------------------------------------------------------------


class BadRequest(ApiError):
    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(400, code, message)


@dataclass
class Call:
    """One request: its JSON body, query parameters and (except for ping) collection."""

    body: dict[str, Any]
    query: Mapping[str, str]
    collection: Collection | None
    state: XimilarState

    @property
    def coll(self) -> Collection:
        assert self.collection is not None
        return self.collection


Answer = tuple[tuple[int, str], dict[str, Any]]


def _int_param(value: Any, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


def _number_param(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    return float(value)


def _normalize_id(value: Any) -> str:
    """A record's ``_id`` as the engine keeps it; raises :class:`BadRequest` when unusable."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRequest("_id must be a string" if value is not None else "the record has no _id")
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise BadRequest(f"_id must have 1 to {MAX_ID_LENGTH} characters (no NUL)")
    return value


def _records_param(body: Mapping[str, Any], *, allow_empty: bool = True) -> list[Any]:
    records = body.get("records")
    if not isinstance(records, list):
        raise BadRequest('"records" must be a list of records')
    if not records and not allow_empty:
        raise BadRequest('"records" must not be empty')
    if len(records) > MAX_RECORDS:
        raise BadRequest(f'"records" takes at most {MAX_RECORDS} records per request, got {len(records)}')
    return records


def _fields_param(body: Mapping[str, Any], default: Sequence[str]) -> list[str] | None:
    """The projection: None for all fields ("*"), else the field names (``_id`` is added)."""
    fields = body.get("fields_to_return", default)
    if fields is None:
        fields = default
    if fields == "*":
        return None
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, list) or not all(isinstance(name, str) for name in fields):
        raise BadRequest('"fields_to_return" must be a list of field names (or ["*"])')
    if "*" in fields:
        return None
    return fields


def _escape_field(name: str, derived: frozenset[str]) -> str:
    if name.startswith("_") and name not in ENGINE_FIELDS and name not in derived:
        return ESCAPE + name
    return name


def _unescape_field(name: str) -> str:
    if name.startswith(ESCAPE + "_"):
        return name[len(ESCAPE) :]
    return name


def _derived(collection: Collection) -> frozenset[str]:
    return frozenset(collection.type.derived_fields) if collection.type is not None else frozenset()


def _filter_param(body: Mapping[str, Any], collection: Collection) -> dict[str, Any] | None:
    flt = body.get("filter")
    if flt is None or flt == {}:
        return None
    if not isinstance(flt, dict):
        raise BadRequest('"filter" must be an object (MongoDB syntax)', code="invalid_filter")
    escaped: dict[str, Any] = _escape_filter(flt, _derived(collection))
    parse_filter(escaped)  # a bad filter is refused before any other work
    return escaped


def _escape_filter(flt: Any, derived: frozenset[str]) -> Any:
    """A Ximilar filter with the field names as they are stored."""
    if isinstance(flt, list):
        return [_escape_filter(item, derived) for item in flt]
    if not isinstance(flt, dict):
        return flt
    out: dict[str, Any] = {}
    for key, value in flt.items():
        if not isinstance(key, str):
            out[key] = value
        elif key in ("$and", "$or", "$nor"):
            out[key] = _escape_filter(value, derived)
        elif key.startswith("$"):
            out[key] = value
        else:
            head, dot, rest = key.partition(".")
            out[_escape_field(head, derived) + dot + rest] = value
    return out


def _answer_record(
    data: Mapping[str, Any], fields: list[str] | None, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A stored record (engine names) as Ximilar shows it, projected on `fields`."""
    shown: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("_base64", "_vector", "distance", "_group", "is_duplicate"):
            continue
        outer = _unescape_field(name)
        if outer == "_url" and "_url" in shown:
            continue  # the engine's _url wins over one kept beside _base64
        shown[outer] = value
    for name, value in (extra or {}).items():
        if value is not None:
            shown[name] = value
    if fields is None:
        return shown
    out: dict[str, Any] = {"_id": shown["_id"]} if "_id" in shown else {}
    for name in fields:
        if name in shown:
            out[name] = shown[name]
    return out


def _distance(value: float) -> float:
    return max(0.0, float(value))


# -- records in -------------------------------------------------------------------------------


def _record_for_engine(record: Mapping[str, Any], derived: frozenset[str], *, images: bool) -> dict[str, Any]:
    """A Ximilar record as the engine takes it: `_file` and other `_x` fields escaped, client
    flags dropped; with ``images``, one image source (`_base64` wins over `_url`)."""
    out: dict[str, Any] = {}
    both = images and "_base64" in record and "_url" in record
    for name, value in record.items():
        if not isinstance(name, str):
            raise BadRequest("field names must be strings")
        if name in CLIENT_FLAGS:
            continue
        if name == "_id":
            out["_id"] = _normalize_id(value)
        elif name == "_base64":
            if images:
                out["_base64"] = value
        elif name == "_url" and both:
            out[ESCAPE + "_url"] = value
        else:
            out[_escape_field(name, derived)] = value
    return out


# -- queries ----------------------------------------------------------------------------------


@dataclass
class Query:
    """A resolved query record: the engine's search arguments, and the stored record when the
    query names one by `_id`."""

    kwargs: dict[str, Any]
    stored: dict[str, Any] | None = None
    record: Mapping[str, Any] = field(default_factory=dict)


class NoSuchRecord(Exception):
    def __init__(self, id_: str) -> None:
        super().__init__(id_)
        self.id = id_


def _query(collection: Collection, body: Mapping[str, Any], *, text: bool = False) -> Query:
    record = body.get("query_record")
    if record is None and isinstance(body.get("records"), list) and len(body["records"]) == 1:
        record = body["records"][0]  # the batch form with a single record
    if not isinstance(record, dict):
        raise BadRequest('"query_record" must be an object: {"_id": ...}, {"_url": ...} or {"_base64": ...}')
    text_data = record.get("_text_data")
    if text_data is not None and not isinstance(text_data, str):
        raise BadRequest("_text_data must be a string")
    if text and text_data is None:
        raise BadRequest('a text search needs "query_record": {"_text_data": "..."}')
    stored: dict[str, Any] | None = None
    if "_id" in record:
        id_ = _normalize_id(record["_id"])
        found = collection.get([id_])
        if found:
            stored = found[0]
    source: dict[str, Any] | None = None
    if stored is not None:
        source = {"_id": stored["_id"]}
    elif "_base64" in record:
        source = {"_base64": record["_base64"]}
    elif "_url" in record:
        source = {"_url": record["_url"]}
    elif "_vector" in record:
        source = {"_vector": record["_vector"]}
    elif "_id" in record and text_data is None:
        raise NoSuchRecord(_normalize_id(record["_id"]))
    elif "_file" in record and text_data is None:
        raise BadRequest("_file is a path on the client's machine; send the image as _base64 or _url")
    kwargs: dict[str, Any] = {}
    if text_data is not None:
        kwargs["text"] = text_data
        if source is not None:
            weight = _number_param(body.get("text_weight"), "text_weight")
            kwargs["text_weight"] = 0.5 if weight is None else weight
    if source is not None:
        kwargs["record"] = source
    if not kwargs:
        raise BadRequest("the query record needs _id, _url, _base64 (or _text_data for text search)")
    return Query(kwargs, stored, record)


def _not_found_answer(id_: str) -> Answer:
    return (404, "record not found"), {
        "answer_records": [],
        "answer_distances": [],
        "answer_count": 0,
        "detail": f"no record with _id {id_!r} in this collection",
    }


def _tags(value: Any) -> set[str]:
    out: set[str] = set()
    items: list[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [v for values in value.values() for v in (values if isinstance(values, list) else [values])]
    else:
        return out
    for item in items:
        if isinstance(item, dict):
            item = item.get("name", item.get("value"))
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            text = str(item).strip().lower()
            if text:
                out.add(text)
    return out


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _search(call: Call, *, tags: bool = False, text: bool = False) -> Answer:
    collection = call.coll
    body = call.body
    k = _int_param(body.get("k"), "k", 30 if text else 5, 1, MAX_K)
    offset = _int_param(body.get("from"), "from", 0, 0, MAX_FROM)
    fields = _fields_param(body, ["_id"])
    flt = _filter_param(body, collection)
    try:
        query = _query(collection, body, text=text)
    except NoSuchRecord as missing:
        return _not_found_answer(missing.id)
    grouping: dict[str, Any] = {}
    if collection.config.product_id_field is not None:
        grouping = {"group_by": collection.config.product_id_field}
    if tags:
        pool = min(MAX_K, max(100, 5 * (offset + k)))
        hits = collection.search(**query.kwargs, limit=pool, filter=flt, **grouping)
        wanted = _tags((query.stored or {}).get("tags", query.record.get("tags")))
        scored = [
            (_distance(hit["distance"]) * (1.0 - TAG_WEIGHT * _jaccard(wanted, _tags(hit.get("tags")))), position, hit)
            for position, hit in enumerate(hits)
        ]
        scored.sort(key=lambda item: (item[0], item[1]))
        ranked = [(distance, hit) for distance, _, hit in scored[offset : offset + k]]
    else:
        hits = collection.search(**query.kwargs, limit=k, offset=offset, filter=flt, **grouping)
        ranked = [(_distance(hit["distance"]), hit) for hit in hits]
    return _hits_answer(ranked, fields)


def _hits_answer(ranked: Sequence[tuple[float, Mapping[str, Any]]], fields: list[str] | None) -> Answer:
    records = []
    for _, hit in ranked:
        extra: dict[str, Any] = {}
        if "is_duplicate" in hit and (fields is None or "is_duplicate" in fields):
            extra["is_duplicate"] = hit["is_duplicate"]
        records.append(_answer_record(hit, fields, extra))
    return OK, {
        "answer_records": records,
        "answer_distances": [distance for distance, _ in ranked],
        "answer_count": len(records),
    }


# -- methods ----------------------------------------------------------------------------------


def _ping(call: Call) -> Answer:
    info = f"Lookalike {VERSION}: Ximilar-compatible similarity API"
    return OK, {"info": info, "_service_info": {"_name": "lookalike", "_info": info}}


RecordStatus = tuple[int, str]


def _skipped(record: Any, status: RecordStatus) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if isinstance(record, Mapping):
        for name in ("_id", "_url", "_file"):
            if name in record:
                entry[name] = record[name]
    entry["_reason"] = {"status": {"code": status[0], "text": status[1]}}
    return entry


def _error_status(code: str) -> int:
    return _CODE_STATUS.get(code, 400)


def _code_statuses() -> dict[str, int]:
    out: dict[str, int] = {}
    for name in lk.__all__:
        klass = getattr(lk, name)
        if isinstance(klass, type) and issubclass(klass, lk.LookalikeError):
            out[klass.code] = status_of(klass.__new__(klass))
    out["duplicate_id"] = 411
    return out


_CODE_STATUS = _code_statuses()


def _insert(call: Call) -> Answer:
    collection = call.coll
    body = call.body
    records = _records_param(body)
    fields = _fields_param(body, ["_id"])
    derived = _derived(collection)
    skipped: dict[int, dict[str, Any]] = {}
    prepared: list[tuple[int, dict[str, Any]]] = []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            skipped[position] = _skipped(record, (400, "a record must be an object"))
            continue
        try:
            converted = _record_for_engine(record, derived, images=True)
            if "_id" not in converted:
                raise BadRequest("the record has no _id")
            if not any(name in converted for name in ("_base64", "_url", "_vector")):
                if "_file" in record:
                    raise BadRequest(
                        "_file is a path on the client's machine and is not read here; send the image as "
                        "_base64 (the SDK adds it) or _url"
                    )
                raise BadRequest("the record needs an image: _url or _base64")
        except BadRequest as error:
            skipped[position] = _skipped(record, (400, error.message))
            continue
        prepared.append((position, converted))
    existing = {hit["_id"] for hit in collection.get([r["_id"] for _, r in prepared], fields=[])} if prepared else set()
    fresh: list[tuple[int, dict[str, Any]]] = []
    for position, converted in prepared:
        if converted["_id"] in existing:
            skipped[position] = _skipped(records[position], (411, "record duplicate"))
        else:
            fresh.append((position, converted))
    if call.state.max_records:
        room = max(0, call.state.max_records - len(collection))
        for position, _ in fresh[room:]:
            skipped[position] = _skipped(records[position], (412, "hard capacity exceeded"))
        fresh = fresh[:room]
    inserted: list[str] = []
    if fresh:
        # if_absent: an _id written by a concurrent request since the check above is skipped too.
        result = collection.insert([converted for _, converted in fresh], if_absent=True)
        inserted = result.ids
        for failure in result.errors:
            position = fresh[failure.position][0]
            skipped[position] = _skipped(records[position], (_error_status(failure.code), failure.message))
    if fields == ["_id"] or not inserted:
        answer = [{"_id": id_} for id_ in inserted]
    else:
        answer = [_answer_record(found, fields) for found in collection.get(inserted)]
    reasons = [entry["_reason"]["status"]["code"] for entry in skipped.values()]
    if not records:
        status = OK
    elif not skipped:
        status = (210, "records inserted")
    elif inserted:
        status = (211, "some records inserted")
    elif all(code == 411 for code in reasons):
        status = (411, "record duplicate")
    elif all(code == 412 for code in reasons):
        status = (412, "hard capacity exceeded")
    else:
        first = skipped[min(skipped)]["_reason"]["status"]
        status = (first["code"] if first["code"] >= 400 else 400, f"no records inserted: {first['text']}")
    return status, {"records": answer, "skipped_records": [skipped[p] for p in sorted(skipped)]}


def _ids_of(records: Sequence[Any]) -> tuple[list[tuple[int, str]], dict[int, dict[str, Any]]]:
    """The `_id` of each record (or plain id) and the skipped entries of the unusable ones."""
    ids: list[tuple[int, str]] = []
    skipped: dict[int, dict[str, Any]] = {}
    for position, record in enumerate(records):
        value = record.get("_id") if isinstance(record, dict) else record
        try:
            ids.append((position, _normalize_id(value)))
        except BadRequest as error:
            skipped[position] = _skipped(record, (400, error.message))
    return ids, skipped


def _partial_status(found: int, missing: int, ok: tuple[int, str]) -> tuple[int, str]:
    if missing == 0:
        return ok
    if found:
        return 206, "some of the records not found"
    return 404, "records not found"


def _delete(call: Call) -> Answer:
    collection = call.coll
    records = _records_param(call.body, allow_empty=False)
    ids, skipped = _ids_of(records)
    existing = {hit["_id"] for hit in collection.get(list(dict.fromkeys(i for _, i in ids)), fields=[])}
    for position, id_ in ids:
        if id_ not in existing:
            skipped[position] = _skipped(records[position], (404, "record not found"))
    targets = list(dict.fromkeys(i for _, i in ids if i in existing))
    if targets:
        collection.remove(targets)
    status = _partial_status(len(targets), len(skipped), (220, "records deleted"))
    return status, {
        "records": [{"_id": id_} for id_ in targets],
        "skipped_records": [skipped[p] for p in sorted(skipped)],
    }


def _update(call: Call) -> Answer:
    collection = call.coll
    records = _records_param(call.body, allow_empty=False)
    fields = _fields_param(call.body, ["*"])
    derived = _derived(collection)
    ids, skipped = _ids_of(records)
    existing = {hit["_id"] for hit in collection.get(list(dict.fromkeys(i for _, i in ids)), fields=[])}
    changes: dict[str, dict[str, Any]] = {}
    for position, id_ in ids:
        if id_ not in existing:
            skipped[position] = _skipped(records[position], (404, "record not found"))
            continue
        converted = _record_for_engine(records[position], derived, images=False)
        converted["_id"] = id_
        if collection.type is not None:
            converted.pop("_vector", None)  # an image record's descriptor never changes on update
        changes.setdefault(id_, {}).update(converted)
    if changes:
        collection.update(list(changes.values()))
    answer = [_answer_record(found, fields) for found in collection.get(list(changes))] if changes else []
    status = _partial_status(len(changes), len(skipped), OK)
    return status, {"records": answer, "skipped_records": [skipped[p] for p in sorted(skipped)]}


def _get(call: Call) -> Answer:
    collection = call.coll
    records = _records_param(call.body, allow_empty=False)
    fields = _fields_param(call.body, ["_id"])
    ids, skipped = _ids_of(records)
    found = {hit["_id"]: hit for hit in collection.get(list(dict.fromkeys(i for _, i in ids)))}
    answer = []
    for position, id_ in ids:
        if id_ in found:
            answer.append(_answer_record(found[id_], fields))
        else:
            skipped[position] = _skipped(records[position], (404, "record not found"))
    status = _partial_status(len(answer), len(skipped), OK)
    out: dict[str, Any] = {"answer_records": answer, "answer_count": len(answer)}
    if skipped:
        out["skipped_records"] = [skipped[p] for p in sorted(skipped)]
    return status, out


def _metric_distance(metric: str, query: np.ndarray, vector: np.ndarray) -> float:
    """The engine's distance of two vectors (smaller is closer)."""
    if metric == "hamming":
        bits = np.unpackbits(np.bitwise_xor(query.astype(np.uint8), vector.astype(np.uint8)))
        return float(bits.sum())
    a = query.astype(np.float64)
    b = vector.astype(np.float64)
    if metric == "cos":
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        return 1.0 - float(a @ b) / norm if norm else 1.0
    if metric == "ip":
        return 1.0 - float(a @ b)
    return float(((a - b) ** 2).sum())


def _rank(call: Call) -> Answer:
    collection = call.coll
    body = call.body
    records = _records_param(body)
    fields = _fields_param(body, ["_id", "_url", "_file"])
    k = _int_param(body.get("k"), "k", len(records) or 1, 1, max(MAX_K, len(records)))
    radius = _number_param(body.get("radius"), "radius")
    try:
        query = _query(collection, body)
    except NoSuchRecord as missing:
        return _not_found_answer(missing.id)
    if "text" in query.kwargs:
        raise BadRequest("visualRankRecords ranks by image; send _id, _url or _base64 in query_record")
    vector = collection.query_vector(**query.kwargs)[0]
    derived = _derived(collection)
    wanted: list[tuple[int, str]] = []
    external: list[tuple[int, dict[str, Any]]] = []
    skipped: dict[int, dict[str, Any]] = {}
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            skipped[position] = _skipped(record, (400, "a record must be an object"))
            continue
        if any(name in record for name in ("_base64", "_url", "_vector")):
            external.append((position, record))
            continue
        try:
            wanted.append((position, _normalize_id(record.get("_id"))))
        except BadRequest as error:
            skipped[position] = _skipped(record, (400, error.message))
    stored = {hit["_id"]: hit for hit in collection.get(list(dict.fromkeys(id_ for _, id_ in wanted)))}
    for position, id_ in wanted:
        if id_ not in stored:
            skipped[position] = _skipped(records[position], (404, "record not found"))
    ranked: list[tuple[float, int, dict[str, Any]]] = []
    metric = collection.config.metric
    if stored:
        ids = list(stored)
        # Exact distances by id lookups (each record's closest view for multi-view types).
        for hit in collection.rank(ids, vector=vector, fields=[]):
            ranked.append((_distance(hit["distance"]), len(ranked), stored[hit["_id"]]))
    for position, record in external:
        try:
            source = _record_for_engine(record, derived, images=True)
            image: dict[str, Any] = {name: source[name] for name in ("_base64", "_url", "_vector") if name in source}
            other = collection.query_vector(record=image)[0]
        except lk.InvalidInputError as error:
            skipped[position] = _skipped(record, (_error_status(error.code), str(error)))
            continue
        except BadRequest as error:
            skipped[position] = _skipped(record, (400, error.message))
            continue
        shown = {name: value for name, value in source.items() if name not in ("_base64", "_vector")}
        ranked.append((_distance(_metric_distance(metric, vector, other)), len(ranked), shown))
    ranked.sort(key=lambda item: (item[0], item[1]))
    if radius is not None:
        ranked = [item for item in ranked if item[0] <= radius]
    status, answer = _hits_answer([(distance, hit) for distance, _, hit in ranked[:k]], fields)
    if skipped:
        answer["skipped_records"] = [skipped[p] for p in sorted(skipped)]
    return status, answer


def _random_query(collection: Collection) -> Any:
    config = collection.config
    rng = np.random.default_rng()
    if config.precision == "binary":
        return rng.integers(0, 256, config.ndim // 8, dtype=np.uint8)
    return rng.standard_normal(config.ndim).astype(np.float32)


def _random(call: Call) -> Answer:
    collection = call.coll
    count = _int_param(call.body.get("count"), "count", 10, 1, MAX_K)
    fields = _fields_param(call.body, ["_id"])
    flt = _filter_param(call.body, collection)
    total = collection.count(flt)
    picked: list[dict[str, Any]] = []
    if total == 0:
        pass
    elif total <= RANDOM_SCAN_LIMIT:
        ids: list[str] = []
        if flt is None:
            cursor: str | None = None
            while True:
                page = collection.records(limit=MAX_K, cursor=cursor)
                ids.extend(record["_id"] for record in page.records)
                cursor = page.cursor
                if cursor is None:
                    break
        else:  # the filter's index bitmaps find the matching records without a scan
            matching = collection.search(
                vector=_random_query(collection), limit=total, filter=flt, exact=True, fields=[]
            )
            ids = [hit["_id"] for hit in matching]
        picked = collection.get(random_module.sample(ids, min(count, len(ids))))
    else:
        picked = collection.search(vector=_random_query(collection), limit=count, filter=flt)
        random_module.shuffle(picked)
    answer = [_answer_record(record, fields) for record in picked]
    return OK, {"answer_records": answer, "answer_count": len(answer)}


def _all_records(call: Call) -> Answer:
    collection = call.coll
    fields = _fields_param(call.body, ["_id"])
    flt = _filter_param(call.body, collection)
    size = _int_param(call.query.get("size"), "size", 0, 0, MAX_K)
    if size == 0:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = collection.records(filter=flt, limit=MAX_K, cursor=cursor)
            out.extend(_answer_record(record, fields) for record in page.records)
            cursor = page.cursor
            if cursor is None:
                break
        return OK, {"answer_records": out, "answer_count": len(out)}
    number = _int_param(call.query.get("page"), "page", 1, 1, 10**9)
    # The instance tells a collection from a later one of the same name (dropped and created again).
    key = (collection.name, id(collection), size, msgspec.json.encode(flt).decode() if flt is not None else "")
    known = call.state.cursor_after(key, number - 1) if number > 1 else None
    at, cursor = known if known is not None else (0, None)
    records: list[dict[str, Any]] = []
    more = True
    while at < number:
        if at > 0 and cursor is None:
            records, more = [], False  # past the last page
            break
        page = collection.records(filter=flt, limit=size, cursor=cursor)
        at += 1
        cursor = page.cursor
        call.state.remember(key, at, cursor)
        records = page.records
        more = cursor is not None
    answer = [_answer_record(record, fields) for record in records]
    result: dict[str, Any] = {"answer_records": answer, "answer_count": len(answer)}
    if more and answer:
        result["next"] = f"allRecords?size={size}&page={number + 1}"
    return OK, result


def _near_duplicates(call: Call) -> Answer:
    collection = call.coll
    body = call.body
    threshold = _number_param(body.get("threshold"), "threshold")
    if threshold is None:
        calibrated = getattr(collection.type, "duplicate_threshold", None)
        threshold = float(calibrated) if calibrated is not None else DEFAULT_DUPLICATE_THRESHOLD
    fields = _fields_param(body, ["_id"])
    flt = _filter_param(body, collection)
    if body.get("query_record") is None:
        neighbours = _int_param(body.get("k"), "k", 10, 1, 100)
        groups = collection.near_duplicates(threshold, filter=flt, neighbours=neighbours)
        wanted = {id_ for group in groups for id_ in group}
        found = {hit["_id"]: hit for hit in collection.get(sorted(wanted))} if wanted else {}
        shown = [[_answer_record(found[id_], fields) for id_ in group if id_ in found] for group in groups]
        return OK, {"groups": shown, "group_count": len(shown)}
    k = _int_param(body.get("k"), "k", 10, 1, MAX_K)
    try:
        query = _query(collection, body)
    except NoSuchRecord as missing:
        return _not_found_answer(missing.id)
    own = query.stored["_id"] if query.stored is not None else None
    hits = collection.search(**query.kwargs, limit=k + (1 if own is not None else 0), filter=flt)
    ranked = [
        (_distance(hit["distance"]), hit)
        for hit in hits
        if hit["_id"] != own and _distance(hit["distance"]) <= threshold
    ][:k]
    return _hits_answer(ranked, fields)


Method = Callable[[Call], Answer]

HANDLERS: dict[str, Method] = {
    "ping": _ping,
    "insert": _insert,
    "delete": _delete,
    "update": _update,
    "get": _get,
    "visualKNN": _search,
    "visualTagsKNN": functools.partial(_search, tags=True),
    "visualRankRecords": _rank,
    "random": _random,
    "allRecords": _all_records,
    "text": functools.partial(_search, text=True),
    "nearDuplicates": _near_duplicates,
}


# -- the route --------------------------------------------------------------------------------


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    return body


def _run(
    found: Services, method: str, collection_name: str | None, body: dict[str, Any], query: dict[str, str]
) -> Answer:
    collection = found.engine.collection(collection_name) if collection_name is not None else None
    call = Call(body=body, query=query, collection=collection, state=_state(found))
    return HANDLERS[method](call)


async def _handle(request: Request[Any, Any, Any], method: str) -> Response[Any]:
    started = time.perf_counter()
    found = services(request.app.state)
    principal = found.tokens.authenticate(request.headers.get("authorization"))
    if method not in METHODS:
        raise ApiError(404, "unknown_method", f"unknown method {method!r}; this service answers {', '.join(METHODS)}")
    scope = METHODS[method]
    collection_name: str | None = None
    if scope is not None:
        collection_name = (request.headers.get("collection-id") or "").strip() or None
        if collection_name is None:
            raise ApiError(400, "missing_collection", "send the collection in the 'collection-id' header")
        principal.require(collection_name, scope)
    body = _parse_body(await request.body())
    query = {name: str(value) for name, value in request.query_params.items()}
    (code, text), payload = await anyio.to_thread.run_sync(
        functools.partial(_run, found, method, collection_name, body, query)
    )
    payload["status"] = {"code": code, "text": text}
    payload["statistics"] = {"OperationTime": round((time.perf_counter() - started) * 1000)}
    return Response(payload, status_code=code)


#: Every HTTP status a Ximilar route answers with (the same as ``status.code`` in the body).
ANSWER_STATUSES: dict[int, str] = {
    200: "OK (also an `insert` of no records)",
    206: "`get`, `update`, `delete`: some of the records not found",
    210: "`insert`: records inserted",
    211: "`insert`: some records inserted (the others are in `skipped_records`)",
    220: "`delete`: records deleted",
    400: "Bad request: the body, a parameter, a filter or the query record is invalid; no `collection-id`",
    401: "No token, or an unknown or revoked one",
    403: "The token may not do this: another collection's, or read-only",
    404: "Unknown method, no such collection, or (`get`, `delete`, `update`, searches by `_id`) records not found",
    411: "`insert`: every record exists already (`record duplicate`)",
    412: "`insert`: the collection's capacity (`ximilar_max_records`) is reached (`hard capacity exceeded`)",
    413: "The request body or an image is too large",
    503: "The disk is read-only (`storage_read_only`) or the server is shutting down",
    507: "The disk is full, or the collection reached its storage cap (`storage_full`)",
}

_RECORD = Schema(
    type=OpenAPIType.OBJECT,
    description="A record: `_id`, an image (`_base64`, `_url`) or a `_vector`, and any metadata",
    properties={
        "_id": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_ID_LENGTH),
        "_url": Schema(type=OpenAPIType.STRING),
        "_base64": Schema(type=OpenAPIType.STRING),
        "_vector": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.NUMBER)),
    },
)

_BODY = Schema(
    type=OpenAPIType.OBJECT,
    description="The method's arguments (Ximilar's names); an empty or absent body is `{}`",
    properties={
        "records": Schema(type=OpenAPIType.ARRAY, items=_RECORD, max_items=MAX_RECORDS),
        "query_record": _RECORD,
        "fields_to_return": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)),
        "filter": Schema(type=OpenAPIType.OBJECT, description="MongoDB-style filter on the metadata"),
        "k": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_K),
        "from": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_FROM),
        "count": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_K),
        "threshold": Schema(type=OpenAPIType.NUMBER, minimum=0),
        "radius": Schema(type=OpenAPIType.NUMBER),
        "text_weight": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1),
    },
)


@dataclass
class XimilarOperation(Operation):
    """The Ximilar route in the OpenAPI document: the handler reads its inputs itself (the
    Ximilar envelope answers even a body that is not JSON), so they are described here."""

    def __post_init__(self) -> None:
        parameters = [p for p in self.parameters or [] if not (isinstance(p, Parameter) and p.name == "method")]
        self.parameters = [
            Parameter(
                name="method",
                param_in=ParamType.PATH,
                required=True,
                schema=Schema(type=OpenAPIType.STRING, enum=list(METHODS)),
                description="The Ximilar method (any other answers 404)",
            ),
            Parameter(
                name="collection-id",
                param_in=ParamType.HEADER,
                required=False,
                schema=Schema(type=OpenAPIType.STRING),
                description="The collection's name (every method but `ping`)",
            ),
            Parameter(
                name="size",
                param_in=ParamType.QUERY,
                required=False,
                schema=Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_K),
                description="`allRecords`: records per page (0 or absent: every record)",
            ),
            Parameter(
                name="page",
                param_in=ParamType.QUERY,
                required=False,
                schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
                description="`allRecords`: the page, from 1",
            ),
            *parameters,
        ]
        self.request_body = RequestBody(content={"application/json": OpenAPIMediaType(schema=_BODY)}, required=False)


@post(
    [f"{prefix}/{{method:str}}" for prefix in PREFIXES],
    name="ximilar",
    tags=["ximilar"],
    summary="Ximilar-compatible similarity API",
    description="POST {prefix}/{method}: insert, delete, update, get, visualKNN, visualTagsKNN, "
    "visualRankRecords, random, allRecords, ping, text, nearDuplicates. See shared/ximilar-api.md.",
    status_code=200,
    responses={
        status: ResponseSpec(data_container=XimilarAnswer, description=description, generate_examples=False)
        for status, description in ANSWER_STATUSES.items()
    },
    operation_class=XimilarOperation,
)
async def ximilar_route(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _handle(request, str(request.path_params["method"]))


def handlers() -> list[Any]:
    return [ximilar_route]
