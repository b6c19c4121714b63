"""The in-process engine: collections of records, durable in SQLite, searched by the core.

Every write goes the same way: validate the whole batch (nothing is written if any record is
bad), commit it to the collection's SQLite database (the write is acknowledged only then), then
apply it to the in-memory index. Searches run in the native core with the GIL released; only the
hits' records are read back from SQLite. See ARCHITECTURE.md for the path of one add and one
search.
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from lookalike import _core, images, models
from lookalike import filters as filters_module
from lookalike.batching import MicroBatcher
from lookalike.errors import (
    ClosedError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptSnapshotError,
    DimensionMismatchError,
    DuplicateIdError,
    InternalError,
    InvalidInputError,
    InvalidRecordError,
    InvalidVectorError,
    LookalikeError,
    PluginError,
    RecordNotFoundError,
    StorageError,
    UnavailableError,
    UnsupportedError,
)
from lookalike.filters import PRESENCE_SUFFIX, Filter, indexable_values
from lookalike.ingest import IMAGE_FIELDS, Embedded, Embedder, Fetch, InsertResult, RecordError, has_image
from lookalike.sdk.registry import Registry, default_registry
from lookalike.sdk.types import (
    CollectionType,
    SupportsColorQuery,
    SupportsMultiVector,
    SupportsTextQuery,
    TypeContext,
    parse_colors,
    query_kinds,
)
from lookalike.storage import CollectionStore, StoredRecord, dumps, storage_error

__all__ = [
    "Engine",
    "Collection",
    "LocalCollection",
    "ShardBackend",
    "CollectionConfig",
    "SearchBatch",
    "RecordPage",
    "InsertResult",
    "RecordError",
]

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_ID_LENGTH = 1024
#: Largest metadata of one record, as compact JSON (UTF-8).
MAX_METADATA_BYTES = 1_048_576
MAX_LIMIT = 10_000
NO_KEY = np.iinfo(np.uint64).max
#: Reserved record fields the `vectors` type understands; others starting with `_` are refused.
RESERVED_FIELDS = frozenset({"_id", "_vector", "_url", "_base64", "_file"})
CONFIG_FILE = "config.json"
#: A sharded collection's folder on the router holds its shard manifest instead of a database.
SHARDS_FILE = "shards.json"
DATABASE_FILE = "collection.db"
SNAPSHOT_DIR = "snapshots"
#: After a snapshot fails (a full disk), writes wait this long before the next try.
SNAPSHOT_RETRY_SECONDS = 60.0

Metric = Literal["cos", "ip", "l2sq", "hamming"]
Precision = Literal["f32", "f16", "i8", "binary"]


class CollectionConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings fixed when a collection is created."""

    name: str
    type: str = "vectors"
    ndim: int
    metric: str = "cos"
    precision: str = "f32"
    fields_to_index: tuple[str, ...] = ()
    product_id_field: str | None = None
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    exact_threshold: int = 0
    store_images: bool = False
    #: The collection type's configuration and version (image types; empty for "vectors").
    type_config: dict[str, Any] = msgspec.field(default_factory=dict)
    type_version: str = ""
    #: Vectors per record (types with several views of an image).
    views: int = 1
    format_version: int = 1


@dataclass(frozen=True)
class SearchBatch:
    """Results of a batch search: one row per query, `limit` columns, padded where fewer hits
    exist (key 2**64-1, distance inf). Distances: smaller is closer."""

    keys: npt.NDArray[np.uint64]
    distances: npt.NDArray[np.float32]
    counts: npt.NDArray[np.uint32]
    plans: list[str]
    _collection: Collection = field(repr=False)

    @property
    def ids(self) -> list[list[str]]:
        """The `_id` of each hit (one SQLite lookup for the whole batch)."""
        valid = [int(k) for row, count in zip(self.keys, self.counts, strict=True) for k in row[: int(count)]]
        found = self._collection._ids_of_keys(valid)
        return [
            [found[int(k)] for k in row[: int(count)] if int(k) in found]
            for row, count in zip(self.keys, self.counts, strict=True)
        ]


@dataclass(frozen=True)
class RecordPage:
    """One page of records in key order; pass `cursor` back for the next page (None at the end)."""

    records: list[dict[str, Any]]
    cursor: str | None


def _field_image(data: Mapping[str, Any], fields: Sequence[str]) -> dict[str, list[Any]]:
    """What the field indexes hold for one record: per core field, its values."""
    image: dict[str, list[Any]] = {}
    for path in fields:
        present, scalars = indexable_values(data, path)
        if scalars:
            image[path] = scalars
        if present:
            image[path + PRESENCE_SUFFIX] = [True]
    return image


def _entries(key: int, image: Mapping[str, list[Any]], views: int = 1) -> list[tuple[int, str, list[Any]]]:
    """Field index entries of one record, for each of its index keys (``key * views + view``)."""
    return [(key * views + view, name, values) for view in range(views) for name, values in image.items()]


