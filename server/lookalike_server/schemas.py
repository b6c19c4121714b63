"""Wire schemas of the native API (``/v1``): msgspec structs, so Litestar validates request
bodies (unknown fields are refused: 400 ``invalid_body``) and the OpenAPI document is precise.

Records themselves are free-form JSON objects (``_id``, an image or a ``_vector``, and any
metadata), so they stay ``dict[str, Any]``; everything around them is typed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.datastructures import UploadFile
from litestar.openapi.spec import OpenAPIType, Schema

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

__all__ = [
    "StrictStructSchema",
    "MAX_RECORDS",
    "MAX_JOB_RECORDS",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "Scope",
    "ErrorBody",
    "JobStatus",
    "CollectionCreate",
    "CollectionInfo",
    "CollectionList",
    "UnavailableCollection",
    "TypeInfo",
    "TypeList",
    "TokenCreate",
    "TokenCreated",
    "TokenInfo",
    "TokenList",
    "RecordErrorOut",
    "InsertBody",
    "InsertResponse",
    "UploadForm",
    "GetBody",
    "RecordsFound",
    "RecordPageOut",
    "RecordList",
    "UpdateBody",
    "UpdateResponse",
    "DeleteBody",
    "DeleteResponse",
    "RandomBody",
    "QueryRecord",
    "ColorWeight",
    "SearchOptions",
    "SearchBody",
    "SearchUploadForm",
    "SearchResponse",
    "RankBody",
    "RankResponse",
    "NearDuplicatesBody",
    "NearDuplicatesResponse",
    "JobBody",
    "JobInfo",
    "JobList",
    "XimilarStatus",
    "XimilarAnswer",
]

#: Records in one synchronous insert/update/get request; larger batches go through insert jobs.
MAX_RECORDS = 1_000
#: Records in one insert job.
MAX_JOB_RECORDS = 100_000
#: Hits or records in one answer (the engine's limit).
MAX_LIMIT = 10_000
MAX_OFFSET = 100_000

Scope = Literal["read", "write"]
JobStatus = Literal["queued", "running", "done", "failed"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
FieldPath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
RecordId = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Filter = dict[str, Any]
#: A vector component: a number a float32 can hold.
Component = Annotated[float, msgspec.Meta(ge=-3.4e38, le=3.4e38)]


# -- the OpenAPI document of these structs ---------------------------------------------------

_OPENAPI_TYPES: dict[type[msgspec.inspect.Type], OpenAPIType] = {
    msgspec.inspect.StrType: OpenAPIType.STRING,
    msgspec.inspect.IntType: OpenAPIType.INTEGER,
    msgspec.inspect.FloatType: OpenAPIType.NUMBER,
    msgspec.inspect.BoolType: OpenAPIType.BOOLEAN,
    msgspec.inspect.ListType: OpenAPIType.ARRAY,
    msgspec.inspect.DictType: OpenAPIType.OBJECT,
    msgspec.inspect.NoneType: OpenAPIType.NULL,
}


def _constrain(schema: Schema, kind: msgspec.inspect.Type, *, item: bool = False) -> None:
    """Adds the constraints of ``kind`` that Litestar leaves out to its schema: those of list
    items and of union members (a top-level field's own constraints are there already)."""
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.UnionType):
        for alternative in schema.one_of or []:
            if isinstance(alternative, Schema):
                for member in kind.types:
                    if _OPENAPI_TYPES.get(type(member)) == alternative.type:
                        _constrain(alternative, member, item=item)
        if not schema.one_of and len(kind.types) == 1:
            _constrain(schema, kind.types[0], item=item)
        return
    if isinstance(kind, msgspec.inspect.ListType) and isinstance(schema.items, Schema):
        _constrain(schema.items, kind.item_type, item=True)
        return
    if not item:
        return
    if isinstance(kind, msgspec.inspect.StrType):
        bounds: dict[str, Any] = {"min_length": kind.min_length, "max_length": kind.max_length, "pattern": kind.pattern}
    elif isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        bounds = {"minimum": kind.ge, "maximum": kind.le, "exclusive_minimum": kind.gt, "exclusive_maximum": kind.lt}
    else:
        return
    for name, value in bounds.items():
        if value is not None and getattr(schema, name) is None:
            setattr(schema, name, value)


