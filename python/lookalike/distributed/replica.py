"""One replica of one shard: an ordinary :class:`~lookalike.engine.LocalCollection` in its own
data folder on a node's disk, run inside a Ray actor, plus the replica's write log.

Every write reaches a replica as an *operation* numbered by the router (the shard's sequence
number) with a digest of its bytes. The replica applies operations strictly in order and keeps
the last ones in ``replica.db`` (SQLite, ``synchronous=FULL``), next to its collection: a replica
that missed writes (its node was down) catches up by replaying a healthy replica's log from its
own last number, or, when that log no longer reaches back so far, or the digests of the last
operation they share differ, by copying the healthy replica's records whole.

The collection commits an operation before the log records it, so a crash between the two
leaves the replica one number behind: the operation is applied again on catch-up, and every
operation is idempotent (writes replace by `_id`, updates set fields, removes skip the absent).
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.engine import MAX_LIMIT, Collection, CollectionConfig, Engine, LocalCollection
from lookalike.errors import InternalError

__all__ = ["Replica", "LOG_BYTES", "create_like"]

#: Bytes of operations a replica keeps for others to catch up from (older ones are dropped).
LOG_BYTES = 256 * 2**20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY, digest TEXT NOT NULL, op BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value);
"""


def create_like(engine: Engine, config: CollectionConfig) -> Collection:
    """A collection in `engine` with the settings of `config` (a shard of a sharded one)."""
    return engine.create_collection(
        config.name,
        type=config.type,
        config=dict(config.type_config) if config.type != "vectors" else None,
        ndim=config.ndim,
        metric=config.metric,  # type: ignore[arg-type]
        precision=config.precision,  # type: ignore[arg-type]
        fields_to_index=config.fields_to_index,
        product_id_field=config.product_id_field,
        store_images=config.store_images,
        connectivity=config.connectivity,
        expansion_add=config.expansion_add,
        expansion_search=config.expansion_search,
        exact_threshold=config.exact_threshold,
        exist_ok=True,
    )


