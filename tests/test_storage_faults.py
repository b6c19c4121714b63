"""A full disk and a read-only disk: writes fail with a typed error and keep nothing, reads go
on, nothing acknowledged is damaged, and writes work again once there is space.

A full disk is simulated with the collection's storage cap (``max_collection_bytes``: SQLite's
page-count limit answers exactly as a full disk does, ``SQLITE_FULL``); a read-only disk with
SQLite's ``query_only`` on the writing connection (``SQLITE_READONLY``, as a read-only file
system gives); a snapshot that cannot be written with an ``ENOSPC`` from the file system calls.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lookalike
from lookalike import engine as engine_module
from lookalike.errors import ReadOnlyStorageError, StorageError, StorageFullError
from lookalike.storage import storage_error

NDIM = 32
CAP = 192 * 1024


def vectors(start: int, count: int) -> np.ndarray:
    return np.random.default_rng(start).standard_normal((count, NDIM)).astype(np.float32)


def records(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"_id": f"r{start + i}", "_vector": row.tolist(), "part": (start + i) % 5, "note": "x" * 200}
        for i, row in enumerate(vectors(start, count))
    ]


class Acknowledged:
    """What the tests were told was written."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def add(self, collection: lookalike.Collection, batch: list[dict[str, Any]]) -> None:
        collection.add(batch)
        for record in batch:
            self.records[record["_id"]] = record

    def check(self, collection: lookalike.Collection) -> None:
        """Every acknowledged record is stored with its metadata, found by an exact scan and by
        the index, and the index holds exactly the stored records."""
        assert len(collection) == len(self.records)
        assert collection.stats()["count"] == len(self.records)
        ids = sorted(self.records)
        stored = collection.get(ids)
        assert [r["_id"] for r in stored] == ids
        for record in stored:
            assert record["note"] == self.records[record["_id"]]["note"]
        for id_ in ids[:: max(1, len(ids) // 25)]:
            query = np.asarray(self.records[id_]["_vector"], dtype=np.float32)
            for exact in (True, False):
                hits = collection.search(query, limit=1, exact=exact)
                assert hits[0]["_id"] == id_


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[lookalike.Engine]:
    engine = lookalike.Engine(tmp_path / "data", max_collection_bytes=CAP)
    yield engine
    engine.close()


def fill_until_full(collection: lookalike.Collection, acknowledged: Acknowledged) -> list[dict[str, Any]]:
    """Adds batches until the cap refuses one; returns the refused batch."""
    start = 0
    while True:
        batch = records(start, 20)
        try:
            acknowledged.add(collection, batch)
        except StorageFullError:
            return batch
        start += 20
        assert start < 10_000, "the storage cap never filled"


def test_a_full_disk_refuses_the_write_keeps_everything_and_recovers(tmp_path: Path, engine: lookalike.Engine) -> None:
    collection = engine.create_collection("c", ndim=NDIM, fields_to_index=["part"])
    acknowledged = Acknowledged()
    refused = fill_until_full(collection, acknowledged)
    assert len(acknowledged.records) > 100

    # Nothing of the refused batch was kept, not even the records before the one that did not fit.
    assert collection.get([r["_id"] for r in refused]) == []
    acknowledged.check(collection)
    # Reads of every kind go on.
    assert collection.records(filter={"part": 1}, limit=3).records
    assert len(collection.records(limit=10).records) == 10
    # Every kind of write fails the same clear way, and changes nothing.
    with pytest.raises(StorageFullError, match="full"):
        collection.add(records(50_000, 40))
    with pytest.raises(StorageFullError):
        collection.update([{"_id": id_, "note": "y" * 5000} for id_ in list(acknowledged.records)[:50]])
    acknowledged.check(collection)

    # Removing records frees space inside the cap: writes work again.
    removed = list(acknowledged.records)[:60]
    assert collection.remove(removed) == 60
    for id_ in removed:
        del acknowledged.records[id_]
    acknowledged.add(collection, records(60_000, 20))
    acknowledged.check(collection)

    # A larger cap (more disk) after a restart: writes work again, everything is there.
    engine.close()
    with lookalike.Engine(tmp_path / "data", max_collection_bytes=CAP * 4) as bigger:
        reopened = bigger.collection("c")
        acknowledged.check(reopened)
        acknowledged.add(reopened, records(70_000, 100))
        acknowledged.check(reopened)


def test_a_read_only_disk_refuses_writes_and_reads_go_on(tmp_path: Path) -> None:
    with lookalike.Engine(tmp_path / "data") as engine:
        collection = engine.create_collection("c", ndim=NDIM, fields_to_index=["part"])
        acknowledged = Acknowledged()
        acknowledged.add(collection, records(0, 300))
        writer: sqlite3.Connection = collection._store._writer
        writer.execute("PRAGMA query_only = ON")
        try:
            with pytest.raises(ReadOnlyStorageError, match="cannot be written"):
                collection.add(records(1000, 10))
            with pytest.raises(ReadOnlyStorageError):
                collection.update([{"_id": "r1", "note": "changed"}])
            # A remove takes the records out of the index before it writes: a refused one puts
            # them back, so search still finds them.
            with pytest.raises(ReadOnlyStorageError):
                collection.remove(["r1", "r2", "r3"])
            with pytest.raises(ReadOnlyStorageError):
                collection.remove(filter={"part": 4})
            acknowledged.check(collection)
            assert collection.count({"part": 4}) == 60
            query = np.asarray(acknowledged.records["r4"]["_vector"], dtype=np.float32)
            assert collection.search(query, limit=1, filter={"part": 4})[0]["_id"] == "r4"
        finally:
            writer.execute("PRAGMA query_only = OFF")
        acknowledged.add(collection, records(2000, 10))
        assert collection.remove(["r1"]) == 1
        del acknowledged.records["r1"]
        acknowledged.check(collection)
    with lookalike.Engine(tmp_path / "data") as engine:
        acknowledged.check(engine.collection("c"))


def test_a_snapshot_that_cannot_be_written_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def full_disk(source: Any, target: Any) -> None:
        if "snapshots" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    with lookalike.Engine(tmp_path / "data") as engine:
        collection = engine.create_collection("c", ndim=NDIM)
        acknowledged = Acknowledged()
        acknowledged.add(collection, records(0, 200))
        monkeypatch.setattr(engine_module.os, "replace", full_disk)
        with pytest.raises(StorageFullError):
            collection.snapshot()
        assert not list((tmp_path / "data" / "collections" / "c" / "snapshots").glob("tmp-*"))
        # A snapshot due inside a write fails quietly: the write was committed and is acknowledged.
        collection._changes_since_snapshot = 10**9
        acknowledged.add(collection, records(500, 20))
        assert collection._snapshot_failed_at is not None
        acknowledged.check(collection)
    # Closing could not snapshot either; the next open replays the log and has everything.
    monkeypatch.setattr(engine_module.os, "replace", real_replace)
    with lookalike.Engine(tmp_path / "data") as engine:
        acknowledged.check(engine.collection("c"))


def test_a_collection_that_cannot_be_created_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lookalike.Engine(tmp_path / "data") as engine:

        def read_only(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        with monkeypatch.context() as patch:
            patch.setattr(Path, "mkdir", read_only)
            with pytest.raises(ReadOnlyStorageError, match="cannot create collection 'c'"):
                engine.create_collection("c", ndim=NDIM)
        assert engine.list_collections() == []
        assert engine.create_collection("c", ndim=NDIM) is not None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageFullError),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), StorageFullError),
        (OSError(errno.EROFS, "Read-only file system"), ReadOnlyStorageError),
        (StorageError("failed to write snapshot: No space left on device (os error 28)"), StorageFullError),
        (StorageError("failed to create file: Read-only file system (os error 30)"), ReadOnlyStorageError),
        (OSError(errno.EIO, "Input/output error"), StorageError),
    ],
)
def test_storage_errors_are_classified(error: BaseException, expected: type[StorageError]) -> None:
    typed = storage_error(error, "writing")
    assert type(typed) is expected
    assert typed.code == expected.code


def test_sqlite_errors_are_classified(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    connection.execute("CREATE TABLE t (v BLOB)")
    connection.execute("PRAGMA max_page_count = 4")
    with pytest.raises(sqlite3.Error) as full:
        connection.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert type(storage_error(full.value, "writing")) is StorageFullError
    connection.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.Error) as read_only:
        connection.execute("INSERT INTO t VALUES (1)")
    assert type(storage_error(read_only.value, "writing")) is ReadOnlyStorageError


def test_the_cap_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(lookalike.InvalidInputError, match="max_collection_bytes"):
        lookalike.Engine(tmp_path / "data", max_collection_bytes=0)