class StrictStructSchema(StructSchemaPlugin):
    """Litestar's OpenAPI schema of a msgspec struct, with what it leaves out: a request body
    refuses unknown fields (``additionalProperties: false``), and list items and union members
    keep their constraints (``list[RecordId]``, ``list[ColorWeight | HexColor]``...), so the
    document allows exactly what the server accepts field by field."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType):
            if info.forbid_unknown_fields:
                schema.additional_properties = False
            for field in info.fields:
                documented = (schema.properties or {}).get(field.encode_name)
                if isinstance(documented, Schema):
                    _constrain(documented, field.type)
        return schema


# -- request and answer bodies ----------------------------------------------------------------


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error, not silently ignored."""


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """Base of answers."""


class ErrorBody(Answer, frozen=True):
    """Every error: the HTTP status again, a stable snake_case ``code`` and a message."""

    status: int
    code: str
    message: str


# -- collections -------------------------------------------------------------------------------


class CollectionCreate(Body, frozen=True):
    """A new collection. ``type`` is ``vectors`` (records bring their own ``_vector``: give
    ``ndim`` and optionally ``metric``) or an image collection type (``GET /v1/types``)
    configured by ``config``; its model fixes ``ndim`` and ``metric``."""

    name: Name
    type: Name = "vectors"
    config: dict[str, Any] | None = None
    ndim: Annotated[int, msgspec.Meta(ge=1, le=65_536)] | None = None
    metric: Literal["cos", "ip", "l2sq", "hamming"] | None = None
    precision: Literal["f32", "f16", "i8", "binary"] = "f32"
    fields_to_index: Annotated[list[FieldPath], msgspec.Meta(max_length=256)] = []
    product_id_field: FieldPath | None = None
    store_images: bool = False
    #: Spread the collection over this many shards of the server's Ray cluster (``lookalike
    #: serve --ray ADDRESS``); absent: one collection on the server's disk.
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    #: Copies of each shard, on different nodes (with ``shards``).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1


class CollectionInfo(Answer, frozen=True):
    """A collection: its settings (fixed at creation) and its current state."""

    name: str
    type: str
    type_version: str
    #: The type's configuration (empty for ``vectors``).
    config: dict[str, Any]
    ndim: int
    metric: str
    precision: str
    fields_to_index: list[str]
    product_id_field: str | None
    store_images: bool
    #: What the collection can be searched by: vector, id, image, text, image+text, colors.
    query_kinds: list[str]
    count: int
    memory_bytes: int
    #: Index state: capacity, removed records awaiting compaction, search counters...
    index: dict[str, Any]


class UnavailableCollection(Answer, frozen=True):
    """A collection that cannot be opened here (for example its type is not installed)."""

    name: str
    code: str
    message: str


class CollectionList(Answer, frozen=True):
    collections: list[CollectionInfo]
    unavailable: list[UnavailableCollection] = []


class TypeInfo(Answer, frozen=True):
    name: str
    description: str
    version: str
    query_kinds: list[str]
    #: JSON schema of the type's ``config``.
    config: dict[str, Any]


class TypeList(Answer, frozen=True):
    types: list[TypeInfo]


# -- tokens -----------------------------------------------------------------------------------


class TokenCreate(Body, frozen=True):
    collection: Name
    scope: Scope = "read"
    note: Annotated[str, msgspec.Meta(max_length=1_000)] = ""


class TokenInfo(Answer, frozen=True):
    id: str
    collection: str
    scope: Scope
    created: float
    revoked: bool
    note: str


class TokenCreated(Answer, frozen=True):
    """A new token: ``token`` is shown this once (the server keeps only its hash)."""

    token: str
    id: str
    collection: str
    scope: Scope
    created: float
    note: str