class Replica:
    """The actor's state: the collection and its operation log. Methods are called by the
    router (``lookalike.distributed.sharded``); reads run concurrently, writes one at a time."""

    def __init__(
        self, folder: str, config: CollectionConfig, snapshot_every: int | None = None, log_bytes: int | None = None
    ) -> None:
        self._folder = Path(folder)
        self._log_bytes = LOG_BYTES if log_bytes is None else log_bytes
        self._config = config
        self._snapshot_every = snapshot_every
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        # Replicas never embed (the router or the ingestion tasks do) and never fetch.
        self._engine = Engine(self._folder, fetch=None, allow_files=False, snapshot_every=self._snapshot_every)
        found = create_like(self._engine, self._config)
        if not isinstance(found, LocalCollection):  # pragma: no cover - a replica's engine has no cluster
            raise InternalError("a replica's collection must be local")
        self._collection = found
        self._db = sqlite3.connect(self._folder / "replica.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- identity and health ---------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """Where this replica runs and how far it is: its node, process, last operation."""
        import ray

        applied, digest = self._applied()
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "applied": applied,
            "digest": digest,
            "records": len(self._collection),
        }

    def _applied(self) -> tuple[int, str]:
        rows = dict(self._db.execute("SELECT name, value FROM state").fetchall())
        return int(rows.get("applied", 0)), str(rows.get("digest", ""))

    def digest_at(self, seq: int) -> str | None:
        """The digest of operation `seq` (None when the log no longer has it); 0: ``""``."""
        if seq == 0:
            return ""
        applied, digest = self._applied()
        if seq == applied:
            return digest
        row = self._db.execute("SELECT digest FROM ops WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    # -- writes ----------------------------------------------------------------------------

    def apply(self, seq: int, digest: str, blob: bytes) -> dict[str, Any]:
        """Applies operation `seq`. Answers ``{"status": "ok", "result": ...}``, ``"duplicate"``
        (applied already), ``"gap"`` (an earlier one is missing: catch up first) or ``"error"``
        with the exception (then the operation is not applied and not logged)."""
        with self._lock:
            applied, last = self._applied()
            if seq <= applied:
                same = self.digest_at(seq)
                return {"status": "duplicate" if same in (digest, None) else "diverged", "applied": applied}
            if seq != applied + 1:
                return {"status": "gap", "applied": applied, "digest": last}
            try:
                result = self._run(pickle.loads(blob))
            except Exception as error:  # the router tells a user's error from a replica's fault
                return {"status": "error", "error": error}
            self._log(seq, digest, blob)
            return {"status": "ok", "result": result}

    def _run(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        collection = self._collection
        if kind == "write":
            _, ids, matrix, datas, images, if_absent = op
            return sorted(collection.write_prepared(ids, matrix, datas, images, if_absent=if_absent))
        if kind == "update":
            return collection.update(op[1])
        if kind == "remove":
            return collection.remove(op[1])
        if kind == "remove_filter":
            return collection.remove(filter=op[1])
        raise InternalError(f"unknown replica operation {kind!r}")

    def _log(self, seq: int, digest: str, blob: bytes) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT OR REPLACE INTO ops (seq, digest, op) VALUES (?, ?, ?)", (seq, digest, blob))
            self._db.executemany(
                "INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", [("applied", seq), ("digest", digest)]
            )
            total = 0
            cutoff = None
            for row_seq, size in self._db.execute("SELECT seq, length(op) FROM ops ORDER BY seq DESC"):
                total += int(size)
                if total > self._log_bytes:
                    cutoff = int(row_seq)
                    break
            if cutoff is not None:
                self._db.execute("DELETE FROM ops WHERE seq <= ?", (cutoff,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def ops_after(self, seq: int, max_bytes: int = 64 * 2**20) -> list[tuple[int, str, bytes]] | None:
        """Logged operations after `seq` (up to about `max_bytes`), oldest first; None when the
        log no longer reaches back to ``seq + 1`` (then copy the records whole)."""
        applied, _ = self._applied()
        if seq >= applied:
            return []
        first = self._db.execute("SELECT min(seq) FROM ops").fetchone()[0]
        if first is None or int(first) > seq + 1:
            return None
        out: list[tuple[int, str, bytes]] = []
        size = 0
        for row in self._db.execute("SELECT seq, digest, op FROM ops WHERE seq > ? ORDER BY seq", (seq,)):
            out.append((int(row[0]), str(row[1]), bytes(row[2])))
            size += len(row[2])
            if size >= max_bytes:
                break
        return out

    def reset(self) -> None:
        """Empties this replica (before a whole copy from a healthy one)."""
        with self._lock:
            self._engine.drop_collection(self._config.name)
            found = create_like(self._engine, self._config)
            assert isinstance(found, LocalCollection)
            self._collection = found
            self._db.executescript("DELETE FROM ops; DELETE FROM state;")

    def export(
        self, after: int, limit: int = 1024
    ) -> tuple[int, list[str], np.ndarray, list[dict[str, Any]], list[Any]]:
        """A page of whole records (see :meth:`LocalCollection.export`)."""
        return self._collection.export(after, limit)

    def load(self, ids: list[str], matrix: np.ndarray, datas: list[dict[str, Any]], images: list[Any]) -> None:
        """Writes copied records (a whole copy), outside the operation log."""
        with self._lock:
            self._collection.write_prepared(ids, matrix, datas, images)

    def set_applied(self, seq: int, digest: str) -> None:
        """After a whole copy: this replica is now as far as its source was."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", [("applied", seq), ("digest", digest)]
            )

    # -- reads -----------------------------------------------------------------------------

    def search(self, query: np.ndarray, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._collection.search(query, **options)

    def search_vectors(
        self, queries: np.ndarray, limit: int, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        found = self._collection.search_vectors(queries, limit, **options)
        return found.keys, found.distances, found.counts, found.plans

    def ids_of_keys(self, keys: Sequence[int]) -> dict[int, str]:
        return self._collection._ids_of_keys(keys)

    def ids_matching(self, filter: Mapping[str, Any]) -> list[str]:
        keys = [int(k) for k in self._collection._filter_keys(filter)]
        return list(self._collection._ids_of_keys(keys).values())

    def rank(self, ids: Sequence[str], query: np.ndarray, fields: Sequence[str] | None) -> list[dict[str, Any]]:
        return self._collection.rank(ids, query, fields=fields)

    def get(self, ids: Sequence[str], fields: Sequence[str] | None) -> list[dict[str, Any]]:
        return self._collection.get(ids, fields=fields)

    def get_vector(self, id_: str) -> np.ndarray:
        return self._collection.get_vector(id_)

    def get_image(self, id_: str) -> bytes:
        return self._collection.get_image(id_)

    def count(self, filter: Mapping[str, Any] | None) -> int:
        return self._collection.count(filter)

    def records(
        self, filter: Mapping[str, Any] | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        page = self._collection.records(filter=filter, limit=min(limit, MAX_LIMIT), cursor=cursor)
        return page.records, page.cursor

    def stats(self) -> dict[str, Any]:
        stats = self._collection.stats()
        stats["memory_bytes"] = self._collection.memory_usage()
        stats["applied"] = self._applied()[0]
        return stats

    # -- maintenance -----------------------------------------------------------------------

    def snapshot(self) -> None:
        self._collection.snapshot()

    def compact(self, threads: int | None) -> None:
        self._collection.compact(threads)

    def close(self) -> None:
        with self._lock:
            self._engine.close()
            self._db.close()

    def destroy(self) -> None:
        """Closes this replica and deletes its folder (the collection is dropped)."""
        self.close()
        shutil.rmtree(self._folder, ignore_errors=True)
