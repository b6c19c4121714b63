"""The in-process engine: collections of records, durable in SQLite, searched by the core.

Every write goes the same way: validate the whole batch (nothing is written if any record is
bad), commit it to the collection's SQLite database (the write is acknowledged only then), then
apply it to the in-memory index. Searches run in the native core with the GIL released; only the
hits' records are read back from SQLite. See ARCHITECTURE.md for the path of one add and one
search.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from lookalike import _core
from lookalike import filters as filters_module
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
    RecordNotFoundError,
    StorageError,
    UnsupportedError,
)
from lookalike.filters import PRESENCE_SUFFIX, Filter, indexable_values
from lookalike.storage import CollectionStore, StoredRecord, dumps

__all__ = ["Engine", "Collection", "CollectionConfig", "SearchBatch", "RecordPage"]

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_ID_LENGTH = 1024
MAX_LIMIT = 10_000
NO_KEY = np.iinfo(np.uint64).max
#: Reserved record fields the `vectors` type understands; others starting with `_` are refused.
RESERVED_FIELDS = frozenset({"_id", "_vector", "_url", "_base64", "_file"})
CONFIG_FILE = "config.json"
DATABASE_FILE = "collection.db"
SNAPSHOT_DIR = "snapshots"

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
        records = self._collection._store.records_by_key(valid)
        return [
            [records[int(k)].id for k in row[: int(count)] if int(k) in records]
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


def _entries(key: int, image: Mapping[str, list[Any]]) -> list[tuple[int, str, list[Any]]]:
    return [(key, name, values) for name, values in image.items()]


class Collection:
    """A named set of records with vectors. Get one from :class:`Engine`; thread-safe."""

    def __init__(self, engine: Engine, path: Path, config: CollectionConfig) -> None:
        self._engine = engine
        self._path = path
        self.config = config
        self._store = CollectionStore(path / DATABASE_FILE)
        self._closed = False
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
        dtype = np.uint8 if self.config.precision == "binary" else np.float32
        width = self.config.ndim // 8 if self.config.precision == "binary" else self.config.ndim
        matrix = np.empty((len(records), width), dtype=dtype)
        for row, record in enumerate(records):
            matrix[row] = np.frombuffer(record.vector, dtype=dtype)
        return matrix

    def _apply_records(
        self, index: _core.Index, records: Sequence[StoredRecord], before: Mapping[int, Mapping[str, list[Any]]]
    ) -> None:
        """Puts records (already committed) into the index; `before` holds the field values to
        take out first for keys that were indexed with other values."""
        unindex = [entry for key, image in before.items() for entry in _entries(key, image)]
        if unindex:
            index.unindex_fields(unindex)
        if not records:
            return
        keys = np.fromiter((r.key for r in records), dtype=np.uint64, count=len(records))
        groups = np.fromiter(
            (int(_core.NO_GROUP) if r.group_id is None else r.group_id for r in records),
            dtype=np.uint64,
            count=len(records),
        )
        index.add(keys, self._vectors_of(records), groups)
        entries = [
            entry for r in records for entry in _entries(r.key, _field_image(r.data | {"_id": r.id}, self._fields))
        ]
        if entries:
            index.index_fields(entries)

    def _replay(self, index: _core.Index, changes: Sequence[Any]) -> None:
        if not changes:
            return
        keys = [change.key for change in changes]
        current = self._store.records_by_key(keys, with_vectors=True)
        before = {change.key: change.before for change in changes if change.before is not None}
        gone = [key for key in keys if key not in current and key in index]
        unindex = [entry for key, image in before.items() for entry in _entries(key, image)]
        if unindex:
            index.unindex_fields(unindex)
        if gone:
            index.remove(np.asarray(gone, dtype=np.uint64))
        self._apply_records(index, list(current.values()), before={})

    # -- basics ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Collection(name={self.config.name!r}, type={self.config.type!r}, count={len(self)})"

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
            simd=_core.simd_capabilities(),
        )
        return stats

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
            row = np.asarray(value, dtype=np.float32)
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
        return value

    @staticmethod
    def _metadata(record: Mapping[str, Any], position: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, value in record.items():
            if not isinstance(name, str):
                raise InvalidRecordError(f"record {position}: field names must be strings")
            if name.startswith("_"):
                if name not in RESERVED_FIELDS:
                    raise InvalidRecordError(
                        f"record {position}: field {name!r} is reserved (fields starting with '_' are the engine's)"
                    )
                if name in ("_id", "_vector"):
                    continue
                if name in ("_base64", "_file"):
                    raise UnsupportedError(
                        f"record {position}: {name} needs an image collection type; 'vectors' collections take _vector"
                    )
            data[name] = value
        try:
            dumps(data)
        except (TypeError, ValueError) as error:
            raise InvalidRecordError(f"record {position}: metadata is not valid JSON ({error})") from error
        return data

    def _group_value(self, data: Mapping[str, Any]) -> str | None:
        if self.config.product_id_field is None:
            return None
        values = filters_module.values_at(data, self.config.product_id_field)
        if not values or values[0] is None:
            return None
        return dumps(values[0])

    # -- writes ----------------------------------------------------------------------------

    def add(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Adds records, replacing any with the same `_id`; returns their ids.

        Each record has a string `_id`, a `_vector`, and any JSON metadata. The whole batch is
        checked first: if one record is bad, nothing is written. Returns once the batch is durable.
        """
        self._check_open()
        batch = list(records)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        datas: list[dict[str, Any]] = []
        seen: set[str] = set()
        for position, record in enumerate(batch):
            if not isinstance(record, Mapping):
                raise InvalidRecordError(f"record {position}: expected an object, got {type(record).__name__}")
            id_ = self._check_id(record.get("_id"), position)
            if id_ in seen:
                raise DuplicateIdError(f"record {position}: _id {id_!r} appears twice in this batch")
            seen.add(id_)
            if "_vector" not in record:
                raise InvalidRecordError(f"record {position}: a 'vectors' collection needs a _vector")
            rows.append(self._vector_row(record["_vector"], position))
            datas.append(self._metadata(record, position))
            ids.append(id_)
        if not ids:
            return []
        dtype = np.uint8 if self.config.precision == "binary" else np.float32
        self._write(ids, np.stack(rows).astype(dtype, copy=False), datas)
        return ids

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
        matrix = np.ascontiguousarray(vectors, dtype=np.uint8 if binary else np.float32)
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

    def _write(self, ids: list[str], matrix: np.ndarray, datas: list[dict[str, Any]]) -> None:
        with self._store.write_lock:
            self._check_open()
            existing = self._store.records_by_id(ids)
            with self._store.transaction() as cursor:
                fresh = [id_ for id_ in ids if id_ not in existing]
                allocated = iter(self._store.allocate_keys(cursor, len(fresh)))
                keys = [existing[id_].key if id_ in existing else next(allocated) for id_ in ids]
                group_values = [self._group_value(data) for data in datas]
                interned = self._store.group_ids(cursor, [g for g in group_values if g is not None])
                stored: list[StoredRecord] = []
                before: dict[int, dict[str, list[Any]]] = {}
                for id_, key, row, data, group in zip(ids, keys, matrix, datas, group_values, strict=True):
                    old = existing.get(id_)
                    image = _field_image(old.data | {"_id": id_}, self._fields) if old is not None else None
                    if image:
                        before[key] = image
                    self._store.log_change(cursor, key, image)
                    group_id = None if group is None else interned[group]
                    self._store.put(cursor, key, id_, data, row, group_id)
                    stored.append(StoredRecord(key, id_, data, row.tobytes(), group_id))
            self._after_commit(lambda: self._apply_records(self._index, stored, before), len(ids))

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
        if self._changes_since_snapshot > max(10_000, len(self._index) // 4):
            self.snapshot()

    def update(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Sets the given fields of existing records (other fields stay); a `_vector` replaces
        the vector. A field set to None stays, as null. Returns how many records were updated.

        Raises:
            RecordNotFoundError: if an `_id` does not exist (nothing is written then).
        """
        self._check_open()
        batch = list(records)
        changes: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
        seen: set[str] = set()
        for position, record in enumerate(batch):
            if not isinstance(record, Mapping):
                raise InvalidRecordError(f"record {position}: expected an object, got {type(record).__name__}")
            id_ = self._check_id(record.get("_id"), position)
            if id_ in seen:
                raise DuplicateIdError(f"record {position}: _id {id_!r} appears twice in this batch")
            seen.add(id_)
            vector = self._vector_row(record["_vector"], position) if "_vector" in record else None
            changes.append((id_, self._metadata(record, position), vector))
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
                    dtype = np.uint8 if self.config.precision == "binary" else np.float32
                    row = vector if vector is not None else np.frombuffer(old.vector, dtype=dtype)
                    self._store.put(cursor, old.key, id_, data, row.astype(dtype, copy=False), group_id)
                    stored.append(StoredRecord(old.key, id_, data, row.astype(dtype, copy=False).tobytes(), group_id))
            self._after_commit(lambda: self._apply_records(self._index, stored, before), len(stored))
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
            unindex = [entry for key, image in before.items() for entry in _entries(key, image)]
            try:
                if unindex:
                    self._index.unindex_fields(unindex)
                self._index.remove(np.fromiter((r.key for r in targets), dtype=np.uint64, count=len(targets)))
                with self._store.transaction() as cursor:
                    for record in targets:
                        self._store.log_change(cursor, record.key, before[record.key] or None)
                        self._store.delete(cursor, record.key)
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
            self.compact()
        except Exception:  # a background thread must not die loudly; the next remove retries
            logger.exception("background compaction of %s failed", self.config.name)

    def compact(self) -> None:
        """Rebuilds the graph without removed records, giving their memory back, then takes a
        snapshot. Searches keep running meanwhile; writers wait."""
        self._check_open()
        self._index.rebuild()
        self.snapshot()

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
            self._index.save(str(temporary), sequence)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            _fsync_directory(directory)
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
        key = self._key_of(id)
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
        return np.asarray(keys, dtype=np.uint64)

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
            return np.asarray(self._index.keys(), dtype=np.uint64)
        return np.asarray(self._index.evaluate(compiled), dtype=np.uint64)

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Number of records, or of records passing a filter."""
        self._check_open()
        return len(self) if filter is None else int(self._filter_keys(filter).size)

    # -- search ----------------------------------------------------------------------------

    def _query_matrix(self, vector: Any) -> np.ndarray:
        binary = self.config.precision == "binary"
        if binary:
            return self._vector_row(vector, 0).reshape(1, -1)
        try:
            row = np.asarray(vector, dtype=np.float32)
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

    def search(
        self,
        vector: Any = None,
        *,
        id: str | None = None,
        limit: int = 10,
        offset: int = 0,
        filter: Mapping[str, Any] | None = None,
        group_by: str | None = None,
        group_size: int = 1,
        fields: Sequence[str] | None = None,
        ef: int | None = None,
        exact: bool = False,
    ) -> list[dict[str, Any]]:
        """The nearest records to a vector or to a stored record (`id`).

        Returns hits ranked [offset, offset + limit) as dicts with `_id`, `distance` (smaller is
        closer) and the record's metadata (or just `fields`). With `group_by` (the collection's
        `product_id_field`), `limit` and `offset` count groups: the best `group_size` hits of
        each group follow one another, and each hit carries `_group`.
        """
        self._check_open()
        if (vector is None) == (id is None):
            raise InvalidInputError("search takes either a vector or an id")
        limit = _check_limit(limit)
        offset = _check_offset(offset)
        query = self._query_matrix(vector) if vector is not None else self.get_vector(id or "").reshape(1, -1)
        compiled, filter_key = self._compile_keyed(filter)
        if group_by is not None:
            return self._search_grouped(
                query, limit, offset, compiled, filter_key, group_by, group_size, fields, ef, exact
            )
        for _attempt in range(3):
            keys, distances, counts, _plans = self._index.search(
                query, limit, offset=offset, filter=compiled, ef=ef, exact=exact, filter_key=filter_key
            )
            count = int(counts[0])
            hit_keys = [int(k) for k in keys[0][:count]]
            records = self._store.records_by_key(hit_keys)
            if len(records) == len(hit_keys):
                break
            # A concurrent remove committed between the search and the read: search again.
        out: list[dict[str, Any]] = []
        for key, distance in zip(hit_keys, distances[0][:count], strict=True):
            record = records.get(key)
            if record is None:
                continue
            hit = self._record_dict(record, fields)
            hit["distance"] = float(distance)
            out.append(hit)
        return out

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
        if group_by != self.config.product_id_field:
            raise UnsupportedError(
                f"group_by must be the collection's product_id_field "
                f"({self.config.product_id_field!r}), got {group_by!r}"
            )
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= 100:
            raise InvalidInputError(f"group_size must be an integer from 1 to 100, got {group_size!r}")
        groups, _plan = self._index.search_grouped(
            query, limit, group_size, offset=offset, filter=compiled, ef=ef, exact=exact, filter_key=filter_key
        )
        all_keys = [int(k) for _, keys, _ in groups for k in keys]
        records = self._store.records_by_key(all_keys)
        values = self._store.group_values(g for g, _, _ in groups if g != int(_core.NO_GROUP))
        out: list[dict[str, Any]] = []
        for group_id, keys, distances in groups:
            for key, distance in zip(keys, distances, strict=True):
                record = records.get(int(key))
                if record is None:
                    continue
                hit = self._record_dict(record, fields)
                hit["distance"] = float(distance)
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
        binary = self.config.precision == "binary"
        matrix = np.ascontiguousarray(queries, dtype=np.uint8 if binary else np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        width = self.config.ndim // 8 if binary else self.config.ndim
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise DimensionMismatchError(f"queries must have shape [n, {width}], got {list(matrix.shape)}")
        if not binary and not np.isfinite(matrix).all():
            raise InvalidVectorError("a query contains NaN or infinity")
        compiled, filter_key = self._compile_keyed(filter)
        keys, distances, counts, plans = self._index.search(
            matrix, limit, offset=offset, filter=compiled, ef=ef, exact=exact, threads=threads, filter_key=filter_key
        )
        return SearchBatch(keys, distances, counts, list(plans), self)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshots the index (so the next open is fast) and closes the database."""
        if self._closed:
            return
        thread = self._rebuild_thread
        if thread is not None and thread.is_alive():
            thread.join()
        if snapshot and self._changes_since_snapshot:
            self.snapshot()
        with self._store.write_lock:
            self._closed = True
            self._store.close()


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


class Engine:
    """A data folder holding collections. Opens or creates the folder.

    Example:
        >>> engine = Engine("./data")
        >>> photos = engine.create_collection("photos", ndim=512, fields_to_index=["category"])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
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

    def create_collection(
        self,
        name: str,
        *,
        type: str = "vectors",
        ndim: int,
        metric: Metric = "cos",
        precision: Precision = "f32",
        fields_to_index: Sequence[str] = (),
        product_id_field: str | None = None,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        exact_threshold: int = 0,
        exist_ok: bool = False,
    ) -> Collection:
        """Creates a collection (or, with `exist_ok`, returns the existing one of that name)."""
        self._check_open()
        folder = self._folder(name)
        with self._lock:
            if (folder / CONFIG_FILE).exists():
                if exist_ok:
                    return self.collection(name)
                raise CollectionExistsError(f"collection {name!r} exists already")
            if type != "vectors":
                raise UnsupportedError(f"unknown collection type {type!r}; available: 'vectors'")
            if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= 65_536:
                raise InvalidInputError(f"ndim must be an integer from 1 to 65536, got {ndim!r}")
            if isinstance(fields_to_index, str):
                raise InvalidInputError("fields_to_index takes a list of field paths")
            for path_ in fields_to_index:
                try:
                    filters_module._check_path(path_)
                except InvalidInputError as error:
                    raise InvalidInputError(f"fields_to_index: {error}") from error
            if product_id_field is not None:
                filters_module._check_path(product_id_field)
            config = CollectionConfig(
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
            if folder.exists():  # a half-created folder from a crash: nothing acknowledged lives there
                shutil.rmtree(folder)
            temporary = folder.with_name(f".{name}.creating")
            if temporary.exists():
                shutil.rmtree(temporary)
            temporary.mkdir(parents=True)
            (temporary / CONFIG_FILE).write_bytes(msgspec.json.encode(config))
            os.replace(temporary, folder)
            _fsync_directory(folder.parent)
            collection = Collection(self, folder, config)
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
            collection = Collection(self, folder, config)
            self._collections[name] = collection
            return collection

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
            collection = self._collections.pop(name, None)
            if collection is not None:
                collection.close(snapshot=False)
            trash = folder.with_name(f".{name}.dropping")
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        """Closes every open collection (taking a snapshot of each) and releases the folder."""
        with self._lock:
            if self._closed:
                return
            try:
                for collection in self._collections.values():
                    collection.close()
            finally:
                self._collections.clear()
                self._closed = True
                if self._lock_file is not None:
                    self._lock_file.close()  # closing the descriptor releases the lock
                    self._lock_file = None
