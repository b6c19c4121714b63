"""The connection to a Ray cluster, and where replicas run.

Each replica is a Ray actor pinned to one node (``NodeAffinitySchedulingStrategy``); its data
folder is ``<data>/<collection>/s<shard>-r<replica>`` on that node's disk. The manifest of the
collection (on the router) records each replica's node; a replica whose node is gone restarts,
when the healer next runs, on the same node if it is back, else on the same host, else on the
least loaded node that holds no other replica of its shard, and catches up from a healthy
replica there (a whole copy where the new node has none of its data).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.engine import Collection, CollectionConfig, Engine
from lookalike.errors import InvalidInputError, UnavailableError
from lookalike.sdk.types import CollectionType

__all__ = ["RayCluster", "NodeInfo"]

logger = logging.getLogger("lookalike.distributed")

#: Concurrent calls one replica actor serves (searches run in parallel, the GIL released).
REPLICA_CONCURRENCY = 32


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    node_ip: str
    cpus: float
    gpus: float


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise UnavailableError(
            "sharded collections run on Ray, which is not installed: pip install 'lookalike[distributed]'"
        ) from error
    return ray


class RayCluster:
    """Sharded collections on a Ray cluster: pass it as ``Engine(..., cluster=RayCluster(...))``.

    Args:
        address: the cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
            a Ray instance on this machine. When Ray is connected already, that connection is used.
        data: the folder for replicas' data, the same path on every node (default: the engine's
            folder + ``/shards``). Every node needs lookalike and its collection types installed.
        timeout: seconds to wait for one replica's answer before it counts as down.
        heal_interval: seconds between the healer's rounds (restarting replicas that are down
            and catching up the stale).
        snapshot_every: passed to each replica's engine.
        gpus_per_task: GPUs each embedding task asks for (Ray then places it on a GPU node and
            sets CUDA_VISIBLE_DEVICES for the model); 0: CPUs only.
        log_bytes: bytes of recent writes each replica keeps for others to catch up from
            (default 256 MiB); a replica further behind is copied whole.
        heal_on_failure: heal at once when a replica fails a call (else at the next round).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        data: str | os.PathLike[str] | None = None,
        namespace: str = "lookalike",
        timeout: float = 60.0,
        start_timeout: float = 120.0,
        heal_interval: float = 5.0,
        snapshot_every: int | None = None,
        gpus_per_task: float = 0.0,
        log_bytes: int | None = None,
        heal_on_failure: bool = True,
    ) -> None:
        ray = _ray()
        if timeout <= 0 or start_timeout <= 0 or heal_interval <= 0:
            raise InvalidInputError("timeout, start_timeout and heal_interval must be positive")
        self._owned = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, namespace=namespace, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise UnavailableError(
                    f"cannot connect to the Ray cluster at {address or 'a new local one'}: {error}"
                ) from error
            self._owned = True
        self.address = address
        self.data = Path(data) if data is not None else None
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.heal_interval = heal_interval
        self.snapshot_every = snapshot_every
        if gpus_per_task < 0:
            raise InvalidInputError("gpus_per_task must be 0 or more")
        self.gpus_per_task = gpus_per_task
        self.log_bytes = log_bytes
        self.heal_on_failure = heal_on_failure
        #: The embedding task (``ingest.py``), made on first use.
        self._embed_task: Any = None
        self._cpus: tuple[float, int] | None = None
        from lookalike.distributed.replica import Replica

        self._actor = ray.remote(Replica)

    # -- nodes and actors ------------------------------------------------------------------

    def alive_nodes(self) -> list[NodeInfo]:
        """The nodes that can hold replicas: alive, with CPUs (a head started with
        ``--num-cpus=0`` holds none), in a stable order."""
        out = []
        for node in _ray().nodes():
            resources = node.get("Resources", {})
            if node.get("Alive") and resources.get("CPU", 0) > 0:
                out.append(
                    NodeInfo(
                        node["NodeID"], node["NodeManagerAddress"], resources.get("CPU", 0), resources.get("GPU", 0)
                    )
                )
        return sorted(out, key=lambda n: n.node_id)

    def cpus(self) -> int:
        """The CPUs of the alive nodes (read again at most every 10 s)."""
        now = time.monotonic()
        if self._cpus is None or now - self._cpus[0] > 10:
            self._cpus = (now, int(sum(n.cpus for n in self.alive_nodes())))
        return self._cpus[1]

    def gpus(self) -> int:
        return int(sum(n.gpus for n in self.alive_nodes()))

    def start_replica(self, folder: str, config: CollectionConfig, node_id: str) -> Any:
        """A replica actor on `node_id` (it opens, or creates, its collection in `folder`)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return self._actor.options(
            num_cpus=0,
            max_concurrency=REPLICA_CONCURRENCY,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(folder, config, self.snapshot_every, self.log_bytes)

    def kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):
            _ray().kill(actor, no_restart=True)

    # -- the engine's backend --------------------------------------------------------------

    def open_collection(
        self, engine: Engine, folder: Path, config: CollectionConfig, type_: CollectionType | None
    ) -> Collection:
        from lookalike.distributed.sharded import ShardedCollection

        root = self.data if self.data is not None else engine.path.absolute() / "shards"
        return ShardedCollection(self, engine, folder, config, type_, root)

    def drop_collection(self, collection: Collection) -> None:
        from lookalike.distributed.sharded import ShardedCollection

        if isinstance(collection, ShardedCollection):
            collection.destroy()

    def shutdown(self) -> None:
        """Disconnects from Ray (stops it if this object started it)."""
        if self._owned:
            _ray().shutdown()
            self._owned = False
