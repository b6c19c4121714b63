"""Sharded collections on a Ray cluster (``pip install 'lookalike[distributed]'``).

A collection created with ``shards=N, replicas=R`` spreads its records over N shards by a
stable hash of `_id`; each shard is R Ray actors on different nodes, each holding an ordinary
local collection on its node's disk. The :class:`ShardedCollection` router answers every call
of a local collection: searches are scattered to the shards and merged exactly, writes go to
every live replica of a shard and are acknowledged once durable on all of them, and replicas
that were down catch up from a healthy one. See ARCHITECTURE.md, "Scale-out".

Example::

    from lookalike import Engine
    from lookalike.distributed import RayCluster

    engine = Engine("./data", cluster=RayCluster("auto"))
    photos = engine.create_collection("photos", type="generic", shards=4, replicas=2)
"""

from lookalike.distributed.cluster import RayCluster
from lookalike.distributed.ingest import IngestReport, bulk_insert
from lookalike.distributed.routing import shard_of
from lookalike.distributed.sharded import ShardedCollection

__all__ = ["RayCluster", "ShardedCollection", "bulk_insert", "IngestReport", "shard_of"]
