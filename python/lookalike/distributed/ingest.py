"""Embedding on the cluster, and bulk ingestion as a Ray job.

Fetching, decoding and embedding images is the costly part of an insert (milliseconds to tens
of milliseconds a record, against microseconds to store it). For a sharded collection it runs
as Ray tasks: a batch is cut into blocks, each block is checked and embedded by a task on any
node with a free CPU (or GPU, with ``RayCluster(gpus_per_task=...)``), by the same
:class:`~lookalike.engine.RecordRules` a local collection applies, and the router writes the
resulting vectors to the shards. Every insert of a sharded collection goes this way (the HTTP
APIs, the CLI, the Python API).

:func:`bulk_insert` is the job for millions of records: it streams an iterable of records,
keeps a bounded number of blocks in flight on the cluster, writes each finished block, and
after each one saves a checkpoint (which blocks are done) and appends the block's failed
records to an error file; rerun with the same input and checkpoint, it skips the blocks done.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike import models
from lookalike.engine import CollectionConfig, RecordRules
from lookalike.errors import DuplicateIdError, InvalidInputError, LookalikeError
from lookalike.fetch import FetchSettings, SafeFetcher
from lookalike.ingest import Embedder, RecordError
from lookalike.sdk.registry import default_registry
from lookalike.sdk.types import TypeContext

if TYPE_CHECKING:
    from lookalike.distributed.sharded import ShardedCollection

__all__ = ["embed_on_cluster", "bulk_insert", "IngestReport", "EMBED_BLOCK"]

#: Records per embedding task within one insert call.
EMBED_BLOCK = 32

Prepared = tuple[str, dict[str, Any], np.ndarray, bytes | None]

_RULES: dict[str, RecordRules] = {}
_POSITION = re.compile(r"^record (\d+):")


def _rules(config: CollectionConfig, fetch: Any, max_pixels: int) -> RecordRules:
    """The record rules of a collection in this worker process (its model loaded once)."""
    key = f"{config.type}\x00{json.dumps(config.type_config, sort_keys=True)}\x00{fetch!r}\x00{max_pixels}"
    found = _RULES.get(key)
    if found is not None:
        return found
    if config.type == "vectors":
        found = RecordRules(config, None, None)
    else:
        import ray

        klass = default_registry().get(config.type)
        assigned = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        cpus = assigned.get("CPU", 1)
        context = TypeContext(cache_dir=models.cache_dir(), threads=max(1, int(cpus)))
        instance = klass(klass.parse_config(config.type_config), context)
        fetcher = SafeFetcher(fetch) if isinstance(fetch, FetchSettings) else fetch
        embedder = Embedder(instance, fetch=fetcher, allow_files=False, max_pixels=max_pixels)
        found = RecordRules(config, instance, embedder)
    _RULES[key] = found
    return found


def _embed_block(
    config: CollectionConfig, block: list[Any], fetch: Any, max_pixels: int, atomic: bool
) -> tuple[list[Prepared], list[RecordError], LookalikeError | None]:
    """A Ray task: checks and embeds one block (positions are the block's)."""
    rules = _rules(config, fetch, max_pixels)
    try:
        prepared, errors = rules._prepare(block, fetch=None, atomic=atomic)
    except LookalikeError as error:
        return [], [], error
    return prepared, errors, None


def _relabel(message: str, position: int) -> str:
    """An error message of a block's record, naming its position in the whole batch."""
    return _POSITION.sub(f"record {position}:", message, count=1)


def _task(collection: ShardedCollection) -> Any:
    import ray

    cluster = collection._cluster
    remote = getattr(cluster, "_embed_task", None)
    if remote is None:
        remote = ray.remote(_embed_block)
        cluster._embed_task = remote
    return remote.options(num_cpus=1, num_gpus=cluster.gpus_per_task, max_retries=3)


def _fetch_spec(collection: ShardedCollection) -> Any:
    """How tasks read `_url` images: the engine's safe fetcher's settings (a fetcher holds
    connections and cannot travel), or the engine's own fetch function."""
    fetch = collection._engine.fetch
    return fetch.settings if isinstance(fetch, SafeFetcher) else fetch


def embed_on_cluster(
    collection: ShardedCollection, batch: Sequence[Any], *, atomic: bool
) -> tuple[list[Prepared], list[RecordError]]:
    """:meth:`RecordRules._prepare` of a batch, its blocks embedded in parallel on the cluster.
    Records naming local files (`_file`) are read here, where the files are."""
    import ray

    if any(isinstance(record, Mapping) and "_file" in record for record in batch):
        return RecordRules._prepare(collection, batch, fetch=None, atomic=atomic)
    # An _id twice in the batch may fall in two blocks, which cannot see each other: checked here.
    sent: list[int] = []
    errors: list[RecordError] = []
    seen: set[str] = set()
    for position, record in enumerate(batch):
        id_ = record.get("_id") if isinstance(record, Mapping) else None
        if isinstance(id_, str) and id_ in seen:
            duplicate = DuplicateIdError(f"record {position}: _id {id_!r} appears twice in this batch")
            if atomic:
                raise duplicate
            errors.append(RecordError.of(position, id_, duplicate))
            continue
        if isinstance(id_, str):
            seen.add(id_)
        sent.append(position)
    task = _task(collection)
    fetch = _fetch_spec(collection)
    pixels = collection._engine.max_image_pixels
    # Blocks of up to EMBED_BLOCK records, but enough of them to give every CPU of the cluster one.
    size = max(1, min(EMBED_BLOCK, -(-len(sent) // max(1, collection._cluster.cpus()))))
    starts = range(0, len(sent), size)
    refs = [
        task.remote(collection.config, [batch[p] for p in sent[start : start + size]], fetch, pixels, atomic)
        for start in starts
    ]
    prepared: list[Prepared] = []
    for start, ref in zip(starts, refs, strict=True):
        rows, failed, error = collection._get(ref)
        if error is not None:  # atomic: the first bad record fails the batch
            match = _POSITION.match(str(error))
            if match is not None:
                error.args = (_relabel(str(error), sent[start + int(match.group(1))]),)
            for other in refs:
                ray.cancel(other)
            raise error
        for failure in failed:
            original = sent[start + failure.position]
            errors.append(RecordError(original, failure.id, failure.code, _relabel(failure.message, original)))
        prepared.extend(rows)
    errors.sort(key=lambda error: error.position)
    return prepared, errors


# -- bulk ingestion ----------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What :func:`bulk_insert` did, over every run of its checkpoint."""

    inserted: int
    failed: int
    blocks: int
    #: Blocks skipped because the checkpoint says they were done by an earlier run.
    resumed_blocks: int
    seconds: float


def _load_checkpoint(path: Path, collection: str, block_size: int) -> dict[str, Any]:
    if not path.exists():
        return {
            "collection": collection,
            "block_size": block_size,
            "done": [],
            "inserted": 0,
            "failed": 0,
            "errors_size": 0,
        }
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"cannot read the checkpoint {path}: {error}") from error
    if state.get("collection") != collection or state.get("block_size") != block_size:
        raise InvalidInputError(
            f"the checkpoint {path} is of collection {state.get('collection')!r} with blocks of "
            f"{state.get('block_size')} records; give the same, or another checkpoint file"
        )
    return state


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def bulk_insert(
    collection: ShardedCollection,
    records: Iterable[Mapping[str, Any]],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    errors: str | os.PathLike[str] | None = None,
    block_size: int = 256,
    in_flight: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Inserts a stream of records (``_url`` images, or `_vector`s) as a Ray job: blocks of
    `block_size` records are fetched, decoded and embedded by tasks on every node of the
    cluster (at most `in_flight` at once; default twice the cluster's CPUs), and written to
    the shards as they finish. After each written block, `checkpoint` (a JSON file) records
    it, and its failed records are appended to `errors` (JSON lines: position, _id, code,
    message). Rerun with the same input and checkpoint to resume: done blocks are skipped.
    `progress(inserted, failed)` is called after each block."""
    import ray

    from lookalike.distributed.sharded import ShardedCollection

    if not isinstance(collection, ShardedCollection):
        raise InvalidInputError("bulk_insert takes a sharded collection")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or not 1 <= block_size <= 10_000:
        raise InvalidInputError(f"block_size must be an integer from 1 to 10000, got {block_size!r}")
    started = time.monotonic()
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    state: dict[str, Any] = (
        _load_checkpoint(checkpoint_path, collection.name, block_size)
        if checkpoint_path is not None
        else {"done": [], "inserted": 0, "failed": 0, "errors_size": 0}
    )
    done = set(state["done"])
    error_file = None
    if errors is not None:
        error_file = open(errors, "ab")  # noqa: SIM115 - closed below
        error_file.truncate(int(state["errors_size"]) if checkpoint_path is not None else error_file.tell())
        error_file.seek(0, os.SEEK_END)
    limit = in_flight or max(2, 2 * collection._cluster.cpus())
    task = _task(collection)
    fetch = _fetch_spec(collection)
    pixels = collection._engine.max_image_pixels
    pending: dict[Any, tuple[int, int, list[Any]]] = {}
    blocks = resumed = 0

    def finish(ref: Any) -> None:
        number, base, block = pending.pop(ref)
        rows, failed, error = collection._get(ref)
        if error is not None:  # not raised without atomic; kept for safety
            raise error
        if rows:
            ids = [row[0] for row in rows]
            matrix = np.stack([row[2] for row in rows])
            collection._write(ids, matrix, [row[1] for row in rows], [row[3] for row in rows])
        if error_file is not None and failed:
            for failure in failed:
                entry = {
                    "position": base + failure.position,
                    "id": failure.id,
                    "code": failure.code,
                    "message": _relabel(failure.message, base + failure.position),
                }
                error_file.write((json.dumps(entry) + "\n").encode())
            error_file.flush()
            os.fsync(error_file.fileno())
        state["inserted"] += len(rows)
        state["failed"] += len(failed)
        done.add(number)
        if checkpoint_path is not None:
            state["done"] = sorted(done)
            state["errors_size"] = error_file.tell() if error_file is not None else 0
            _save_checkpoint(checkpoint_path, state)
        if progress is not None:
            progress(int(state["inserted"]), int(state["failed"]))

    try:
        iterator = iter(records)
        for number in itertools.count():
            block = list(itertools.islice(iterator, block_size))
            if not block:
                break
            blocks += 1
            if number in done:
                resumed += 1
                continue
            ref = task.remote(collection.config, block, fetch, pixels, False)
            pending[ref] = (number, number * block_size, block)
            while len(pending) >= limit:
                ready, _ = ray.wait(list(pending), num_returns=1)
                finish(ready[0])
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            finish(ready[0])
    finally:
        for ref in list(pending):
            ray.cancel(ref)
        if error_file is not None:
            error_file.close()
    return IngestReport(int(state["inserted"]), int(state["failed"]), blocks, resumed, time.monotonic() - started)
