"""The durable half of a collection: one SQLite database in WAL mode.

SQLite is the source of truth. It holds each record's metadata (JSON) and vector, and a log of
changed keys with a sequence number per write. The in-memory index (graph, exact vectors, field
indexes) is derived: it is saved as snapshots tagged with the sequence number they include and
caught up on open by replaying the log past that number. A write returns only once its
transaction has committed (``synchronous=FULL``), so whatever was acknowledged survives a crash.

Each log row keeps a *before image*: the indexed field values of the key as they were before the
write. Replay after a snapshot undoes those exact values from the snapshot's field indexes before
indexing the current ones, so field indexes never keep stale values of a reused key.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ReadOnlyStorageError, StorageError, StorageFullError

__all__ = ["CollectionStore", "StoredRecord", "Change", "dumps", "storage_error"]

#: SQLite's largest page count: no cap but the disk.
NO_PAGE_CAP = 0xFFFFFFFE
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: How the core's I/O errors (Rust ``io::Error`` as text) name the same conditions.
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "file too large", "database or disk is full")
_READ_ONLY_TEXTS = ("read-only file system", "permission denied", "readonly database", "operation not permitted")


def storage_error(error: BaseException, what: str) -> StorageError:
    """The typed error of a failed write or read of the data folder: a full disk (or quota)
    and a read-only disk get their own classes, so callers (and HTTP clients: 507 and 503) can
    tell them from damage."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else int(code) & 0xFF
    number = getattr(error, "errno", None)
    text = str(error).lower()
    if isinstance(error, StorageFullError | ReadOnlyStorageError):
        return error
    if primary == _SQLITE_FULL or number in _FULL_ERRNOS or any(t in text for t in _FULL_TEXTS):
        return StorageFullError(
            f"{what}: the disk or the collection's storage quota is full ({error}); nothing of this "
            "write was kept. Free space or remove records, then retry; reads still work"
        )
    if primary == _SQLITE_READONLY or number in _READ_ONLY_ERRNOS or any(t in text for t in _READ_ONLY_TEXTS):
        return ReadOnlyStorageError(
            f"{what}: the data folder cannot be written ({error}); nothing of this write was kept. "
            "Make it writable, then retry; reads still work"
        )
    if isinstance(error, StorageError):
        return error
    return StorageError(f"{what}: {error}")


SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    vector BLOB NOT NULL,
    group_id INTEGER
);
CREATE TABLE IF NOT EXISTS groups (
    group_id INTEGER PRIMARY KEY,
    value TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key INTEGER NOT NULL,
    before TEXT
);
CREATE TABLE IF NOT EXISTS free_keys (
    key INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS images (
    key INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
"""


def dumps(value: Any) -> str:
    """Canonical compact JSON (keys keep their order; non-ASCII kept as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    key: int
    id: str
    data: dict[str, Any]
    vector: bytes
    group_id: int | None


@dataclass(frozen=True, slots=True)
class Change:
    key: int
    before: dict[str, Any] | None


class CollectionStore:
    """One collection's SQLite database. Writes go through one connection under a lock;
    each reading thread gets its own connection, so readers never wait for the writer."""

    def __init__(self, path: Path, *, max_bytes: int | None = None) -> None:
        self.path = path
        self._max_pages = NO_PAGE_CAP
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            self._writer = self._connect()
            self._writer.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise storage_error(error, f"cannot open {path}") from error
        self.set_max_bytes(max_bytes)

    def set_max_bytes(self, max_bytes: int | None) -> None:
        """Caps the database (records, metadata, vectors, stored images and the change log) at
        about `max_bytes`; a write that would pass it raises :class:`StorageFullError`. None:
        no cap but the disk. A cap below the current size keeps the current size."""
        with self._write_lock:
            try:
                page_size = int(self._writer.execute("PRAGMA page_size").fetchone()[0])
                self._max_pages = NO_PAGE_CAP if max_bytes is None else max(1, -(-int(max_bytes) // page_size))
                self._writer.execute(f"PRAGMA max_page_count = {self._max_pages}")
            except sqlite3.Error as error:
                raise storage_error(error, f"cannot set the size cap of {self.path}") from error

    def size_bytes(self) -> int:
        """Bytes the database uses (pages in use, not counting free pages and the WAL)."""
        connection = self._reader()
        pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
        free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * int(connection.execute("PRAGMA page_size").fetchone()[0])

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=OFF")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()

    # -- settings --------------------------------------------------------------------------

    def get_setting(self, name: str) -> Any:
        row = self._reader().execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_setting(self, name: str, value: Any) -> None:
        with self._write_lock, self._transaction() as cursor:
            cursor.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, dumps(value)))

    # -- transactions ----------------------------------------------------------------------

    class _Transaction:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def __enter__(self) -> sqlite3.Cursor:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise storage_error(error, "cannot start a write") from error
            return self.connection.cursor()

        def __exit__(self, kind: object, error: object, traceback: object) -> None:
            if kind is None:
                try:
                    self.connection.execute("COMMIT")
                except sqlite3.Error as commit_error:
                    try:
                        self.connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite rolled back on its own (a full disk does that)
                    raise storage_error(commit_error, "commit failed") from commit_error
            else:
                try:
                    self.connection.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(error, sqlite3.Error | OSError) and not isinstance(error, StorageError):
                    raise storage_error(error, "write failed") from error

    def _transaction(self) -> CollectionStore._Transaction:
        return CollectionStore._Transaction(self._writer)

    @property
    def write_lock(self) -> threading.RLock:
        return self._write_lock

    # -- reads -----------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def last_sequence(self) -> int:
        row = self._reader().execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        connection = self._reader()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for id_, key in connection.execute(f"SELECT id, key FROM records WHERE id IN ({marks})", chunk):
                out[id_] = int(key)
        return out

    def records_by_key(self, keys: Sequence[int], with_vectors: bool = False) -> dict[int, StoredRecord]:
        out: dict[int, StoredRecord] = {}
        connection = self._reader()
        columns = "key, id, data, vector, group_id" if with_vectors else "key, id, data, NULL, group_id"
        for start in range(0, len(keys), 500):
            chunk = [int(key) for key in keys[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for key, id_, data, vector, group_id in connection.execute(
                f"SELECT {columns} FROM records WHERE key IN ({marks})", chunk
            ):
                out[int(key)] = StoredRecord(int(key), id_, json.loads(data), vector or b"", group_id)
        return out

    def records_by_id(self, ids: Sequence[str], with_vectors: bool = False) -> dict[str, StoredRecord]:
        out: dict[str, StoredRecord] = {}
        connection = self._reader()
        columns = "key, id, data, vector, group_id" if with_vectors else "key, id, data, NULL, group_id"
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, id_, data, vector, group_id in connection.execute(
                f"SELECT {columns} FROM records WHERE id IN ({marks})", chunk
            ):
                out[id_] = StoredRecord(int(key), id_, json.loads(data), vector or b"", group_id)
        return out

    def iter_records(self, with_vectors: bool = True, batch: int = 10_000) -> Iterator[list[StoredRecord]]:
        """All records in key order, in batches (a consistent snapshot of the database)."""
        connection = self._connect()
        try:
            connection.execute("BEGIN")
            last = -1
            columns = "key, id, data, vector, group_id" if with_vectors else "key, id, data, NULL, group_id"
            while True:
                rows = connection.execute(
                    f"SELECT {columns} FROM records WHERE key > ? ORDER BY key LIMIT ?", (last, batch)
                ).fetchall()
                if not rows:
                    break
                yield [StoredRecord(int(k), i, json.loads(d), v or b"", g) for k, i, d, v, g in rows]
                last = int(rows[-1][0])
            connection.execute("COMMIT")
        finally:
            connection.close()
            with self._connections_lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def page(self, after_key: int, limit: int) -> list[StoredRecord]:
        rows = (
            self._reader()
            .execute(
                "SELECT key, id, data, NULL, group_id FROM records WHERE key > ? ORDER BY key LIMIT ?",
                (after_key, limit),
            )
            .fetchall()
        )
        return [StoredRecord(int(k), i, json.loads(d), b"", g) for k, i, d, _, g in rows]

    def changes_since(self, sequence: int) -> list[Change]:
        """Changed keys after `sequence`, each once, with the before image of its first change."""
        rows = (
            self._reader().execute("SELECT key, before FROM changes WHERE seq > ? ORDER BY seq", (sequence,)).fetchall()
        )
        seen: dict[int, Change] = {}
        for key, before in rows:
            if key not in seen:
                seen[int(key)] = Change(int(key), None if before is None else json.loads(before))
        return list(seen.values())

    def group_values(self, group_ids: Iterable[int]) -> dict[int, Any]:
        ids = [int(g) for g in set(group_ids)]
        out: dict[int, Any] = {}
        connection = self._reader()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for group_id, value in connection.execute(
                f"SELECT group_id, value FROM groups WHERE group_id IN ({marks})", chunk
            ):
                out[int(group_id)] = json.loads(value)
        return out

    # -- writes (callers hold write_lock and pass the cursor of one transaction) ------------

    def transaction(self) -> CollectionStore._Transaction:
        return self._transaction()

    @contextlib.contextmanager
    def freeing(self) -> Iterator[sqlite3.Cursor]:
        """A transaction that frees space (removes). Deleting rows still writes log rows and
        rebalances pages before the freed pages count, so a collection at its cap gets a little
        room past it (a tenth, at least 256 pages) for this transaction: removing records is how
        a user makes room, and it must work at the cap."""
        capped = self._max_pages != NO_PAGE_CAP
        if capped:
            grace = self._max_pages + max(256, self._max_pages // 10)
            self._writer.execute(f"PRAGMA max_page_count = {min(grace, NO_PAGE_CAP)}")
        try:
            with self._transaction() as cursor:
                yield cursor
        finally:
            if capped:
                self._writer.execute(f"PRAGMA max_page_count = {self._max_pages}")

    @staticmethod
    def allocate_keys(cursor: sqlite3.Cursor, count: int) -> list[int]:
        """Reuses freed keys first (smallest first), then continues after the largest key."""
        keys = [int(row[0]) for row in cursor.execute("SELECT key FROM free_keys ORDER BY key LIMIT ?", (count,))]
        if keys:
            cursor.execute("DELETE FROM free_keys WHERE key <= ?", (keys[-1],))
        missing = count - len(keys)
        if missing:
            row = cursor.execute("SELECT value FROM settings WHERE name = 'next_key'").fetchone()
            start = 0 if row is None else int(json.loads(row[0]))
            keys.extend(range(start, start + missing))
            cursor.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES ('next_key', ?)", (dumps(start + missing),)
            )
        return keys

    @staticmethod
    def group_ids(cursor: sqlite3.Cursor, values: Iterable[str]) -> dict[str, int]:
        """Interned ids for canonical-JSON group values, created as needed."""
        out: dict[str, int] = {}
        for value in set(values):
            row = cursor.execute("SELECT group_id FROM groups WHERE value = ?", (value,)).fetchone()
            if row is None:
                cursor.execute("INSERT INTO groups (value) VALUES (?)", (value,))
                row = cursor.execute("SELECT group_id FROM groups WHERE value = ?", (value,)).fetchone()
            out[value] = int(row[0])
        return out

    @staticmethod
    def log_change(cursor: sqlite3.Cursor, key: int, before: dict[str, Any] | None) -> None:
        cursor.execute(
            "INSERT INTO changes (key, before) VALUES (?, ?)", (key, None if before is None else dumps(before))
        )

    @staticmethod
    def put(
        cursor: sqlite3.Cursor, key: int, id_: str, data: dict[str, Any], vector: np.ndarray, group_id: int | None
    ) -> None:
        cursor.execute(
            "INSERT OR REPLACE INTO records (key, id, data, vector, group_id) VALUES (?, ?, ?, ?, ?)",
            (key, id_, dumps(data), vector.tobytes(), group_id),
        )

    @staticmethod
    def update_data(cursor: sqlite3.Cursor, key: int, data: dict[str, Any], group_id: int | None) -> None:
        cursor.execute("UPDATE records SET data = ?, group_id = ? WHERE key = ?", (dumps(data), group_id, key))

    @staticmethod
    def put_image(cursor: sqlite3.Cursor, key: int, data: bytes) -> None:
        """Keeps the original image bytes (collections with ``store_images``)."""
        cursor.execute("INSERT OR REPLACE INTO images (key, data) VALUES (?, ?)", (key, data))

    def image(self, key: int) -> bytes | None:
        row = self._reader().execute("SELECT data FROM images WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    @staticmethod
    def delete(cursor: sqlite3.Cursor, key: int) -> None:
        cursor.execute("DELETE FROM records WHERE key = ?", (key,))
        cursor.execute("DELETE FROM images WHERE key = ?", (key,))
        cursor.execute("INSERT OR IGNORE INTO free_keys (key) VALUES (?)", (key,))

    def prune_changes(self, sequence: int) -> None:
        """Drops the log up to `sequence` (once a snapshot includes it)."""
        with self._write_lock, self.freeing() as cursor:
            cursor.execute("DELETE FROM changes WHERE seq <= ?", (sequence,))

    def checkpoint(self) -> None:
        try:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            raise storage_error(error, "checkpoint failed") from error
