"""The router of a sharded collection: the same interface as a local collection, answered by
the shards' replicas (Ray actors, see ``replica.py``).

Routing: a record lives on shard ``shard_of(_id, shards)``. Reads of given ids go to the
owning shard; searches go to every shard (scatter-gather) and are merged exactly as one
collection ranks them: each shard answers its best ``offset + limit`` hits (or groups), and the
merge keeps the global best, by distance then `_id`.

Writes: the router checks and embeds a batch once (image embedding runs as Ray tasks spread
over the cluster, see ``ingest.py``), numbers it per shard and sends it to every live replica
of the shard. A write is acknowledged when it is durable on every replica that is up; a replica
that is down or fails it is marked *stale*: it serves no reads until it caught up from a
healthy replica (by replaying that replica's operation log, or by a whole copy). The last
acknowledged number of each shard is kept in ``router.db`` next to the manifest, so a router
that restarts knows which replicas are behind. When every replica of a shard is down, that
shard's reads and writes raise :class:`UnavailableError`; nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import pickle
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from lookalike import filters as filters_module
from lookalike.distributed.routing import shard_of, split_by_shard
from lookalike.engine import (
    MAX_LIMIT,
    NO_KEY,
    SHARDS_FILE,
    Collection,
    CollectionConfig,
    Engine,
    RecordPage,
    SearchBatch,
    _check_limit,
    _check_offset,
)
from lookalike.errors import (
    ClosedError,
    InternalError,
    InvalidInputError,
    LookalikeError,
    RecordNotFoundError,
    UnavailableError,
    UnsupportedError,
)
from lookalike.ingest import Fetch
from lookalike.sdk.types import CollectionType
from lookalike.storage import dumps

if TYPE_CHECKING:
    from lookalike.distributed.cluster import RayCluster

__all__ = ["ShardedCollection"]

logger = logging.getLogger("lookalike.distributed")

UP, STALE, DOWN = "up", "stale", "down"


class _Died(Exception):
    """A replica did not answer (its process or node is gone, or it timed out)."""


@dataclass
class _Replica:
    shard: int
    index: int
    folder: str
    actor: Any = None
    state: str = DOWN
    node_id: str | None = None
    node_ip: str | None = None

    @property
    def label(self) -> str:
        return f"s{self.shard}-r{self.index}"


@dataclass
class _Shard:
    index: int
    replicas: list[_Replica]
    #: The last operation number given out; `acked`: the last one acknowledged (kept on disk).
    seq: int = 0
    acked: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    turn: itertools.count[int] = field(default_factory=itertools.count)


class ShardedCollection(Collection):
    """A collection spread over the shards of a Ray cluster. Get one from an :class:`Engine`
    made with ``cluster=RayCluster(...)`` and ``create_collection(..., shards=N, replicas=R)``;
    it answers like a :class:`~lookalike.engine.LocalCollection`."""

    def __init__(
        self,
        cluster: RayCluster,
        engine: Engine,
        folder: Path,
        config: CollectionConfig,
        type_: CollectionType | None,
        root: Path,
    ) -> None:
        super().__init__(config, type_, engine.embedder_for(type_))
        self._cluster = cluster
        self._engine = engine
        self._folder = folder
        manifest = msgspec.json.decode((folder / SHARDS_FILE).read_bytes())
        self.shards = int(manifest["shards"])
        self.replicas = int(manifest["replicas"])
        placement: list[list[dict[str, Any]]] = manifest.get("placement") or []
        if not placement:  # a new collection: each replica of a shard needs a node of its own
            nodes = len(cluster.alive_nodes())
            if nodes < self.replicas:
                raise UnsupportedError(
                    f"replicas={self.replicas} needs as many Ray nodes with CPUs; the cluster has {nodes}"
                )
        self._shards = [
            _Shard(i, [_Replica(i, j, str(root / config.name / f"s{i}-r{j}")) for j in range(self.replicas)])
            for i in range(self.shards)
        ]
        self._closed = False
        self._db = sqlite3.connect(folder / "router.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS acked (shard INTEGER PRIMARY KEY, seq INTEGER NOT NULL)")
        self._db_lock = threading.Lock()
        for shard_index, seq in self._db.execute("SELECT shard, seq FROM acked").fetchall():
            if 0 <= shard_index < self.shards:
                self._shards[shard_index].acked = self._shards[shard_index].seq = int(seq)
        for shard in self._shards:
            for replica in shard.replicas:
                recorded = placement[shard.index][replica.index] if shard.index < len(placement) else None
                if recorded:
                    replica.node_id, replica.node_ip = recorded.get("node_id"), recorded.get("node_ip")
        self._heal_lock = threading.Lock()
        self._start_replicas(first=True)
        self._stop = threading.Event()
        self._healer = threading.Thread(target=self._heal_loop, name=f"lookalike-heal-{config.name}", daemon=True)
        self._healer.start()

    # -- placement and health --------------------------------------------------------------

    def _manifest(self) -> None:
        placement = [[{"node_id": r.node_id, "node_ip": r.node_ip} for r in s.replicas] for s in self._shards]
        manifest = {"shards": self.shards, "replicas": self.replicas, "placement": placement}
        temporary = self._folder / (SHARDS_FILE + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(msgspec.json.encode(manifest))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._folder / SHARDS_FILE)

    def _start_replicas(self, *, first: bool = False) -> None:
        """Starts the replicas that are down on a suitable node, then catches up the stale."""
        nodes = self._cluster.alive_nodes()
        load: dict[str, int] = {n.node_id: 0 for n in nodes}
        for shard in self._shards:
            for replica in shard.replicas:
                if replica.state != DOWN and replica.node_id in load:
                    load[replica.node_id] += 1
        started: list[tuple[_Replica, Any]] = []
        for shard in self._shards:
            for replica in shard.replicas:
                if replica.state != DOWN:
                    continue
                siblings = {r.node_id for r in shard.replicas if r is not replica and r.state != DOWN}
                candidates = [n for n in nodes if n.node_id not in siblings]
                if not candidates:
                    continue  # two replicas of a shard on one node would not protect it
                recorded = [n for n in candidates if n.node_id == replica.node_id]
                same_host = [n for n in candidates if n.node_ip == replica.node_ip]
                chosen = (recorded or same_host or sorted(candidates, key=lambda n: (load[n.node_id], n.node_id)))[0]
                if replica.node_id not in (None, chosen.node_id):
                    logger.info("replica %s moves to node %s", replica.label, chosen.node_id[:12])
                if replica.actor is not None:
                    self._cluster.kill(replica.actor)
                replica.actor = self._cluster.start_replica(replica.folder, self.config, chosen.node_id)
                replica.node_id, replica.node_ip = chosen.node_id, chosen.node_ip
                replica.state = STALE
                load[chosen.node_id] += 1
                started.append((replica, replica.actor.ping.remote()))
        for replica, ref in started:
            try:
                self._get(ref, timeout=self._cluster.start_timeout)
            except _Died as error:
                logger.warning("replica %s did not start: %s", replica.label, error)
                self._down(replica)
            except LookalikeError as error:  # its folder is locked or damaged
                logger.warning("replica %s cannot open its folder: %s", replica.label, error)
                self._down(replica)
        if started or first:
            self._manifest()
        for shard in self._shards:
            self._sync(shard)

    def _down(self, replica: _Replica) -> None:
        if replica.state != DOWN:
            logger.warning("replica %s of %s is down", replica.label, self.config.name)
        replica.state = DOWN
        if replica.actor is not None:
            self._cluster.kill(replica.actor)
            replica.actor = None

    def _sync(self, shard: _Shard) -> None:
        """Finds the shard's most advanced live replica and catches the others up from it."""
        with shard.lock:
            live: list[tuple[_Replica, dict[str, Any]]] = []
            for replica in shard.replicas:
                if replica.state == DOWN or replica.actor is None:
                    continue
                try:
                    live.append((replica, self._get(replica.actor.ping.remote())))
                except (_Died, LookalikeError):
                    self._down(replica)
            if not live:
                return
            source, info = max(live, key=lambda item: (item[1]["applied"], item[0].state == UP))
            if info["applied"] < shard.acked:
                for replica, _ in live:
                    replica.state = STALE
                logger.error(
                    "shard %d of %s: every replica holding its writes up to %d is down; its live replicas "
                    "reach %d and serve nothing until one comes back",
                    shard.index,
                    self.config.name,
                    shard.acked,
                    info["applied"],
                )
                return
            shard.seq = max(shard.seq, int(info["applied"]))
            source.state = UP
            for replica, state in live:
                if replica is source:
                    continue
                try:
                    self._catch_up(replica, state, source, info)
                    replica.state = UP
                except (_Died, LookalikeError) as error:
                    logger.warning("replica %s cannot catch up: %s", replica.label, error)
                    replica.state = STALE

    def _catch_up(self, replica: _Replica, state: dict[str, Any], source: _Replica, info: dict[str, Any]) -> None:
        applied = int(state["applied"])
        target = int(info["applied"])
        if applied == target and state["digest"] == info["digest"]:
            return
        shared = self._get(source.actor.digest_at.remote(applied)) if applied <= target else None
        while applied < target and shared == state["digest"]:
            ops = self._get(source.actor.ops_after.remote(applied))
            if not ops:
                break
            for seq, digest, blob in ops:
                answer = self._get(replica.actor.apply.remote(seq, digest, blob))
                if answer["status"] == "error":
                    raise answer["error"]
                if answer["status"] not in ("ok", "duplicate"):
                    raise InternalError(f"replica {replica.label} answered {answer['status']} while catching up")
                applied, state = seq, {"digest": digest}
        if applied == target:
            logger.info("replica %s caught up to %d from %s", replica.label, target, source.label)
            return
        # The log does not reach back far enough, or the histories differ: copy it whole.
        logger.info("replica %s: whole copy from %s (%d operations)", replica.label, source.label, target)
        self._get(replica.actor.reset.remote())
        after = -1
        while True:
            after, ids, rows, datas, images = self._get(source.actor.export.remote(after, 2048))
            if not ids:
                break
            self._get(replica.actor.load.remote(ids, rows, datas, images))
        self._get(replica.actor.set_applied.remote(target, info["digest"]))

    def heal(self) -> dict[str, list[str]]:
        """Restarts the replicas that are down (where a node can take them) and catches up the
        stale; runs every few seconds by itself. Returns each replica's state."""
        with self._heal_lock:
            self._check_open()
            for shard in self._shards:
                for replica in shard.replicas:
                    if replica.state != DOWN and replica.actor is not None:
                        try:
                            self._get(replica.actor.ping.remote())
                        except _Died:
                            self._down(replica)
            self._start_replicas()
            return self.replica_states()

    def replica_states(self) -> dict[str, list[str]]:
        """``{"s0": ["up", "stale"], ...}``: the state of each replica of each shard."""
        return {f"s{s.index}": [r.state for r in s.replicas] for s in self._shards}

    def _heal_loop(self) -> None:
        while not self._stop.wait(self._cluster.heal_interval):
            if all(r.state == UP for s in self._shards for r in s.replicas):
                continue
            try:
                self.heal()
            except Exception:  # the next round tries again
                logger.exception("healing %s failed", self.config.name)

    # -- calling replicas ------------------------------------------------------------------

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        """The answer of one replica call: its value, the user's error it raised, or _Died."""
        import ray
        from ray import exceptions as ray_errors

        try:
            return ray.get(ref, timeout=timeout if timeout is not None else self._cluster.timeout)
        except ray_errors.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, LookalikeError):
                raise cause from None
            raise InternalError(f"a replica failed: {cause!r}") from error
        except (ray_errors.RayActorError, ray_errors.GetTimeoutError, ray_errors.ObjectLostError) as error:
            raise _Died(str(error).splitlines()[0] if str(error) else type(error).__name__) from error

    def _up(self, shard: _Shard) -> list[_Replica]:
        """The shard's up replicas, in round-robin order (reads spread over them)."""
        up = [r for r in shard.replicas if r.state == UP and r.actor is not None]
        if not up:
            raise UnavailableError(
                f"shard {shard.index} of collection {self.config.name!r} has no replica up "
                f"({', '.join(r.state for r in shard.replicas)}); retry once a node is back"
            )
        start = next(shard.turn) % len(up)
        return up[start:] + up[:start]

    def _read(self, shard_index: int, method: str, *args: Any) -> Any:
        shard = self._shards[shard_index]
        for replica in self._up(shard):
            try:
                return self._get(getattr(replica.actor, method).remote(*args))
            except _Died:
                self._down(replica)
        raise UnavailableError(f"shard {shard_index} of collection {self.config.name!r} has no replica up")

    def _scatter(
        self, method: str, args: Callable[[int], tuple[Any, ...]], shards: Iterable[int] | None = None
    ) -> dict[int, Any]:
        """Calls `method` on one up replica of each shard at once; a replica that does not
        answer is marked down and its shard asked again on another."""
        self._check_open()
        wanted = list(range(self.shards)) if shards is None else list(shards)
        pending = []
        for index in wanted:
            replica = self._up(self._shards[index])[0]
            pending.append((index, replica, getattr(replica.actor, method).remote(*args(index))))
        out: dict[int, Any] = {}
        for index, replica, ref in pending:
            try:
                out[index] = self._get(ref)
            except _Died:
                self._down(replica)
                out[index] = self._read(index, method, *args(index))
        return out

    def _apply(self, ops: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        """Applies one operation per shard on every up replica of each; returns each shard's
        result once durable on all of them (see the module's docstring)."""
        self._check_open()
        shards = [self._shards[i] for i in sorted(ops)]
        with contextlib.ExitStack() as stack:
            for shard in shards:
                stack.enter_context(shard.lock)
            sent: list[tuple[_Shard, int, list[tuple[_Replica, Any]]]] = []
            for shard in shards:
                targets = [r for r in shard.replicas if r.state == UP and r.actor is not None]
                if not targets:
                    continue
                blob = pickle.dumps(ops[shard.index], protocol=5)
                digest = hashlib.blake2b(blob, digest_size=8).hexdigest()
                seq = shard.seq + 1
                shard.seq = seq
                sent.append((shard, seq, [(r, r.actor.apply.remote(seq, digest, blob)) for r in targets]))
            results: dict[int, Any] = {}
            failures: list[LookalikeError] = []
            for shard, seq, calls in sent:
                done: list[Any] = []
                errors: list[LookalikeError] = []
                for replica, ref in calls:
                    try:
                        answer = self._get(ref)
                    except _Died:
                        self._down(replica)
                        continue
                    if answer["status"] == "ok":
                        done.append(answer["result"])
                    elif answer["status"] == "error":
                        error = answer["error"]
                        errors.append(error if isinstance(error, LookalikeError) else InternalError(repr(error)))
                        replica.state = STALE
                    else:  # a gap or another history: it needs catching up
                        replica.state = STALE
                if done:
                    results[shard.index] = done[0]
                    shard.acked = seq
                else:
                    shard.seq = seq - 1  # applied nowhere that answered: the number is free again
                    failures.append(
                        errors[0]
                        if errors
                        else UnavailableError(f"shard {shard.index} of {self.config.name!r}: no replica took the write")
                    )
            if results:
                with self._db_lock:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO acked (shard, seq) VALUES (?, ?)",
                        [(i, self._shards[i].acked) for i in results],
                    )
        missing = [i for i in ops if i not in results]
        if missing:
            if not failures:
                failures.append(UnavailableError(f"shard {missing[0]} of {self.config.name!r} has no replica up"))
            error = failures[0]
            if results:  # some shards took their part: say so, the caller can retry the rest
                error.args = (f"{error} (shards {sorted(results)} took their part of the batch, {missing} did not)",)
            raise error
        if any(r.state != UP for s in shards for r in s.replicas):
            self._wake_healer()
        return results

    def _wake_healer(self) -> None:
        """A replica just went down or stale: heal now (in the background), not in a while."""
        if self._cluster.heal_on_failure and not self._heal_lock.locked():
            threading.Thread(target=self._heal_quietly, name=f"lookalike-heal-{self.name}", daemon=True).start()

    def _heal_quietly(self) -> None:
        try:
            if not self._closed:
                self.heal()
        except Exception:
            logger.exception("healing %s failed", self.config.name)

    # -- basics ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"collection {self.config.name!r} is closed")

    def __len__(self) -> int:
        return sum(self._scatter("count", lambda _: (None,)).values())

    def memory_usage(self) -> int:
        total = 0
        for shard in self._shards:
            for replica in shard.replicas:
                if replica.state == UP and replica.actor is not None:
                    try:
                        total += int(self._get(replica.actor.stats.remote())["memory_bytes"])
                    except _Died:
                        self._down(replica)
        return total

    def stats(self) -> dict[str, Any]:
        per_shard: list[dict[str, Any]] = []
        counters: dict[str, int] = {}
        records = 0
        for shard in self._shards:
            replicas: list[dict[str, Any]] = []
            counted = False
            for replica in shard.replicas:
                entry: dict[str, Any] = {"replica": replica.index, "state": replica.state, "node_id": replica.node_id}
                if replica.state != DOWN and replica.actor is not None:
                    try:
                        found = self._get(replica.actor.stats.remote())
                        entry.update(
                            records=found["records"], applied=found["applied"], memory_bytes=found["memory_bytes"]
                        )
                        if replica.state == UP and not counted:
                            counted = True
                            records += int(found["records"])
                            for key, value in found.items():
                                if isinstance(value, int) and not isinstance(value, bool) and key != "records":
                                    counters[key] = counters.get(key, 0) + value
                    except (_Died, LookalikeError):
                        entry["state"] = "unreachable"
                replicas.append(entry)
            per_shard.append({"shard": shard.index, "acked": shard.acked, "replicas": replicas})
        counters.pop("applied", None)
        counters.pop("memory_bytes", None)
        return {
            **counters,
            "name": self.config.name,
            "type": self.config.type,
            "ndim": self.config.ndim,
            "metric": self.config.metric,
            "precision": self.config.precision,
            "records": records,
            "views": self._views,
            "query_kinds": self.query_kinds,
            "shards": self.shards,
            "replicas": self.replicas,
            "placement": per_shard,
            **(
                {"type_version": self.config.type_version, "type_config": dict(self.config.type_config)}
                if self.type is not None
                else {}
            ),
        }

    # -- writes ----------------------------------------------------------------------------

    def _prepare(
        self, batch: Sequence[Any], *, fetch: Fetch | None, atomic: bool
    ) -> tuple[list[tuple[str, dict[str, Any], np.ndarray, bytes | None]], list[Any]]:
        """Checks a batch here and embeds its images on the cluster (see ``ingest.py``)."""
        from lookalike.distributed.ingest import embed_on_cluster

        if self._embedder is None or fetch is not None or len(batch) < 2:
            return super()._prepare(batch, fetch=fetch, atomic=atomic)
        return embed_on_cluster(self, batch, atomic=atomic)

    def _write(
        self,
        ids: list[str],
        matrix: np.ndarray,
        datas: list[dict[str, Any]],
        images: Sequence[bytes | None] | None = None,
        *,
        if_absent: bool = False,
    ) -> set[str]:
        ops: dict[int, tuple[Any, ...]] = {}
        for index, positions in enumerate(split_by_shard(ids, self.shards)):
            if positions:
                ops[index] = (
                    "write",
                    [ids[p] for p in positions],
                    np.ascontiguousarray(matrix[positions]),
                    [datas[p] for p in positions],
                    None if images is None else [images[p] for p in positions],
                    if_absent,
                )
        skipped: set[str] = set()
        for result in self._apply(ops).values():
            skipped.update(result)
        return skipped

    def update(self, records: Iterable[Mapping[str, Any]]) -> int:
        self._check_open()
        batch = [dict(record) if isinstance(record, Mapping) else record for record in records]
        changes = self._checked_updates(batch)
        if not changes:
            return 0
        ids = [id_ for id_, _, _ in changes]
        found = {hit["_id"] for hit in self.get(ids, fields=[])}
        missing = [id_ for id_ in ids if id_ not in found]
        if missing:
            raise RecordNotFoundError(f"no record with _id {missing[0]!r} (nothing was updated)")
        ops = {
            index: ("update", [batch[p] for p in positions])
            for index, positions in enumerate(split_by_shard(ids, self.shards))
            if positions
        }
        return sum(self._apply(ops).values())

    def remove(self, ids: Sequence[str] | None = None, *, filter: Mapping[str, Any] | None = None) -> int:
        self._check_open()
        if (ids is None) == (filter is None):
            raise InvalidInputError("remove takes either ids or filter")
        if filter is not None:
            filters_module.parse(filter)  # a bad filter fails here, before any shard
            return sum(self._apply({i: ("remove_filter", dict(filter)) for i in range(self.shards)}).values())
        if isinstance(ids, str):
            raise InvalidInputError("remove takes a list of ids, not a single string")
        assert ids is not None
        checked = [self._check_id(id_, position) for position, id_ in enumerate(ids)]
        ops = {
            index: ("remove", [checked[p] for p in positions])
            for index, positions in enumerate(split_by_shard(checked, self.shards))
            if positions
        }
        return sum(self._apply(ops).values()) if ops else 0

    def compact(self, threads: int | None = None) -> None:
        self._each_replica("compact", threads)

    def snapshot(self) -> None:
        self._each_replica("snapshot")

    def _each_replica(self, method: str, *args: Any) -> None:
        self._check_open()
        calls = [
            (replica, getattr(replica.actor, method).remote(*args))
            for shard in self._shards
            for replica in shard.replicas
            if replica.state == UP and replica.actor is not None
        ]
        for replica, ref in calls:
            try:
                self._get(ref)
            except _Died:
                self._down(replica)

    # -- reads -----------------------------------------------------------------------------

    def get(self, ids: Sequence[str], *, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        self._check_open()
        if isinstance(ids, str):
            raise InvalidInputError("get takes a list of ids, not a single string")
        checked = [self._check_id(i, p) for p, i in enumerate(ids)]
        parts = split_by_shard(checked, self.shards)
        wanted = [i for i, positions in enumerate(parts) if positions]
        answers = self._scatter("get", lambda i: ([checked[p] for p in parts[i]], fields), wanted)
        found = {hit["_id"]: hit for hits in answers.values() for hit in hits}
        return [found[id_] for id_ in checked if id_ in found]

    def get_vector(self, id: str) -> np.ndarray:
        self._check_open()
        checked = self._check_id(id, 0)
        return np.asarray(self._read(shard_of(checked, self.shards), "get_vector", checked))

    def get_image(self, id: str) -> bytes:
        self._check_open()
        if not self.config.store_images:
            raise UnsupportedError(f"collection {self.name!r} does not store images (store_images is off)")
        checked = self._check_id(id, 0)
        data: bytes = self._read(shard_of(checked, self.shards), "get_image", checked)
        return data

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        if filter is not None:
            filters_module.parse(filter)
        return sum(self._scatter("count", lambda _: (None if filter is None else dict(filter),)).values())

    def records(
        self, *, filter: Mapping[str, Any] | None = None, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        """A page of records, shard after shard (each in its key order); the cursor names the
        shard and the place in it."""
        self._check_open()
        limit = _check_limit(limit)
        filters_module.parse(filter)
        shard, inner = 0, None
        if cursor is not None:
            head, _, rest = cursor.partition(".")
            if not head.isdigit() or not 0 <= int(head) < self.shards:
                raise InvalidInputError(f"invalid cursor {cursor!r}")
            shard, inner = int(head), (rest or None)
        out: list[dict[str, Any]] = []
        while shard < self.shards:
            page, following = self._read(shard, "records", filter, limit - len(out), inner)
            out.extend(page)
            if following is not None:
                if len(out) >= limit:
                    return RecordPage(out, f"{shard}.{following}")
                inner = following
                continue
            shard, inner = shard + 1, None
            if len(out) >= limit:
                more = shard < self.shards
                return RecordPage(out, f"{shard}." if more else None)
        return RecordPage(out, None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self.records(limit=1000, cursor=cursor)
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor

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
        self._check_open()
        limit = _check_limit(limit)
        offset = _check_offset(offset)
        if offset + limit > MAX_LIMIT:
            raise InvalidInputError(f"offset + limit must be at most {MAX_LIMIT} on a sharded collection")
        query = self.query_vector(
            vector, id=id, record=record, text=text, text_weight=text_weight, colors=colors, fetch=fetch
        )[0]
        flt = None if filter is None else dict(filter)
        filters_module.parse(flt)
        if group_by is not None:
            return self._search_grouped(query, limit, offset, flt, group_by, group_size, fields, ef, exact)
        options = {"limit": offset + limit, "filter": flt, "fields": fields, "ef": ef, "exact": exact}
        answers = self._scatter("search", lambda _: (query, options))
        hits = sorted(itertools.chain.from_iterable(answers.values()), key=_rank_key)
        return hits[offset : offset + limit]

    def _search_grouped(
        self,
        query: np.ndarray,
        limit: int,
        offset: int,
        flt: dict[str, Any] | None,
        group_by: str,
        group_size: int,
        fields: Sequence[str] | None,
        ef: int | None,
        exact: bool,
    ) -> list[dict[str, Any]]:
        """Groups across shards. Each shard answers its best ``offset + limit`` groups (with
        their best `group_size` hits): a group in the global top is in the top of the shard
        that holds its best hit. A selected group may also have hits on shards where it did not
        make the top; those shards (only those that listed a full page) are asked for just
        these groups, by a filter on the product id."""
        self._check_grouping(group_by, group_size)
        want = offset + limit
        options = {
            "limit": want,
            "filter": flt,
            "group_by": group_by,
            "group_size": group_size,
            "ef": ef,
            "exact": exact,
        }
        answers = self._scatter("search", lambda _: (query, options))
        by_shard: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        raw: dict[tuple[str, str], Any] = {}
        for index, hits in answers.items():
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for hit in hits:
                key, value = self._group_key(hit)
                groups.setdefault(key, []).append(hit)
                if value is not None:
                    raw[key] = value
            by_shard[index] = groups
        best: dict[tuple[str, str], tuple[float, str]] = {}
        for groups in by_shard.values():
            for key, hits in groups.items():
                first = min(_rank_key(hit) for hit in hits)
                if key not in best or first < best[key]:
                    best[key] = first
        selected = sorted(best, key=lambda key: (best[key], key))[offset : offset + limit]
        extra: dict[int, list[tuple[str, str]]] = {}
        for index, groups in by_shard.items():
            if len(groups) < want:
                continue  # this shard listed every group it has
            missing = [key for key in selected if key not in groups and key in raw]
            if missing:
                extra[index] = missing
        if extra:
            pid = self.config.product_id_field
            assert pid is not None

            def narrowed(index: int) -> tuple[Any, ...]:
                only = {pid: {"$in": [raw[key] for key in extra[index]]}}
                narrow = {**options, "limit": len(extra[index]), "filter": {"$and": [flt, only]} if flt else only}
                return (query, narrow)

            for index, hits in self._scatter("search", narrowed, list(extra)).items():
                for hit in hits:
                    key, _ = self._group_key(hit)
                    by_shard[index].setdefault(key, []).append(hit)
        out: list[dict[str, Any]] = []
        for key in selected:
            members = sorted((hit for groups in by_shard.values() for hit in groups.get(key, [])), key=_rank_key)
            out.extend(_project(hit, fields) for hit in members[:group_size])
        return out

    def _group_key(self, hit: Mapping[str, Any]) -> tuple[tuple[str, str], Any]:
        """A hit's group: ``("g", value)`` with the product id's value, or ``("r", _id)`` for a
        record without one (a group of its own)."""
        assert self.config.product_id_field is not None
        values = filters_module.values_at(hit, self.config.product_id_field)
        if not values or values[0] is None:
            return ("r", str(hit["_id"])), None
        return ("g", dumps(values[0])), values[0]

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
        self._check_open()
        if isinstance(ids, str):
            raise InvalidInputError("rank takes a list of ids, not a single string")
        query = self.query_vector(vector, record=record, text=text, text_weight=text_weight, colors=colors, fetch=fetch)
        wanted = list(dict.fromkeys(self._check_id(i, p) for p, i in enumerate(ids)))
        parts = split_by_shard(wanted, self.shards)
        shards = [i for i, positions in enumerate(parts) if positions]
        answers = self._scatter("rank", lambda i: ([wanted[p] for p in parts[i]], query[0], fields), shards)
        order = {id_: position for position, id_ in enumerate(wanted)}
        hits = itertools.chain.from_iterable(answers.values())
        return sorted(hits, key=lambda hit: (hit["distance"], order[hit["_id"]]))

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
        """Batch search on every shard; keys of the batch are ``local key * shards + shard``."""
        self._check_open()
        limit = _check_limit(limit)
        offset = _check_offset(offset)
        matrix = self._query_batch(queries)
        options = {"filter": None if filter is None else dict(filter), "ef": ef, "exact": exact, "threads": threads}
        answers = self._scatter("search_vectors", lambda _: (matrix, offset + limit, options))
        n = matrix.shape[0]
        all_keys = []
        all_distances = []
        plans: list[str] = []
        for index in range(self.shards):
            keys, distances, counts, shard_plans = answers[index]
            keys = np.asarray(keys, dtype=np.uint64)
            distances = np.asarray(distances, dtype=np.float32).copy()
            valid = np.arange(keys.shape[1])[None, :] < np.asarray(counts)[:, None]
            global_keys = np.where(valid, keys * np.uint64(self.shards) + np.uint64(index), NO_KEY)
            distances[~valid] = np.inf
            all_keys.append(global_keys)
            all_distances.append(distances)
            plans = plans or list(shard_plans)
        keys = np.concatenate(all_keys, axis=1) if all_keys else np.zeros((n, 0), dtype=np.uint64)
        distances = np.concatenate(all_distances, axis=1) if all_distances else np.zeros((n, 0), dtype=np.float32)
        order = np.argsort(distances, axis=1, kind="stable")[:, offset : offset + limit]
        out_keys = np.full((n, limit), NO_KEY, dtype=np.uint64)
        out_distances = np.full((n, limit), np.inf, dtype=np.float32)
        picked_keys = np.take_along_axis(keys, order, axis=1)
        picked_distances = np.take_along_axis(distances, order, axis=1)
        out_keys[:, : picked_keys.shape[1]] = picked_keys
        out_distances[:, : picked_distances.shape[1]] = picked_distances
        counts = np.isfinite(out_distances).sum(axis=1).astype(np.uint32)
        return SearchBatch(out_keys, out_distances, counts, plans, self)

    def _ids_of_keys(self, keys: Sequence[int]) -> dict[int, str]:
        by_shard: dict[int, list[int]] = {}
        for key in keys:
            by_shard.setdefault(int(key) % self.shards, []).append(int(key) // self.shards)
        answers = self._scatter("ids_of_keys", lambda i: (by_shard[i],), list(by_shard))
        return {local * self.shards + index: id_ for index, found in answers.items() for local, id_ in found.items()}

    def near_duplicates(
        self, threshold: float | None = None, *, filter: Mapping[str, Any] | None = None, neighbours: int = 10
    ) -> list[list[str]]:
        """As for a local collection: every record's nearest neighbours on every shard, within
        `threshold`, linked into groups."""
        self._check_open()
        threshold = self._duplicate_threshold(threshold, neighbours)
        members: set[str] | None = None
        if filter is not None:
            members = set(
                itertools.chain.from_iterable(self._scatter("ids_matching", lambda _: (dict(filter),)).values())
            )
        parent: dict[str, str] = {}

        def root(id_: str) -> str:
            while parent.get(id_, id_) != id_:
                parent[id_] = parent.get(parent[id_], parent[id_])
                id_ = parent[id_]
            return id_

        width = self.config.ndim // 8 if self.config.precision == "binary" else self.config.ndim
        for index in range(self.shards):
            after = -1
            while True:
                after, ids, rows, _datas, _images = self._read(index, "export", after, 2048)
                if not ids:
                    break
                keep = [p for p, id_ in enumerate(ids) if members is None or id_ in members]
                if not keep:
                    continue
                queries = np.asarray(rows)[keep].reshape(len(keep), self._views, width)[:, 0, :]
                found = self.search_vectors(queries, neighbours + 1, filter=filter)
                counts = [int(c) for c in found.counts]
                names = self._ids_of_keys([int(k) for row, c in zip(found.keys, counts, strict=True) for k in row[:c]])
                for row, position in enumerate(keep):
                    me = ids[position]
                    for key, distance in zip(
                        found.keys[row][: counts[row]], found.distances[row][: counts[row]], strict=True
                    ):
                        other = names.get(int(key))
                        if other is None or other == me or float(distance) > threshold:
                            continue
                        a, b = root(me), root(other)
                        if a != b:
                            parent[max(a, b)] = min(a, b)
        groups: dict[str, set[str]] = {}
        for id_ in list(parent):
            groups.setdefault(root(id_), set()).add(id_)
        out = [sorted(ids | {key}) for key, ids in groups.items()]
        out = [ids for ids in out if len(ids) > 1]
        out.sort(key=lambda ids: (-len(ids), ids[0]))
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, *, snapshot: bool = True) -> None:
        """Stops the replicas (each snapshots its index first) and closes the router."""
        if self._closed:
            return
        self._stop.set()
        with self._heal_lock:  # a heal under way finishes first
            self._closed = True
        self._healer.join()
        calls = [
            (replica, replica.actor.close.remote())
            for shard in self._shards
            for replica in shard.replicas
            if replica.actor is not None
        ]
        for replica, ref in calls:
            with contextlib.suppress(Exception):
                self._get(ref)
            self._cluster.kill(replica.actor)
            replica.actor = None
        with self._db_lock:
            self._db.close()

    def destroy(self) -> None:
        """Deletes every replica's data (dropping the collection); replicas that are down keep
        their folder, which nothing opens again."""
        self._stop.set()
        with self._heal_lock:
            self._closed = True
        self._healer.join()
        for shard in self._shards:
            for replica in shard.replicas:
                if replica.actor is None:
                    continue
                try:
                    self._get(replica.actor.destroy.remote())
                except (_Died, LookalikeError) as error:
                    logger.warning("replica %s could not delete its data: %s", replica.label, error)
        for shard in self._shards:
            for replica in shard.replicas:
                if replica.actor is not None:
                    self._cluster.kill(replica.actor)
                    replica.actor = None
        with self._db_lock:
            self._db.close()


def _rank_key(hit: Mapping[str, Any]) -> tuple[float, str]:
    return (float(hit["distance"]), str(hit["_id"]))


_HIT_FIELDS = ("distance", "is_duplicate", "_group")


def _project(hit: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """A hit with only `fields` of its metadata, as a local collection answers it."""
    if fields is None:
        return hit
    out: dict[str, Any] = {"_id": hit["_id"]}
    for name in fields:
        if name in hit and name != "_id" and name not in _HIT_FIELDS:
            out[name] = hit[name]
    for name in _HIT_FIELDS:
        if name in hit:
            out[name] = hit[name]
    return out