class TokenList(Answer, frozen=True):
    tokens: list[TokenInfo]


# -- records ----------------------------------------------------------------------------------


class RecordErrorOut(Answer, frozen=True):
    """Why one record of a batch was skipped; ``position`` counts from 0 in the batch."""

    position: int
    id: str | None = msgspec.field(name="_id")
    code: str
    message: str


class InsertBody(Body, frozen=True):
    """Records to add (an ``_id`` that exists already is replaced). Each has a string ``_id``,
    an image (``_url`` or ``_base64``) or, in ``vectors`` collections, a ``_vector``, and any
    JSON metadata (field names starting with ``_`` are reserved). At most 1000 records per
    request (400 ``too_many_records``): send larger batches as an insert job."""

    records: list[dict[str, Any]]


class InsertResponse(Answer, frozen=True):
    #: The ``_id`` of every record written, in input order.
    inserted: list[str]
    #: The records that were skipped, with the reason.
    errors: list[RecordErrorOut]


class UploadForm(msgspec.Struct, kw_only=True):
    """``multipart/form-data``: one or more ``file`` parts, an ``_id`` per file (in the same
    order; default: the file names) and optional ``metadata``: a JSON object applied to every
    record, or a JSON list with one object per file."""

    file: Annotated[list[UploadFile], msgspec.Meta(min_length=1)]
    id: str | list[str] | None = msgspec.field(default=None, name="_id")
    metadata: str | None = None


class GetBody(Body, frozen=True):
    #: At most 1000.
    ids: list[RecordId]
    #: Metadata fields to return (``_id`` always comes); default: all.
    fields: list[str] | None = None


class RecordsFound(Answer, frozen=True):
    records: list[dict[str, Any]]
    #: The asked ids that do not exist.
    missing: list[str]


class RecordPageOut(Answer, frozen=True):
    records: list[dict[str, Any]]
    #: Pass as ``cursor`` to get the next page; null on the last page.
    next_cursor: str | None


class RecordList(Answer, frozen=True):
    records: list[dict[str, Any]]


class UpdateBody(Body, frozen=True):
    """Metadata updates: each record has an ``_id`` and the fields to set (other fields stay).
    A ``_vector`` replaces the vector of a ``vectors`` record; images cannot be changed here
    (insert the record again)."""

    records: list[dict[str, Any]]


class UpdateResponse(Answer, frozen=True):
    updated: int


class DeleteBody(Body, frozen=True):
    """Either ``ids`` or a (non-empty) ``filter``."""

    ids: list[RecordId] | None = None
    filter: Filter | None = None


class DeleteResponse(Answer, frozen=True):
    deleted: int


