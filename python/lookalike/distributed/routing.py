"""Which shard holds a record: a stable hash of its `_id`, the same in every process and
every Python (``hash()`` is salted per process; BLAKE2b is not)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["shard_of", "split_by_shard"]


def shard_of(id_: str, shards: int) -> int:
    """The shard of an `_id`: the first 8 bytes of its BLAKE2b digest, modulo `shards`."""
    digest = hashlib.blake2b(id_.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def split_by_shard(ids: Sequence[str], shards: int) -> list[list[int]]:
    """Positions of `ids`, per shard (in their order)."""
    out: list[list[int]] = [[] for _ in range(shards)]
    for position, id_ in enumerate(ids):
        out[shard_of(id_, shards)].append(position)
    return out