class RecordRules:
    """What every collection applies before a record reaches storage: the rules of ids,
    metadata and vectors, and embedding (validation and embedding of a batch, :meth:`_prepare`).
    Shared by :class:`Collection` and the distributed ingestion tasks, which embed on other
    machines with the same :class:`CollectionConfig`."""

    def __init__(self, config: CollectionConfig, type_: CollectionType | None, embedder: Embedder | None) -> None:
        self.config = config
        #: The collection type's instance (None for plain "vectors" collections).
        self.type = type_
        self._views = config.views
        self._embedder = embedder

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def query_kinds(self) -> list[str]:
        """What this collection can be searched by: vector, id, image, text, image+text, colors."""
        if self.type is None:
            return ["vector", "id"]
        return list(query_kinds(self.type))

    # -- validation ------------------------------------------------------------------------

    def _vector_row(self, value: Any, position: int) -> np.ndarray:
        binary = self.config.precision == "binary"
        try:
            if binary:
                if isinstance(value, bytes | bytearray):
                    row = np.frombuffer(bytes(value), dtype=np.uint8)
                else:
                    array = np.asarray(value)
                    if array.dtype == np.uint8 and array.ndim == 1 and array.size == self.config.ndim // 8:
                        row = array
                    else:
                        bits = np.asarray(value, dtype=np.int64)
                        if bits.ndim != 1 or bits.size != self.config.ndim or not np.isin(bits, (0, 1)).all():
                            raise DimensionMismatchError(
                                f"record {position}: a binary _vector is {self.config.ndim} bits (0/1) "
                                f"or {self.config.ndim // 8} packed bytes"
                            )
                        row = np.packbits(bits.astype(np.uint8))
                if row.size != self.config.ndim // 8:
                    raise DimensionMismatchError(
                        f"record {position}: _vector has {row.size} bytes, expected {self.config.ndim // 8}"
                    )
                return row
            row = _float32(value)
        except (TypeError, ValueError) as error:
            raise InvalidVectorError(f"record {position}: _vector must be a list of numbers ({error})") from error
        if row.ndim != 1 or row.size != self.config.ndim:
            got = row.size if row.ndim == 1 else "x".join(map(str, row.shape))
            raise DimensionMismatchError(
                f"record {position}: _vector has {got} dimensions, the collection expects {self.config.ndim}"
            )
        if not np.isfinite(row).all():
            raise InvalidVectorError(f"record {position}: _vector contains NaN or infinity")
        if self.config.metric == "cos" and not np.any(row):
            raise InvalidVectorError(f"record {position}: a zero _vector has no direction (cosine metric)")
        return row

    @staticmethod
    def _check_id(value: Any, position: int) -> str:
        if not isinstance(value, str):
            raise InvalidRecordError(f"record {position}: _id must be a string, got {type(value).__name__}")
        if not value or len(value) > MAX_ID_LENGTH:
            raise InvalidRecordError(f"record {position}: _id must have 1 to {MAX_ID_LENGTH} characters")
        if "\x00" in value:
            raise InvalidRecordError(f"record {position}: _id must not contain NUL characters")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as error:
                raise InvalidRecordError(f"record {position}: _id is not valid Unicode ({error.reason})") from error
        return value

    def _metadata(self, record: Mapping[str, Any], position: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        derived = self.type.derived_fields if self.type is not None else frozenset()
        for name, value in record.items():
            if not isinstance(name, str):
                raise InvalidRecordError(f"record {position}: field names must be strings")
            if name.startswith("_"):
                if name in derived:
                    continue  # computed from the image; a record cannot set it
                if name not in RESERVED_FIELDS:
                    raise InvalidRecordError(
                        f"record {position}: field {name!r} is reserved (fields starting with '_' are the engine's)"
                    )
                if name in ("_id", "_vector", "_base64", "_file"):
                    continue
                if name == "_url" and not isinstance(value, str):
                    raise InvalidRecordError(f"record {position}: _url must be a string")
            data[name] = value
        try:
            size = len(dumps(data).encode())
        except (TypeError, ValueError) as error:  # UnicodeEncodeError (a lone surrogate) is a ValueError
            raise InvalidRecordError(f"record {position}: metadata is not valid JSON ({error})") from error
        if size > MAX_METADATA_BYTES:
            raise InvalidRecordError(
                f"record {position}: its metadata takes {size:,} bytes as JSON, more than the "
                f"{MAX_METADATA_BYTES:,} allowed; keep large data elsewhere and store a reference to it"
            )
        return data

    def _group_value(self, data: Mapping[str, Any]) -> str | None:
        if self.config.product_id_field is None:
            return None
        values = filters_module.values_at(data, self.config.product_id_field)
        if not values or values[0] is None:
            return None
        return dumps(values[0])

    def _prepare(
        self, batch: Sequence[Any], *, fetch: Fetch | None, atomic: bool
    ) -> tuple[list[tuple[str, dict[str, Any], np.ndarray, bytes | None]], list[RecordError]]:
        """Validates and embeds a batch: ``(id, metadata, vector row, image bytes)`` per good
        record, and the errors of the others. With ``atomic``, the first error is raised."""
        valid: list[tuple[int, str, dict[str, Any], np.ndarray | None, Mapping[str, Any]]] = []
        errors: list[RecordError] = []
        seen: set[str] = set()

        def fail(position: int, id_: str | None, error: LookalikeError) -> None:
            if atomic:
                message = str(error)
                if not message.startswith("record "):
                    error.args = (f"record {position}: {message}",)
                raise error
            errors.append(RecordError.of(position, id_, error))

        for position, record in enumerate(batch):
            id_: str | None = None
            try:
                if not isinstance(record, Mapping):
                    raise InvalidRecordError(f"record {position}: expected an object, got {type(record).__name__}")
                id_ = self._check_id(record.get("_id"), position)
                if id_ in seen:
                    raise DuplicateIdError(f"record {position}: _id {id_!r} appears twice in this batch")
                seen.add(id_)
                data = self._metadata(record, position)
                vector = self._record_vector(record, position)
            except LookalikeError as error:
                fail(position, id_ if isinstance(id_, str) else None, error)
                continue
            valid.append((position, id_, data, vector, record))
        to_embed = [(i, item) for i, item in enumerate(valid) if item[3] is None]
        embedded: dict[int, Embedded | LookalikeError] = {}
        if to_embed:
            assert self._embedder is not None
            results = self._embedder.embed([item[4] for _, item in to_embed], fetch=fetch)
            embedded = {i: result for (i, _), result in zip(to_embed, results, strict=True)}
        out: list[tuple[str, dict[str, Any], np.ndarray, bytes | None]] = []
        for i, (position, id_, data, vector, _record) in enumerate(valid):
            image: bytes | None = None
            if vector is None:
                result = embedded[i]
                if isinstance(result, LookalikeError):
                    fail(position, id_, result)
                    continue
                vector = result.views.reshape(-1)
                data = data | result.derived
                image = result.data if self.config.store_images else None
            out.append((id_, data, vector, image))
        errors.sort(key=lambda error: error.position)
        return out, errors

    def _record_vector(self, record: Mapping[str, Any], position: int) -> np.ndarray | None:
        """The record's vector row when it gives one (`_vector`); None when its image must be
        embedded."""
        image = has_image(record)
        if self.type is None and ("_base64" in record or "_file" in record):
            raise UnsupportedError(
                f"record {position}: images need an image collection type; 'vectors' collections take _vector"
            )
        if "_vector" in record:
            if "_base64" in record or "_file" in record:
                raise InvalidRecordError(f"record {position}: give either an image or a _vector, not both")
            if self._views != 1:
                raise UnsupportedError(
                    f"record {position}: type {self.config.type!r} stores {self._views} vectors per image; "
                    "records need an image"
                )
            return self._vector_row(record["_vector"], position)
        if self.type is None:
            raise InvalidRecordError(f"record {position}: a 'vectors' collection needs a _vector")
        if not image:
            raise InvalidRecordError(f"record {position}: the record needs an image: _url, _base64 or _file")
        return None

    def _query_matrix(self, vector: Any) -> np.ndarray:
        binary = self.config.precision == "binary"
        if binary:
            return self._vector_row(vector, 0).reshape(1, -1)
        try:
            row = _float32(vector)
        except (TypeError, ValueError) as error:
            raise InvalidVectorError(f"query vector must be numbers ({error})") from error
        if row.ndim != 1 or row.size != self.config.ndim:
            raise DimensionMismatchError(
                f"query vector has {row.size} dimensions, the collection expects {self.config.ndim}"
            )
        if not np.isfinite(row).all():
            raise InvalidVectorError("query vector contains NaN or infinity")
        if self.config.metric == "cos" and not np.any(row):
            raise InvalidVectorError("a zero query vector has no direction (cosine metric)")
        return row.reshape(1, -1)


class Collection(RecordRules, abc.ABC):
    """A named set of records with vectors. Get one from :class:`Engine`; thread-safe.

    Two implementations share this interface: :class:`LocalCollection`, on this machine's disk,
    and ``lookalike.distributed.ShardedCollection``, whose records are spread over the shards of
    a Ray cluster. This base turns queries into vectors and checks writes for both.
    """

    def query_vector(
        self,
        vector: Any = None,
        *,
        id: str | None = None,
        record: Mapping[str, Any] | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        colors: Any = None,
        fetch: Fetch | None = None,
    ) -> np.ndarray:
        """The query vector of a search (see :meth:`search`), as a ``[1, width]`` matrix."""
        parts = {"vector": vector, "id": id, "record": record, "colors": colors, "text": text}
        given = [name for name, value in parts.items() if value is not None]
        if len(given) != 1 and given != ["record", "text"]:
            raise InvalidInputError(
                "search takes one query: vector, id, record (an image or an _id), text, colors, "
                f"or record together with text; got {', '.join(given) or 'none'}"
            )
        kind = "+".join(given)
        if kind == "vector":
            return self._query_matrix(vector)
        if kind == "id":
            return self.get_vector(id or "").reshape(1, -1)
        if kind == "colors":
            if not isinstance(self.type, SupportsColorQuery):
                raise self._unsupported("colors")
            return self._query_matrix(self.type.embed_colors(parse_colors(colors)))
        if kind == "text":
            return self._query_matrix(self._text_vector(text))
        assert record is not None
        if not isinstance(record, Mapping):
            raise InvalidInputError('record must be an object such as {"_base64": ...}, {"_url": ...} or {"_id": ...}')
        image = self._record_query(record, fetch)
        if kind == "record":
            return image
        if isinstance(text_weight, bool) or not isinstance(text_weight, int | float) or not 0 <= text_weight <= 1:
            raise InvalidInputError(f"text_weight must be a number from 0 to 1, got {text_weight!r}")
        text_vector = self._text_vector(text)
        mixed = (1 - text_weight) * _unit(image[0]) + text_weight * _unit(text_vector)
        return self._query_matrix(mixed)

    def _unsupported(self, kind: str) -> UnsupportedError:
        return UnsupportedError(
            f"collection {self.name!r} (type {self.config.type!r}) cannot be searched by {kind}; "
            f"it supports: {', '.join(self.query_kinds)}"
        )

    def _text_vector(self, text: Any) -> np.ndarray:
        if not isinstance(self.type, SupportsTextQuery):
            raise self._unsupported("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text must be a non-empty string")
        if len(text) > 2_000:
            raise InvalidInputError("text must have at most 2000 characters")
        return np.asarray(self.type.embed_text([text]), dtype=np.float32)[0]

    def _record_query(self, record: Mapping[str, Any], fetch: Fetch | None) -> np.ndarray:
        sources = [name for name in ("_id", "_vector", *IMAGE_FIELDS) if name in record]
        if len(sources) != 1:
            raise InvalidInputError(
                "a query record takes exactly one of _id, _vector, _url, _base64, _file; "
                f"got {', '.join(sources) or 'none'}"
            )
        if sources[0] == "_id":
            return self.get_vector(record["_id"]).reshape(1, -1)
        if sources[0] == "_vector":
            return self._query_matrix(record["_vector"])
        if self._embedder is None:
            raise self._unsupported("image")
        return self._query_matrix(self._embedder.embed_query(record, fetch=fetch))

    # -- writes (shared) ------------------------------------------------------------------

    def add(self, records: Iterable[Mapping[str, Any]], *, fetch: Fetch | None = None) -> list[str]:
        """Adds records, replacing any with the same `_id`; returns their ids.

        Each record has a string `_id`, an image (`_base64`, `_url`, `_file`) or a `_vector`,
        and any JSON metadata. The whole batch is checked (and embedded) first: if one record is
        bad, nothing is written and its error is raised. Returns once the batch is durable. Use
        :meth:`insert` to write the good records of a batch and get the bad ones back instead.
        """
        result = self._insert(records, fetch=fetch, atomic=True)
        return result.ids

    def insert(
        self, records: Iterable[Mapping[str, Any]], *, fetch: Fetch | None = None, if_absent: bool = False
    ) -> InsertResult:
        """Adds the good records of a batch and reports the others: one :class:`RecordError`
        (position, `_id`, `code`, message) per record that was skipped; never fails the batch
        for one bad record.

        With `if_absent`, a record whose `_id` is already stored is skipped (code
        ``duplicate_id``) instead of replacing it; the check and the write happen under the
        collection's write lock, so two concurrent inserts of one new `_id` write it once."""
        return self._insert(records, fetch=fetch, atomic=False, if_absent=if_absent)

    def _insert(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        fetch: Fetch | None,
        atomic: bool,
        if_absent: bool = False,
    ) -> InsertResult:
        self._check_open()
        if isinstance(records, Mapping | str | bytes):
            raise InvalidInputError("add takes a list of records")
        batch = list(records)
        prepared, errors = self._prepare(batch, fetch=fetch, atomic=atomic)
        if not prepared:
            return InsertResult([], errors)
        dtype = np.uint8 if self.config.precision == "binary" else np.float32
        matrix = np.stack([row for _, _, row, _ in prepared]).astype(dtype, copy=False)
        ids = [id_ for id_, _, _, _ in prepared]
        skipped = self._write(
            ids,
            matrix,
            [data for _, data, _, _ in prepared],
            [image for _, _, _, image in prepared],
            if_absent=if_absent,
        )
        if skipped:
            positions = {
                str(record.get("_id")): position
                for position, record in reversed(list(enumerate(batch)))
                if isinstance(record, Mapping)
            }
            for id_ in ids:
                if id_ in skipped:
                    message = f"a record with _id {id_!r} exists already"
                    errors.append(RecordError(positions.get(id_, -1), id_, DuplicateIdError.code, message))
            errors.sort(key=lambda error: error.position)
            ids = [id_ for id_ in ids if id_ not in skipped]
        return InsertResult(ids, errors)

    def add_vectors(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Bulk path of :meth:`add`: ids, a `[n, ndim]` float32 matrix (uint8 packed bits for
        binary collections) and optional metadata per row."""
        self._check_open()
        binary = self.config.precision == "binary"
        matrix = np.ascontiguousarray(vectors, dtype=np.uint8) if binary else np.ascontiguousarray(_float32(vectors))
        width = self.config.ndim // 8 if binary else self.config.ndim
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise DimensionMismatchError(f"vectors must have shape [n, {width}], got {list(matrix.shape)}")
        if matrix.shape[0] != len(ids):
            raise InvalidInputError(f"{len(ids)} ids but {matrix.shape[0]} vectors")
        if metadata is not None and len(metadata) != len(ids):
            raise InvalidInputError(f"{len(ids)} ids but {len(metadata)} metadata entries")
        if not binary:
            finite = np.isfinite(matrix).all(axis=1)
            if not finite.all():
                raise InvalidVectorError(f"vector {int(np.argmin(finite))} contains NaN or infinity")
            if self.config.metric == "cos":
                nonzero = matrix.any(axis=1)
                if not nonzero.all():
                    raise InvalidVectorError(f"vector {int(np.argmin(nonzero))} is zero (cosine metric)")
        checked = [self._check_id(id_, position) for position, id_ in enumerate(ids)]
        if len(set(checked)) != len(checked):
            raise DuplicateIdError("an _id appears twice in this batch")
        datas = [self._metadata(m, p) for p, m in enumerate(metadata)] if metadata is not None else [{} for _ in ids]
        if checked:
            self._write(checked, matrix, datas)

    def _checked_updates(
        self, records: Iterable[Mapping[str, Any]]
    ) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
        """An update batch, checked: ``(id, fields, vector or None)`` per record."""
        changes: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
        seen: set[str] = set()
        for position, record in enumerate(list(records)):
            if not isinstance(record, Mapping):
                raise InvalidRecordError(f"record {position}: expected an object, got {type(record).__name__}")
            id_ = self._check_id(record.get("_id"), position)
            if id_ in seen:
                raise DuplicateIdError(f"record {position}: _id {id_!r} appears twice in this batch")
            seen.add(id_)
            vector = self._vector_row(record["_vector"], position) if "_vector" in record else None
            changes.append((id_, self._metadata(record, position), vector))
        return changes

    def _query_batch(self, queries: npt.ArrayLike) -> np.ndarray:
        """A batch of query vectors, checked: ``[n, width]`` float32 (uint8 for binary)."""
        binary = self.config.precision == "binary"
        matrix = np.ascontiguousarray(queries, dtype=np.uint8) if binary else np.ascontiguousarray(_float32(queries))
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        width = self.config.ndim // 8 if binary else self.config.ndim
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise DimensionMismatchError(f"queries must have shape [n, {width}], got {list(matrix.shape)}")
        if not binary and not np.isfinite(matrix).all():
            raise InvalidVectorError("a query contains NaN or infinity")
        return matrix

    def _check_grouping(self, group_by: str, group_size: Any) -> None:
        if group_by != self.config.product_id_field:
            raise UnsupportedError(
                f"group_by must be the collection's product_id_field "
                f"({self.config.product_id_field!r}), got {group_by!r}"
            )
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= 100:
            raise InvalidInputError(f"group_size must be an integer from 1 to 100, got {group_size!r}")

    def _duplicate_threshold(self, threshold: Any, neighbours: Any) -> float:
        """The threshold of :meth:`near_duplicates` (default: the type's), its arguments checked."""
        if threshold is None:
            threshold = getattr(self.type, "duplicate_threshold", None)
            if threshold is None:
                raise InvalidInputError(
                    f"type {self.config.type!r} has no calibrated duplicate threshold; pass threshold="
                )
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not np.isfinite(threshold):
            raise InvalidInputError(f"threshold must be a number, got {threshold!r}")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= 100:
            raise InvalidInputError(f"neighbours must be an integer from 1 to 100, got {neighbours!r}")
        return float(threshold)

    # -- the interface ---------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.config.name!r}, type={self.config.type!r}, count={len(self)})"

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    @abc.abstractmethod
    def memory_usage(self) -> int:
        """Bytes held in memory by the index, the exact vectors and the field indexes."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _check_open(self) -> None: ...

    @abc.abstractmethod
    def _write(
        self,
        ids: list[str],
        matrix: np.ndarray,
        datas: list[dict[str, Any]],
        images: Sequence[bytes | None] | None = None,
        *,
        if_absent: bool = False,
    ) -> set[str]:
        """Writes checked and embedded rows (replacing stored records of the same `_id`); with
        `if_absent`, skips the ids already stored instead and returns them."""

    @abc.abstractmethod
    def update(self, records: Iterable[Mapping[str, Any]]) -> int: ...

    @abc.abstractmethod
    def remove(self, ids: Sequence[str] | None = None, *, filter: Mapping[str, Any] | None = None) -> int: ...

    @abc.abstractmethod
    def compact(self, threads: int | None = None) -> None: ...

    @abc.abstractmethod
    def snapshot(self) -> None: ...

    @abc.abstractmethod
    def get(self, ids: Sequence[str], *, fields: Sequence[str] | None = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def get_vector(self, id: str) -> np.ndarray: ...

    @abc.abstractmethod
    def records(
        self, *, filter: Mapping[str, Any] | None = None, limit: int = 100, cursor: str | None = None
    ) -> RecordPage: ...

    @abc.abstractmethod
    def count(self, filter: Mapping[str, Any] | None = None) -> int: ...

    @abc.abstractmethod
    def search(
        self,
        vector: Any = None,
        *,
        id: str | None = None,
        record: Mapping[str, Any] | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        colors: Any = None,
        limit: int = 10,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
        group_by: str | None = None,
        group_size: int = 1,
        fields: Sequence[str] | None = None,
        ef: int | None = None,
        exact: bool = False,
        fetch: Fetch | None = None,
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def rank(
        self,
        ids: Sequence[str],
        vector: Any = None,
        *,
        record: Mapping[str, Any] | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        colors: Any = None,
        fields: Sequence[str] | None = None,
        fetch: Fetch | None = None,
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def search_vectors(
        self,
        queries: npt.ArrayLike,
        limit: int = 10,
        *,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        threads: int | None = None,
    ) -> SearchBatch: ...

    @abc.abstractmethod
    def _ids_of_keys(self, keys: Sequence[int]) -> dict[int, str]:
        """The `_id` of each key of a :class:`SearchBatch` (keys of removed records are left out)."""

    @abc.abstractmethod
    def near_duplicates(
        self, threshold: float | None = None, *, filter: Mapping[str, Any] | None = None, neighbours: int = 10
    ) -> list[list[str]]: ...

    @abc.abstractmethod
    def get_image(self, id: str) -> bytes: ...

    @abc.abstractmethod
    def close(self, *, snapshot: bool = True) -> None: ...


class LocalCollection(Collection):
    """A collection on this machine: SQLite (the source of truth) and the core's index."""

    def __init__(
        self, engine: Engine, path: Path, config: CollectionConfig, type_: CollectionType | None = None
    ) -> None:
        super().__init__(config, type_, engine.embedder_for(type_))
        self._engine = engine
        self._path = path
        self._store = CollectionStore(path / DATABASE_FILE, max_bytes=engine.max_collection_bytes)
        self._closed = False
        self._snapshot_failed_at: float | None = None
        self._fields = tuple(config.fields_to_index)
        self._indexed = frozenset(self._fields)
        self._core_fields = [name for path_ in self._fields for name in (path_, path_ + PRESENCE_SUFFIX)]
        self._changes_since_snapshot = 0
        self._rebuild_thread: threading.Thread | None = None
        self._compiled_filters: dict[str, tuple[Any, ...]] = {}
        self._index = self._open_index()

    # -- opening ---------------------------------------------------------------------------

    def _index_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "metric": c.metric,
            "precision": c.precision,
            "connectivity": c.connectivity,
            "expansion_add": c.expansion_add,
            "expansion_search": c.expansion_search,
            "fields": self._core_fields,
            "exact_threshold": c.exact_threshold,
        }

    def _snapshots(self) -> list[Path]:
        directory = self._path / SNAPSHOT_DIR
        if not directory.is_dir():
            return []
        found = [p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
        return sorted(found, key=lambda p: int(p.name), reverse=True)

    def _open_index(self) -> _core.Index:
        """Loads the newest readable snapshot and replays the log after it; with no usable
        snapshot, rebuilds from every record in the database."""
        for snapshot in self._snapshots():
            try:
                index, sequence = _core.Index.load(str(snapshot), self.config.ndim, **self._index_kwargs())
            except (CorruptSnapshotError, StorageError, InternalError) as error:
                logger.warning(
                    "snapshot %s of %s is unusable (%s); trying an older one", snapshot, self.config.name, error
                )
                continue
            changes = self._store.changes_since(sequence)
            self._replay(index, changes)
            self._changes_since_snapshot = len(changes)
            return index
        index = _core.Index(self.config.ndim, **self._index_kwargs())
        total = 0
        for batch in self._store.iter_records(with_vectors=True):
            self._apply_records(index, batch, before={})
            total += len(batch)
        self._changes_since_snapshot = total
        return index

    def _vectors_of(self, records: Sequence[StoredRecord]) -> np.ndarray:
        """``[len(records) * views, width]``: each record's views, one after the other."""
        dtype = np.uint8 if self.config.precision == "binary" else np.float32
        width = self.config.ndim // 8 if self.config.precision == "binary" else self.config.ndim
        matrix = np.empty((len(records), width * self._views), dtype=dtype)
        for row, record in enumerate(records):
            matrix[row] = np.frombuffer(record.vector, dtype=dtype)
        return matrix.reshape(len(records) * self._views, width)

    def _index_keys(self, keys: Sequence[int] | np.ndarray) -> np.ndarray:
        """The index keys of records: a record with several views owns ``key * views + view``."""
        base = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if self._views == 1:
            return base
        views = np.uint64(self._views)
        return (base[:, None] * views + np.arange(self._views, dtype=np.uint64)).reshape(-1)

    def _record_keys(self, index_keys: np.ndarray) -> np.ndarray:
        """Record keys of index keys (order kept, duplicates dropped when records have views)."""
        keys = np.asarray(index_keys, dtype=np.uint64)
        if self._views == 1:
            return keys
        collapsed: np.ndarray = keys // np.uint64(self._views)
        _, first = np.unique(collapsed, return_index=True)
        return np.asarray(collapsed[np.sort(first)], dtype=np.uint64)

    def _apply_records(
        self,
        index: _core.Index,
        records: Sequence[StoredRecord],
        before: Mapping[int, Mapping[str, list[Any]]],
        same_vector: frozenset[int] = frozenset(),
    ) -> None:
        """Puts records (already committed) into the index; `before` holds the field values to
        take out first for keys that were indexed with other values. Keys in `same_vector` keep
        their vector and group (a metadata update): only their field values change, so the
        graph is not churned by removing and adding the same node again."""
        unindex = [entry for key, image in before.items() for entry in _entries(key, image, self._views)]
        if unindex:
            index.unindex_fields(unindex)
        if not records:
            return
        placed = [r for r in records if r.key not in same_vector]
        if placed:
            keys = self._index_keys([r.key for r in placed])
            groups = np.fromiter(
                (int(_core.NO_GROUP) if r.group_id is None else r.group_id for r in placed),
                dtype=np.uint64,
                count=len(placed),
            )
            index.add(keys, self._vectors_of(placed), np.repeat(groups, self._views))
        entries = [
            entry
            for r in records
            for entry in _entries(r.key, _field_image(r.data | {"_id": r.id}, self._fields), self._views)
        ]
        if entries:
            index.index_fields(entries)

    def _replay(self, index: _core.Index, changes: Sequence[Any]) -> None:
        if not changes:
            return
        keys = [change.key for change in changes]
        current = self._store.records_by_key(keys, with_vectors=True)
        before = {change.key: change.before for change in changes if change.before is not None}
        gone = [key for key in keys if key not in current and key * self._views in index]
        unindex = [entry for key, image in before.items() for entry in _entries(key, image, self._views)]
        if unindex:
            index.unindex_fields(unindex)
        if gone:
            index.remove(self._index_keys(gone))
        self._apply_records(index, list(current.values()), before={})

    # -- basics ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index) // self._views

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"collection {self.config.name!r} is closed")

    def memory_usage(self) -> int:
        """Bytes held in memory by the index, the exact vectors and the field indexes."""
        return int(self._index.memory_usage())

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._index.stats())
        stats.update(
            name=self.config.name,
            type=self.config.type,
            ndim=self.config.ndim,
            metric=self.config.metric,
            precision=self.config.precision,
            changes_since_snapshot=self._changes_since_snapshot,
            compacting=self._rebuild_thread is not None and self._rebuild_thread.is_alive(),
            simd=_core.simd_capabilities(),
            records=len(self),
            views=self._views,
            query_kinds=self.query_kinds,
        )
        if self.type is not None:
            stats.update(type_version=self.config.type_version, type_config=dict(self.config.type_config))
        return stats

    # -- writes ----------------------------------------------------------------------------

    def write_prepared(
        self,
        ids: Sequence[str],
        matrix: np.ndarray,
        datas: Sequence[dict[str, Any]],
        images: Sequence[bytes | None] | None = None,
        *,
        if_absent: bool = False,
    ) -> set[str]:
        """Writes records that were checked and embedded elsewhere (by a sharded collection's
        router, or a distributed ingestion task, with the same :class:`CollectionConfig`): ids,
        the ``[n, views * width]`` vector rows, metadata (derived fields included) and original
        images. Returns the ids that `if_absent` skipped. Durable when it returns."""
        self._check_open()
        dtype = np.uint8 if self.config.precision == "binary" else np.float32
        rows = np.ascontiguousarray(matrix, dtype=dtype)
        width = (self.config.ndim // 8 if dtype == np.uint8 else self.config.ndim) * self._views
        if rows.ndim != 2 or rows.shape[1] != width or rows.shape[0] != len(ids) or len(datas) != len(ids):
            raise InvalidInputError(f"prepared rows must be [{len(ids)}, {width}], got {list(rows.shape)}")
        if not ids:
            return set()
        return self._write(list(ids), rows, list(datas), images, if_absent=if_absent)

    def export(
        self, after: int = -1, limit: int = 1024
    ) -> tuple[int, list[str], np.ndarray, list[dict[str, Any]], list[bytes | None]]:
        """A page of whole records in key order, as :meth:`write_prepared` takes them: the last
        key (pass it back as `after`; -1 starts), ids, vector rows, metadata, stored images."""
        self._check_open()
        page = self._store.page(after, limit)
        if not page:
            return after, [], np.zeros((0, 0), dtype=np.float32), [], []
        full = self._store.records_by_key([record.key for record in page], with_vectors=True)
        records = [full[record.key] for record in page if record.key in full]
        images_ = [self._store.image(r.key) if self.config.store_images else None for r in records]
        rows = self._vectors_of(records).reshape(len(records), -1) if records else np.zeros((0, 0), dtype=np.float32)
        return page[-1].key, [r.id for r in records], rows, [r.data for r in records], images_

    def _write(
        self,
        ids: list[str],
        matrix: np.ndarray,
        datas: list[dict[str, Any]],
        images: Sequence[bytes | None] | None = None,
        *,
        if_absent: bool = False,
    ) -> set[str]:
        """Writes the rows (replacing stored records of the same `_id`); with `if_absent`, skips
        the ids already stored instead and returns them."""
        with self._store.write_lock:
            self._check_open()
            existing = self._store.records_by_id(ids)
            skipped: set[str] = set()
            if if_absent and existing:
                skipped = set(existing)
                keep = [position for position, id_ in enumerate(ids) if id_ not in skipped]
                if not keep:
                    return skipped
                ids = [ids[position] for position in keep]
                matrix = matrix[keep]
                datas = [datas[position] for position in keep]
                images = None if images is None else [images[position] for position in keep]
                existing = {}
            with self._store.transaction() as cursor:
                fresh = [id_ for id_ in ids if id_ not in existing]
                allocated = iter(self._store.allocate_keys(cursor, len(fresh)))
                keys = [existing[id_].key if id_ in existing else next(allocated) for id_ in ids]
                group_values = [self._group_value(data) for data in datas]
                interned = self._store.group_ids(cursor, [g for g in group_values if g is not None])
                stored: list[StoredRecord] = []
                before: dict[int, dict[str, list[Any]]] = {}
                for position, (id_, key, row, data, group) in enumerate(
                    zip(ids, keys, matrix, datas, group_values, strict=True)
                ):
                    old = existing.get(id_)
                    image = _field_image(old.data | {"_id": id_}, self._fields) if old is not None else None
                    if image:
                        before[key] = image
                    self._store.log_change(cursor, key, image)
                    group_id = None if group is None else interned[group]
                    self._store.put(cursor, key, id_, data, row, group_id)
                    original = images[position] if images is not None else None
                    if original is not None:
                        self._store.put_image(cursor, key, original)
                    stored.append(StoredRecord(key, id_, data, row.tobytes(), group_id))
            self._after_commit(lambda: self._apply_records(self._index, stored, before), len(ids))
        return skipped

    def _after_commit(self, apply: Any, changes: int) -> None:
        """Applies a committed write to the index. Should that fail (it has been validated, so
        only a bug or lack of memory can), the index is rebuilt from the database, which has
        the write: acknowledged data is never lost."""
        try:
            apply()
        except Exception as error:
            logger.exception("applying a committed write to the index failed; reloading the index")
            self._index = self._open_index()
            raise InternalError(f"index update failed and was recovered from storage: {error}") from error
        self._changes_since_snapshot += changes
        self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        """Takes a snapshot once enough changed since the last one. It runs inside a write that
        has committed already, so a failure (a full disk) is logged, not raised: the change log
        keeps every write, and the next try waits a while instead of failing every write."""
        every = self._engine.snapshot_every or max(10_000, len(self._index) // 4)
        if self._changes_since_snapshot < every:
            return
        failed_at = self._snapshot_failed_at
        if failed_at is not None and time.monotonic() - failed_at < SNAPSHOT_RETRY_SECONDS:
            return
        try:
            self.snapshot()
        except StorageError as error:
            self._snapshot_failed_at = time.monotonic()
            logger.warning("snapshot of %s failed, the change log keeps every write: %s", self.config.name, error)

    def update(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Sets the given fields of existing records (other fields stay); a `_vector` replaces
        the vector. A field set to None stays, as null. Returns how many records were updated.

        Raises:
            RecordNotFoundError: if an `_id` does not exist (nothing is written then).
        """
        self._check_open()
        changes = self._checked_updates(records)
        if not changes:
            return 0
        with self._store.write_lock:
            self._check_open()
            existing = self._store.records_by_id([c[0] for c in changes], with_vectors=True)
            missing = [c[0] for c in changes if c[0] not in existing]
            if missing:
                raise RecordNotFoundError(f"no record with _id {missing[0]!r} (nothing was updated)")
            stored: list[StoredRecord] = []
            before: dict[int, dict[str, list[Any]]] = {}
            same_vector: set[int] = set()
            with self._store.transaction() as cursor:
                new_data = [existing[id_].data | fields for id_, fields, _ in changes]
                group_values = [self._group_value(data) for data in new_data]
                interned = self._store.group_ids(cursor, [g for g in group_values if g is not None])
                for (id_, _fields, vector), data, group in zip(changes, new_data, group_values, strict=True):
                    old = existing[id_]
                    image = _field_image(old.data | {"_id": id_}, self._fields)
                    if image:
                        before[old.key] = image
                    self._store.log_change(cursor, old.key, image or None)
                    group_id = None if group is None else interned[group]
                    if vector is None and group_id == old.group_id and old.key * self._views in self._index:
                        same_vector.add(old.key)
                    dtype = np.uint8 if self.config.precision == "binary" else np.float32
                    row = vector if vector is not None else np.frombuffer(old.vector, dtype=dtype)
                    self._store.put(cursor, old.key, id_, data, row.astype(dtype, copy=False), group_id)
                    stored.append(StoredRecord(old.key, id_, data, row.astype(dtype, copy=False).tobytes(), group_id))
            unchanged = frozenset(same_vector)
            self._after_commit(lambda: self._apply_records(self._index, stored, before, unchanged), len(stored))
        return len(stored)

    def remove(self, ids: Sequence[str] | None = None, *, filter: Mapping[str, Any] | None = None) -> int:
        """Removes records by `_id` (unknown ids are ignored) or by filter; returns how many."""
        self._check_open()
        if (ids is None) == (filter is None):
            raise InvalidInputError("remove takes either ids or filter")
        with self._store.write_lock:
            self._check_open()
            if filter is not None:
                keys = self._filter_keys(filter)
                targets = list(self._store.records_by_key([int(k) for k in keys]).values())
            else:
                assert ids is not None
                if isinstance(ids, str):
                    raise InvalidInputError("remove takes a list of ids, not a single string")
                checked = [self._check_id(id_, position) for position, id_ in enumerate(ids)]
                targets = list(self._store.records_by_id(checked).values())
            if not targets:
                return 0
            before = {record.key: _field_image(record.data | {"_id": record.id}, self._fields) for record in targets}
            # The index forgets the records first, so no search can return a record whose row is
            # already gone; should the commit fail, the index is reloaded from the database.
            unindex = [entry for key, image in before.items() for entry in _entries(key, image, self._views)]
            try:
                if unindex:
                    self._index.unindex_fields(unindex)
                self._index.remove(self._index_keys([r.key for r in targets]))
                with self._store.freeing() as cursor:
                    for record in targets:  # deleting first frees the pages the log rows need
                        self._store.delete(cursor, record.key)
                        self._store.log_change(cursor, record.key, before[record.key] or None)
            except BaseException:
                self._index = self._open_index()
                raise
            self._changes_since_snapshot += len(targets)
            self._maybe_snapshot()
        if self._index.needs_rebuild():
            self._start_rebuild()
        return len(targets)

    # -- compaction and snapshots ----------------------------------------------------------

    def _start_rebuild(self) -> None:
        if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
            return
        self._rebuild_thread = threading.Thread(
            target=self._rebuild_quietly, name=f"lookalike-compact-{self.config.name}", daemon=True
        )
        self._rebuild_thread.start()

    def _rebuild_quietly(self) -> None:
        try:
            # One core stays free for the searches and writes that go on meanwhile.
            self.compact(threads=max(1, (os.cpu_count() or 2) - 1))
        except Exception:  # a background thread must not die loudly; the next remove retries
            logger.exception("background compaction of %s failed", self.config.name)

    def compact(self, threads: int | None = None) -> None:
        """Rebuilds the graph without removed records, giving their memory back, then takes a
        snapshot. Searches keep running meanwhile; writers wait. `threads`: build threads
        (default: every core; the automatic compaction after removes leaves one core free)."""
        self._check_open()
        self._index.rebuild(threads)
        self.snapshot()
        _trim_heap()

    def snapshot(self) -> None:
        """Saves the index as a snapshot tagged with the last committed sequence number, so the
        next open replays only what came after; older snapshots and log rows are then dropped."""
        with self._store.write_lock:
            if self._closed:
                return
            sequence = self._store.last_sequence()
            directory = self._path / SNAPSHOT_DIR
            directory.mkdir(parents=True, exist_ok=True)
            temporary = directory / f"tmp-{sequence}-{os.getpid()}-{threading.get_ident()}"
            if temporary.exists():
                shutil.rmtree(temporary)
            final = directory / f"{sequence:020d}"
            try:
                self._index.save(str(temporary), sequence)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(temporary, final)
                _fsync_directory(directory)
            except OSError as error:  # StorageError from the core is an OSError too
                shutil.rmtree(temporary, ignore_errors=True)  # a partial snapshot is never loaded
                raise storage_error(error, f"cannot save a snapshot of {self.config.name!r}") from error
            self._snapshot_failed_at = None
            for old in self._snapshots():
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
            for leftover in directory.glob("tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            self._store.prune_changes(sequence)
            self._changes_since_snapshot = 0

    # -- reads -----------------------------------------------------------------------------

    def _record_dict(self, record: StoredRecord, fields: Sequence[str] | None) -> dict[str, Any]:
        if fields is None:
            return {"_id": record.id, **record.data}
        out: dict[str, Any] = {"_id": record.id}
        for name in fields:
            if name in record.data:
                out[name] = record.data[name]
        return out

    def get(self, ids: Sequence[str], *, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The records with these ids, in the order asked; unknown ids are left out."""
        self._check_open()
        if isinstance(ids, str):
            raise InvalidInputError("get takes a list of ids, not a single string")
        found = self._store.records_by_id([self._check_id(i, p) for p, i in enumerate(ids)])
        return [self._record_dict(found[id_], fields) for id_ in ids if id_ in found]

    def get_vector(self, id: str) -> np.ndarray:
        """The stored vector of one record, as the index holds it (unit length for cosine)."""
        key = self._key_of(id) * self._views
        vectors, found = self._index.get_vectors(np.asarray([key], dtype=np.uint64))
        if not found[0]:
            raise RecordNotFoundError(f"no record with _id {id!r}")
        return np.asarray(vectors[0])

    def _key_of(self, id_: str) -> int:
        keys = self._store.keys_of([self._check_id(id_, 0)])
        if id_ not in keys:
            raise RecordNotFoundError(f"no record with _id {id_!r}")
        return keys[id_]

    def records(
        self, *, filter: Mapping[str, Any] | None = None, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        """A page of records in insertion-key order (stable under concurrent writes)."""
        self._check_open()
        limit = _check_limit(limit)
        after = -1
        if cursor is not None:
            try:
                after = int(cursor)
            except ValueError as error:
                raise InvalidInputError(f"invalid cursor {cursor!r}") from error
        parsed = filters_module.parse(filter)
        out: list[dict[str, Any]] = []
        last = after
        while len(out) < limit:
            page = self._store.page(last, max(limit, 256))
            if not page:
                return RecordPage(out, None)
            for record in page:
                last = record.key
                if parsed is None or parsed.matches(record.data | {"_id": record.id}):
                    out.append(self._record_dict(record, None))
                    if len(out) == limit:
                        break
        more = bool(self._store.page(last, 1))
        return RecordPage(out, str(last) if more else None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._store.iter_records(with_vectors=False):
            for record in batch:
                yield self._record_dict(record, None)

    # -- filters ---------------------------------------------------------------------------

    def _fallback_keys(self, sub: Filter) -> np.ndarray:
        """Keys passing a sub-filter the field indexes cannot answer: a scan of the metadata."""
        keys: list[int] = []
        for batch in self._store.iter_records(with_vectors=False):
            for record in batch:
                if sub.matches(record.data | {"_id": record.id}):
                    keys.append(record.key)
        return self._index_keys(keys)

    def _compile(self, filter: Mapping[str, Any] | Filter | None) -> tuple[Any, ...] | None:
        return self._compile_keyed(filter)[0]

    def _compile_keyed(self, filter: Mapping[str, Any] | Filter | None) -> tuple[tuple[Any, ...] | None, str | None]:
        """The core form of a filter and, when it depends on the field indexes only, a stable
        key under which the core caches its result until the next write. Compiled forms of such
        filters are cached here too: an application usually repeats a handful of filters."""
        if filter is None or isinstance(filter, Filter):
            parsed = filters_module.parse(filter)
            return (None if parsed is None else self._compile_parsed(parsed)), None
        try:
            key = dumps(filter)
        except (TypeError, ValueError):
            key = None  # not JSON: parse() explains what is wrong with it
        if key is not None:
            cached = self._compiled_filters.get(key)
            if cached is not None:
                return cached, key
        parsed = filters_module.parse(filter)
        if parsed is None:
            return None, None
        fallbacks = [0]

        def fallback(sub: Filter) -> np.ndarray:
            fallbacks[0] += 1
            return self._fallback_keys(sub)

        compiled = filters_module.compile_filter(parsed, self._indexed, fallback)
        if fallbacks[0] or key is None:
            return compiled, None
        if len(self._compiled_filters) >= 256:
            self._compiled_filters.pop(next(iter(self._compiled_filters)))
        self._compiled_filters[key] = compiled
        return compiled, key

    def _compile_parsed(self, parsed: Filter) -> tuple[Any, ...]:
        return filters_module.compile_filter(parsed, self._indexed, self._fallback_keys)

    def _filter_keys(self, filter: Mapping[str, Any]) -> np.ndarray:
        compiled = self._compile(filter)
        if compiled is None:
            return self._record_keys(np.asarray(self._index.keys(), dtype=np.uint64))
        return self._record_keys(np.asarray(self._index.evaluate(compiled), dtype=np.uint64))

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Number of records, or of records passing a filter."""
        self._check_open()
        return len(self) if filter is None else int(self._filter_keys(filter).size)

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        vector: Any = None,
        *,
        id: str | None = None,
        record: Mapping[str, Any] | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        colors: Any = None,
        limit: int = 10,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
        group_by: str | None = None,
        group_size: int = 1,
        fields: Sequence[str] | None = None,
        ef: int | None = None,
        exact: bool = False,
        fetch: Fetch | None = None,
    ) -> list[dict[str, Any]]:
        """The nearest records to a query.

        The query is one of: a `vector`; the `id` of a stored record; a `record` holding an image
        (`_base64`, `_url`, `_file`), an `_id` or a `_vector`; `text` (types that support it);
        `record` and `text` together, mixed by `text_weight` (0: image only, 1: text only); or
        `colors` (``[{"color": "#ff0000", "weight": 0.7}, ...]``, types that support it). A type
        that cannot answer a query kind raises :class:`UnsupportedError` naming those it can.

        Returns hits ranked [offset, offset + limit) as dicts with `_id`, `distance` (smaller is
        closer) and the record's metadata (or just `fields`). With `group_by` (the collection's
        `product_id_field`), `limit` and `offset` count groups: the best `group_size` hits of
        each group follow one another, and each hit carries `_group`. Types with a duplicate
        threshold add `is_duplicate` to each hit.
        """
        self._check_open()
        limit = _check_limit(limit)
        offset = _check_offset(offset)
        query = self.query_vector(
            vector, id=id, record=record, text=text, text_weight=text_weight, colors=colors, fetch=fetch
        )
        compiled, filter_key = self._compile_keyed(filter)
        if group_by is not None:
            return self._search_grouped(
                query, limit, offset, compiled, filter_key, group_by, group_size, fields, ef, exact
            )
        views = self._views
        for _attempt in range(3):
            if views == 1:
                keys, distances, counts, _plans = self._index.search(
                    query, limit, offset=offset, filter=compiled, ef=ef, exact=exact, filter_key=filter_key
                )
                count = int(counts[0])
                hit_keys = [int(k) for k in keys[0][:count]]
                hit_distances = [float(d) for d in distances[0][:count]]
            else:
                # Each record owns `views` index keys: the best (offset + limit) records are
                # among the best (offset + limit) * views index hits.
                keys, distances, counts, _plans = self._index.search(
                    query,
                    (offset + limit) * views,
                    filter=compiled,
                    ef=self._view_ef(ef),
                    exact=exact,
                    filter_key=filter_key,
                )
                count = int(counts[0])
                hit_keys, hit_distances = _first_per_record(keys[0][:count], distances[0][:count], views)
                hit_keys, hit_distances = hit_keys[offset : offset + limit], hit_distances[offset : offset + limit]
            records = self._store.records_by_key(hit_keys)
            if len(records) == len(hit_keys):
                break
            # A concurrent remove committed between the search and the read: search again.
        out: list[dict[str, Any]] = []
        for key, distance in zip(hit_keys, hit_distances, strict=True):
            found = records.get(key)
            if found is None:
                continue
            out.append(self._hit(found, distance, fields))
        return out

    def rank(
        self,
        ids: Sequence[str],
        vector: Any = None,
        *,
        record: Mapping[str, Any] | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        colors: Any = None,
        fields: Sequence[str] | None = None,
        fetch: Fetch | None = None,
    ) -> list[dict[str, Any]]:
        """The records with these `ids`, nearest to the query first, with exact distances (as
        :meth:`search` computes them; each record's closest view). Unknown ids are left out.
        Costs a lookup per id, whatever the size of the collection."""
        self._check_open()
        if isinstance(ids, str):
            raise InvalidInputError("rank takes a list of ids, not a single string")
        query = self.query_vector(vector, record=record, text=text, text_weight=text_weight, colors=colors, fetch=fetch)
        wanted = list(dict.fromkeys(self._check_id(i, p) for p, i in enumerate(ids)))
        if self.config.precision == "binary":
            hits = self.search(query[0], filter={"_id": {"$in": wanted}}, limit=max(1, len(wanted)), exact=True)
            return hits if wanted else []
        found = self._store.records_by_id(wanted)
        records = [found[id_] for id_ in wanted if id_ in found]
        if not records:
            return []
        views = self._views
        keys = np.asarray([r.key * views + v for r in records for v in range(views)], dtype=np.uint64)
        rows, present = self._index.get_vectors(keys)
        distances = _core.distances(self.config.metric, np.ascontiguousarray(query[0]), np.ascontiguousarray(rows))
        distances = np.where(present, distances, np.inf).reshape(len(records), views).min(axis=1)
        order = np.argsort(distances, kind="stable")
        return [self._hit(records[i], float(distances[i]), fields) for i in order if np.isfinite(distances[i])]

    def _view_ef(self, ef: int | None) -> int | None:
        """The search beam for a collection with several views per record: the views of one
        record crowd the beam, so it widens by their number (same distinct records per beam)."""
        if self._views == 1:
            return ef
        return (ef or self.config.expansion_search) * self._views

    def _hit(self, record: StoredRecord, distance: float, fields: Sequence[str] | None) -> dict[str, Any]:
        hit = self._record_dict(record, fields)
        hit["distance"] = float(distance)
        threshold = getattr(self.type, "duplicate_threshold", None)
        if threshold is not None:
            hit["is_duplicate"] = bool(distance <= threshold)
        return hit

    def _search_grouped(
        self,
        query: np.ndarray,
        limit: int,
        offset: int,
        compiled: tuple[Any, ...] | None,
        filter_key: str | None,
        group_by: str,
        group_size: int,
        fields: Sequence[str] | None,
        ef: int | None,
        exact: bool,
    ) -> list[dict[str, Any]]:
        self._check_grouping(group_by, group_size)
        groups, _plan = self._index.search_grouped(
            query,
            limit,
            group_size * self._views,
            offset=offset,
            filter=compiled,
            ef=self._view_ef(ef),
            exact=exact,
            filter_key=filter_key,
        )
        per_group = [
            (group_id, *(_first_per_record(keys, distances, self._views) if self._views > 1 else (keys, distances)))
            for group_id, keys, distances in groups
        ]
        all_keys = [int(k) for _, keys, _ in per_group for k in keys[:group_size]]
        records = self._store.records_by_key(all_keys)
        values = self._store.group_values(g for g, _, _ in groups if g != int(_core.NO_GROUP))
        out: list[dict[str, Any]] = []
        for group_id, keys, distances in per_group:
            for key, distance in zip(keys[:group_size], distances[:group_size], strict=True):
                record = records.get(int(key))
                if record is None:
                    continue
                hit = self._hit(record, float(distance), fields)
                hit["_group"] = values.get(int(group_id)) if group_id != int(_core.NO_GROUP) else record.id
                out.append(hit)
        return out

    def search_vectors(
        self,
        queries: npt.ArrayLike,
        limit: int = 10,
        *,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        threads: int | None = None,
    ) -> SearchBatch:
        """Batch search: a `[n, ndim]` query matrix in, numpy arrays of keys and distances out."""
        self._check_open()
        limit = _check_limit(limit)
        offset = _check_offset(offset)
        matrix = self._query_batch(queries)
        compiled, filter_key = self._compile_keyed(filter)
        if self._views == 1:
            keys, distances, counts, plans = self._index.search(
                matrix,
                limit,
                offset=offset,
                filter=compiled,
                ef=ef,
                exact=exact,
                threads=threads,
                filter_key=filter_key,
            )
            return SearchBatch(keys, distances, counts, list(plans), self)
        wide = (offset + limit) * self._views
        keys, distances, counts, plans = self._index.search(
            matrix, wide, filter=compiled, ef=self._view_ef(ef), exact=exact, threads=threads, filter_key=filter_key
        )
        out_keys = np.full((matrix.shape[0], limit), NO_KEY, dtype=np.uint64)
        out_distances = np.full((matrix.shape[0], limit), np.inf, dtype=np.float32)
        out_counts = np.zeros(matrix.shape[0], dtype=np.uint32)
        for row in range(matrix.shape[0]):
            count = int(counts[row])
            row_keys, row_distances = _first_per_record(keys[row][:count], distances[row][:count], self._views)
            row_keys, row_distances = row_keys[offset : offset + limit], row_distances[offset : offset + limit]
            out_keys[row, : len(row_keys)] = row_keys
            out_distances[row, : len(row_keys)] = row_distances
            out_counts[row] = len(row_keys)
        return SearchBatch(out_keys, out_distances, out_counts, list(plans), self)

    def _ids_of_keys(self, keys: Sequence[int]) -> dict[int, str]:
        return {key: record.id for key, record in self._store.records_by_key(list(keys)).items()}

    def near_duplicates(
        self, threshold: float | None = None, *, filter: Mapping[str, Any] | None = None, neighbours: int = 10
    ) -> list[list[str]]:
        """Groups of records that are near-duplicates of each other: each record is linked to
        its `neighbours` nearest within `threshold` (default: the type's calibrated duplicate
        threshold), and linked records form a group. Groups of two or more, largest first."""
        self._check_open()
        threshold = self._duplicate_threshold(threshold, neighbours)
        parent: dict[int, int] = {}

        def root(key: int) -> int:
            while parent.get(key, key) != key:
                parent[key] = parent.get(parent[key], parent[key])
                key = parent[key]
            return key

        members = {int(k) for k in self._filter_keys(filter)} if filter is not None else None
        width = self.config.ndim // 8 if self.config.precision == "binary" else self.config.ndim
        for batch in self._store.iter_records(with_vectors=True, batch=2_048):
            if members is not None:
                batch = [record for record in batch if record.key in members]
            if not batch:
                continue
            queries = self._vectors_of(batch).reshape(len(batch), self._views, width)[:, 0, :]
            found = self.search_vectors(queries, neighbours + 1, filter=filter)
            for record, row, distances, count in zip(batch, found.keys, found.distances, found.counts, strict=True):
                for key, distance in zip(row[: int(count)], distances[: int(count)], strict=True):
                    if int(key) != record.key and float(distance) <= threshold:
                        a, b = root(record.key), root(int(key))
                        if a != b:
                            parent[max(a, b)] = min(a, b)
        groups: dict[int, list[int]] = {}
        for key in list(parent):
            groups.setdefault(root(key), []).append(key)
        for key in list(groups):
            groups[key] = sorted(set(groups[key]) | {key})
        records = self._store.records_by_key([k for keys in groups.values() for k in keys])
        out = [sorted(records[k].id for k in keys if k in records) for keys in groups.values()]
        out = [ids for ids in out if len(ids) > 1]
        out.sort(key=lambda ids: (-len(ids), ids[0]))
        return out

    def get_image(self, id: str) -> bytes:
        """The original image bytes of a record (collections created with ``store_images``)."""
        self._check_open()
        if not self.config.store_images:
            raise UnsupportedError(f"collection {self.name!r} does not store images (store_images is off)")
        data = self._store.image(self._key_of(id))
        if data is None:
            raise RecordNotFoundError(f"record {id!r} has no stored image")
        return data

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshots the index (so the next open is fast) and closes the database."""
        if self._closed:
            return
        thread = self._rebuild_thread
        if thread is not None and thread.is_alive():
            thread.join()
        if snapshot and self._changes_since_snapshot:
            try:
                self.snapshot()
            except StorageError as error:  # the database has every write: the next open replays them
                logger.warning("snapshot of %s at close failed: %s", self.config.name, error)
        with self._store.write_lock:
            self._closed = True
            self._store.close()


def _trim_heap() -> None:
    """Gives the heap memory freed by a compaction (the old graph) back to the system: glibc
    keeps freed memory otherwise. Elsewhere than glibc this does nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise InvalidVectorError("a query part has no direction (zero vector)")
    return np.asarray(vector, dtype=np.float32) / norm


def _first_per_record(keys: Any, distances: Any, views: int) -> tuple[list[int], list[float]]:
    """Hits of index keys (sorted by distance) to hits of records: each record's closest view."""
    seen: set[int] = set()
    out_keys: list[int] = []
    out_distances: list[float] = []
    for key, distance in zip(keys, distances, strict=True):
        record = int(key) // views
        if record in seen:
            continue
        seen.add(record)
        out_keys.append(record)
        out_distances.append(float(distance))
    return out_keys, out_distances


def _float32(values: Any) -> npt.NDArray[Any]:
    """`values` as a float32 array. Numbers beyond float32's range become infinities (refused by
    the callers' finiteness checks) without numpy's overflow warning."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float32)


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _check_offset(offset: Any) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 100_000:
        raise InvalidInputError(f"offset must be an integer from 0 to 100000, got {offset!r}")
    return offset


def _lock_folder(path: Path) -> Any:
    """Takes an exclusive lock on the data folder for this engine's lifetime.

    Two engines on one folder would each keep an index that misses the other's writes, and a
    snapshot by one could then hide the other's records from search; so the second is refused.
    The operating system drops the lock when the process dies, so a crash never leaves it stale.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks to take
        return None
    handle = open(path / ".lock", "a+b")  # noqa: SIM115 - held open for the engine's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        raise StorageError(
            f"data folder {path} is in use by another engine (in this or another process); close that one first"
        ) from error
    return handle


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ShardBackend(Protocol):
    """Where sharded collections live (``lookalike.distributed.RayCluster``): the engine keeps
    their configuration and manifest in its folder and hands them to the backend."""

    def open_collection(
        self, engine: Engine, folder: Path, config: CollectionConfig, type_: CollectionType | None
    ) -> Collection:
        """The collection described by ``folder / SHARDS_FILE``, its shards started (and
        created on first open)."""
        ...

    def drop_collection(self, collection: Collection) -> None:
        """Deletes the shards' data everywhere (the engine then deletes `folder`)."""
        ...


class Engine:
    """A data folder holding collections. Opens or creates the folder.

    Example:
        >>> engine = Engine("./data")
        >>> photos = engine.create_collection("photos", ndim=512, fields_to_index=["category"])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: Registry | None = None,
        fetch: Fetch | None = None,
        allow_files: bool = True,
        max_image_pixels: int = images.MAX_PIXELS,
        threads: int | None = None,
        batch_size: int = 32,
        micro_batch: bool = False,
        max_collection_bytes: int | None = None,
        snapshot_every: int | None = None,
        cluster: ShardBackend | None = None,
    ) -> None:
        """Opens (or creates) a data folder.

        Args:
            registry: the collection types to use (default: the installed plugins, honouring
                the ``LOOKALIKE_COLLECTION_TYPES`` allow-list).
            fetch: a function from URL to bytes that reads `_url` images (the server passes its
                safe fetcher); without one, records with `_url` need `fetch=` per call.
            allow_files: whether records may name local files (`_file`); the server turns it off.
            max_image_pixels: images with more pixels are refused (decompression bombs).
            threads: inference threads per model (default: ``LOOKALIKE_MODEL_THREADS`` or the cores).
            batch_size: images per model call.
            micro_batch: share model calls among concurrent callers (servers: many small
                requests at once); each collection type then runs one batch at a time.
            max_collection_bytes: caps each collection's database (records, vectors, stored
                images); a write past it raises :class:`StorageFullError` and reads go on.
            snapshot_every: changes between automatic snapshots of a collection's index
                (default: a quarter of its size, at least 10,000). Fewer means a faster open
                after a crash (less log to replay) for more snapshot writing.
            cluster: where sharded collections live (``lookalike.distributed.RayCluster``);
                without one, ``create_collection(shards=...)`` raises :class:`UnsupportedError`
                and opening a sharded collection :class:`UnavailableError`.
        """
        self.cluster = cluster
        self.path = Path(path)
        self.registry = registry if registry is not None else default_registry()
        self.fetch = fetch
        self.allow_files = allow_files
        self.max_image_pixels = max_image_pixels
        if max_collection_bytes is not None and max_collection_bytes < 1:
            raise InvalidInputError("max_collection_bytes must be a positive number of bytes, or None")
        self.max_collection_bytes = max_collection_bytes
        if snapshot_every is not None and snapshot_every < 1:
            raise InvalidInputError("snapshot_every must be a positive number of changes, or None")
        self.snapshot_every = snapshot_every
        self._threads = threads
        self._batch_size = batch_size
        self._types: dict[str, CollectionType] = {}
        self._micro_batch = micro_batch
        self._batchers: dict[int, MicroBatcher] = {}
        try:
            (self.path / "collections").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create data folder {self.path}: {error}") from error
        self._lock_file = _lock_folder(self.path)
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self._closed = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _folder(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise InvalidInputError(
                f"invalid collection name {name!r}: 1-128 letters, digits, '_', '-', '.', "
                "starting with a letter or digit"
            )
        return self.path / "collections" / name

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("engine is closed")

    def _batcher_for(self, instance: CollectionType) -> MicroBatcher | None:
        """The micro-batcher of a type instance (shared by its collections), if enabled."""
        if not self._micro_batch:
            return None
        with self._lock:
            found = self._batchers.get(id(instance))
            if found is None:
                probe = Embedder(instance)
                found = MicroBatcher(probe.embed_direct, max_batch=self._batch_size)
                self._batchers[id(instance)] = found
            return found

    def embedder_for(self, type_: CollectionType | None) -> Embedder | None:
        """What embeds the images of a collection of this type, with this engine's fetch and
        image policy (None for "vectors" collections)."""
        if type_ is None:
            return None
        return Embedder(
            type_,
            fetch=self.fetch,
            allow_files=self.allow_files,
            max_pixels=self.max_image_pixels,
            batcher=self._batcher_for(type_),
        )

    def _context(self) -> TypeContext:
        return TypeContext(
            cache_dir=models.cache_dir(), threads=self._threads or models.default_threads(), batch_size=self._batch_size
        )

    def _type_instance(self, type_name: str, type_config: Mapping[str, Any] | None) -> CollectionType:
        """One instance per type and configuration, shared by the collections that use it."""
        klass = self.registry.get(type_name)
        parsed = klass.parse_config(type_config)
        key = f"{type_name}\x00{dumps(klass.config_to_dict(parsed))}"
        with self._lock:
            instance = self._types.get(key)
            if instance is None:
                instance = klass(parsed, self._context())
                self._types[key] = instance
            return instance

    def collection_types(self) -> dict[str, dict[str, Any]]:
        """The collection types available here: description, version, query kinds, config schema."""
        out: dict[str, dict[str, Any]] = {
            "vectors": {
                "description": "Your own vectors: give each record a _vector",
                "version": "1.0",
                "query_kinds": ["vector", "id"],
                "config": {},
            }
        }
        for name in self.registry.names():
            klass = self.registry.get(name)
            out[name] = {
                "description": klass.description,
                "version": klass.version,
                "query_kinds": list(query_kinds(klass)),
                "config": msgspec.json.schema(klass.Config),
            }
        return out

    def create_collection(
        self,
        name: str,
        *,
        type: str = "vectors",
        config: Mapping[str, Any] | None = None,
        ndim: int | None = None,
        metric: Metric | None = None,
        precision: Precision = "f32",
        fields_to_index: Sequence[str] = (),
        product_id_field: str | None = None,
        store_images: bool = False,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        exact_threshold: int | None = None,
        exist_ok: bool = False,
        shards: int | None = None,
        replicas: int = 1,
    ) -> Collection:
        """Creates a collection (or, with `exist_ok`, returns the existing one of that name).

        `type` is "vectors" (records bring their own `_vector`; `ndim` and `metric` required)
        or an image collection type (`generic`, `products`, `colors`, `matching` or a plugin's)
        configured by `config`; its model fixes `ndim` and `metric`. `product_id_field`
        defaults to the type's (for example `product_id` for `products`).

        `shards` spreads the records over that many shards of the engine's Ray cluster (by a
        stable hash of `_id`), each kept on `replicas` nodes; see ``lookalike.distributed``.
        Without `shards`, the collection lives in this engine's folder.
        """
        self._check_open()
        folder = self._folder(name)
        if shards is not None:
            for label, value, most in (("shards", shards, 1024), ("replicas", replicas, 16)):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                    raise InvalidInputError(f"{label} must be an integer from 1 to {most}, got {value!r}")
            if self.cluster is None:
                raise UnsupportedError(
                    "sharded collections need a Ray cluster: Engine(..., cluster=RayCluster(address)) "
                    "or `lookalike serve --ray ADDRESS`"
                )
        elif replicas != 1:
            raise InvalidInputError("replicas needs shards")
        with self._lock:
            if (folder / CONFIG_FILE).exists():
                if exist_ok:
                    return self.collection(name)
                raise CollectionExistsError(f"collection {name!r} exists already")
            type_instance: CollectionType | None = None
            views = 1
            type_config: dict[str, Any] = {}
            type_version = ""
            if not isinstance(type, str):
                raise InvalidInputError(f"type must be a string, got {type!r}")
            if type == "vectors":
                if config:
                    raise InvalidInputError("the 'vectors' type takes no config")
                if metric is None:
                    metric = "cos"
            else:
                type_instance = self._type_instance(type, config)
                klass = type_instance.__class__
                if ndim is not None and ndim != type_instance.dimension:
                    raise InvalidInputError(f"type {type!r} makes {type_instance.dimension}-d vectors; ndim={ndim}")
                if metric is not None and metric != klass.metric:
                    raise InvalidInputError(f"type {type!r} compares with {klass.metric!r}; metric={metric!r}")
                ndim, metric = type_instance.dimension, klass.metric
                if metric == "hamming":
                    precision = "binary"
                if isinstance(type_instance, SupportsMultiVector):
                    views = type_instance.vectors_per_image
                type_config = klass.config_to_dict(type_instance.config)
                type_version = klass.version
                if product_id_field is None:
                    product_id_field = klass.default_product_id_field
                if exact_threshold is None:
                    exact_threshold = klass.default_exact_threshold
            if not isinstance(store_images, bool):
                raise InvalidInputError(f"store_images must be true or false, got {store_images!r}")
            if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= 65_536:
                raise InvalidInputError(f"ndim must be an integer from 1 to 65536, got {ndim!r}")
            if exact_threshold is None:
                exact_threshold = 0
            if isinstance(fields_to_index, str):
                raise InvalidInputError("fields_to_index takes a list of field paths")
            for path_ in fields_to_index:
                try:
                    filters_module._check_path(path_)
                except InvalidInputError as error:
                    raise InvalidInputError(f"fields_to_index: {error}") from error
            if product_id_field is not None:
                filters_module._check_path(product_id_field)
            settings = CollectionConfig(
                name=name,
                type=type,
                ndim=ndim,
                metric=metric,
                precision=precision,
                fields_to_index=tuple(dict.fromkeys(fields_to_index)),
                product_id_field=product_id_field,
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
                exact_threshold=exact_threshold,
                store_images=store_images,
                type_config=type_config,
                type_version=type_version,
                views=views,
            )
            # Let the core validate the combination before anything touches the disk.
            _core.Index(
                ndim,
                metric=metric,
                precision=precision,
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
            )
            temporary = folder.with_name(f".{name}.creating")
            try:
                if folder.exists():  # a half-created folder from a crash: nothing acknowledged lives there
                    shutil.rmtree(folder)
                if temporary.exists():
                    shutil.rmtree(temporary)
                temporary.mkdir(parents=True)
                (temporary / CONFIG_FILE).write_bytes(msgspec.json.encode(settings))
                if shards is not None:
                    manifest = {"shards": shards, "replicas": replicas, "placement": []}
                    (temporary / SHARDS_FILE).write_bytes(msgspec.json.encode(manifest))
                os.replace(temporary, folder)
                _fsync_directory(folder.parent)
            except OSError as error:
                shutil.rmtree(temporary, ignore_errors=True)
                raise storage_error(error, f"cannot create collection {name!r}") from error
            try:
                collection = self._open(folder, settings, type_instance)
            except BaseException:  # its shards could not start: the collection does not exist
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._collections[name] = collection
            return collection

    def collection(self, name: str) -> Collection:
        """An existing collection, opened on first use."""
        self._check_open()
        folder = self._folder(name)
        with self._lock:
            if name in self._collections:
                return self._collections[name]
            config_path = folder / CONFIG_FILE
            if not config_path.exists():
                raise CollectionNotFoundError(f"no collection named {name!r}")
            try:
                config = msgspec.json.decode(config_path.read_bytes(), type=CollectionConfig)
            except (OSError, msgspec.DecodeError) as error:
                raise StorageError(f"cannot read the configuration of {name!r}: {error}") from error
            type_instance = None
            if config.type != "vectors":
                klass = self.registry.get(config.type)
                if klass.version.split(".")[0] != config.type_version.split(".")[0]:
                    raise PluginError(
                        f"collection {name!r} was made by type {config.type!r} version {config.type_version}, "
                        f"the installed version is {klass.version}: its vectors are not comparable"
                    )
                type_instance = self._type_instance(config.type, config.type_config)
            collection = self._open(folder, config, type_instance)
            self._collections[name] = collection
            return collection

    def _open(self, folder: Path, config: CollectionConfig, type_: CollectionType | None) -> Collection:
        if not (folder / SHARDS_FILE).exists():
            return LocalCollection(self, folder, config, type_)
        if self.cluster is None:
            raise UnavailableError(
                f"collection {config.name!r} is sharded: open it with a Ray cluster "
                "(Engine(..., cluster=RayCluster(address)) or `lookalike serve --ray ADDRESS`)"
            )
        return self.cluster.open_collection(self, folder, config, type_)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check_open()
        root = self.path / "collections"
        return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).exists())

    def drop_collection(self, name: str) -> None:
        """Deletes a collection and its data."""
        self._check_open()
        folder = self._folder(name)
        with self._lock:
            if not (folder / CONFIG_FILE).exists():
                raise CollectionNotFoundError(f"no collection named {name!r}")
            if (folder / SHARDS_FILE).exists():
                if self.cluster is None:
                    raise UnavailableError(f"collection {name!r} is sharded: dropping it needs its Ray cluster")
                sharded = self.collection(name)  # its replicas delete their data
                self._collections.pop(name, None)
                self.cluster.drop_collection(sharded)
            else:
                collection = self._collections.pop(name, None)
                if collection is not None:
                    collection.close(snapshot=False)
            trash = folder.with_name(f".{name}.dropping")
            try:
                os.replace(folder, trash)
            except OSError as error:
                raise storage_error(error, f"cannot drop collection {name!r}") from error
            shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        """Closes every open collection (taking a snapshot of each) and releases the folder."""
        with self._lock:
            if self._closed:
                return
            try:
                for collection in self._collections.values():
                    collection.close()
                for batcher in self._batchers.values():
                    batcher.close()
                for instance in self._types.values():
                    instance.close()
            finally:
                self._collections.clear()
                self._types.clear()
                self._batchers.clear()
                self._closed = True
                if self._lock_file is not None:
                    self._lock_file.close()  # closing the descriptor releases the lock
                    self._lock_file = None