class RandomBody(Body, frozen=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 10
    filter: Filter | None = None


# -- search -----------------------------------------------------------------------------------


class QueryRecord(Body, frozen=True):
    """What to search by: exactly one of a stored record's ``_id``, an image (``_url``,
    ``_base64``, a ``data:`` URI allowed) or a ``_vector``."""

    id: RecordId | None = msgspec.field(default=None, name="_id")
    url: str | None = msgspec.field(default=None, name="_url")
    base64: str | None = msgspec.field(default=None, name="_base64")
    vector: list[Component] | None = msgspec.field(default=None, name="_vector")


HexColor = Annotated[str, msgspec.Meta(pattern=r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")]


class ColorWeight(Body, frozen=True):
    """A colour of a colour query (``#rrggbb`` or ``#rgb``) and its weight."""

    color: HexColor
    weight: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0


class SearchOptions(Body, frozen=True):
    """Search options (everything but the query image of an upload search).

    The query is one of: ``query`` (a record: ``_id``, an image or a ``_vector``), ``vector``,
    ``text`` (types that support it), ``query`` and ``text`` together (mixed by
    ``text_weight``: 0 image only, 1 text only) or ``colors`` (types that support it)."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2_000)] | None = None
    text_weight: Weight = 0.5
    colors: Annotated[list[ColorWeight | HexColor], msgspec.Meta(min_length=1, max_length=64)] | None = None
    vector: list[Component] | None = None
    limit: Limit = 10
    offset: Offset = 0
    #: MongoDB-style filter on the metadata.
    filter: Filter | None = None
    #: Group hits by this field (the collection's ``product_id_field``): ``limit`` and ``offset``
    #: then count groups, each with its best ``group_size`` hits.
    group_by: str | None = None
    group_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    #: Metadata fields to return with each hit (``_id`` and ``distance`` always come); default: all.
    fields: list[str] | None = None
    #: Scan exactly instead of using the graph (slower, exact).
    exact: bool = False


class SearchBody(SearchOptions, frozen=True):
    query: QueryRecord | None = None


class SearchUploadForm(msgspec.Struct, kw_only=True):
    """``multipart/form-data``: the query image as ``file`` and optional ``options``: a JSON
    object of search options (``limit``, ``filter``, ``text``...)."""

    file: UploadFile
    options: str | None = None


class SearchResponse(Answer, frozen=True):
    #: Nearest first: ``_id``, ``distance`` (smaller is closer), the metadata (or ``fields``),
    #: ``is_duplicate`` for types with a duplicate threshold, ``_group`` when grouping.
    hits: list[dict[str, Any]]
    took_ms: float


class RankBody(Body, frozen=True):
    """Ranks the given stored records against the query (exact distances)."""

    query: QueryRecord
    ids: list[RecordId]
    fields: list[str] | None = None


class RankResponse(Answer, frozen=True):
    hits: list[dict[str, Any]]
    #: The given ids that do not exist.
    missing: list[str]
    took_ms: float


class NearDuplicatesBody(Body, frozen=True):
    #: Distance at or under which two records are duplicates (default: the type's calibrated one).
    threshold: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    filter: Filter | None = None


class NearDuplicatesResponse(Answer, frozen=True):
    #: Groups of two or more near-duplicate record ids, largest first.
    groups: list[list[str]]


# -- jobs -------------------------------------------------------------------------------------


class JobBody(Body, frozen=True):
    """Records as for ``POST .../records``, at most 100 000."""

    records: list[dict[str, Any]]


class JobInfo(Answer, frozen=True):
    """An asynchronous insert job; ``processed`` grows while it runs."""

    id: str
    collection: str
    status: JobStatus
    total: int
    processed: int
    inserted: int
    #: Records skipped (each with a reason in ``errors``, up to the first 1000).
    failed: int
    errors: list[RecordErrorOut]
    errors_truncated: bool
    #: Why the job failed as a whole (status ``failed``).
    message: str | None
    #: Unix times.
    created: float
    started: float | None
    finished: float | None


class JobList(Answer, frozen=True):
    jobs: list[JobInfo]


# -- Ximilar-compatible routes ------------------------------------------------------------------


class XimilarStatus(Answer, frozen=True):
    """Ximilar's status: the HTTP status again (``210``, ``404``...) and its text."""

    code: int
    text: str


class XimilarAnswer(Answer, frozen=True):
    """Every answer of the Ximilar-compatible routes, errors included (documentation only: the
    routes build their answers as plain dicts). Which fields come depends on the method; errors
    carry ``code`` (as in the native API) and ``detail``."""

    status: XimilarStatus
    statistics: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    records: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    skipped_records: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    answer_records: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    answer_distances: list[float] | msgspec.UnsetType = msgspec.UNSET
    answer_count: int | msgspec.UnsetType = msgspec.UNSET
    #: ``allRecords``: the next page (``allRecords?size=&page=``), when there is one.
    next: str | msgspec.UnsetType = msgspec.UNSET
    #: ``nearDuplicates`` without a query record: groups of records.
    groups: list[list[dict[str, Any]]] | msgspec.UnsetType = msgspec.UNSET
    group_count: int | msgspec.UnsetType = msgspec.UNSET
    code: str | msgspec.UnsetType = msgspec.UNSET
    detail: str | msgspec.UnsetType = msgspec.UNSET
