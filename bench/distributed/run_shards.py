"""Sharded collections on a local multi-node Ray cluster: 1, 2 and 4 shards (and 2 shards with
2 replicas) against one local collection, on the same embedding-like data.

    .venv/bin/python -m bench.distributed.run_shards [--n 50000] [--shards 1,2,4] [--out bench/RESULTS.md]

The cluster is ``ray.cluster_utils.Cluster``: a head that holds no replica and one worker node
(a raylet with its own processes) per shard, all on this machine. For each layout:

- build: records/s of ``add_vectors`` in batches of 5,000 (the router numbers each batch per
  shard and writes it to every replica; each replica commits to SQLite and inserts into its graph);
- latency: single-query search (k=10, HNSW), one client, p50 and p99 over the queries;
- throughput: queries/s with 8 client threads for a few seconds;
- filtered: single-query p50 with a 10 % filter;
- recall@10 against the exact ground truth.

On a machine with fewer cores than shards, the shards share the cores: the figures then show
the router's cost (a scatter to every shard and a merge) rather than the gain of more machines.
Each shard on its own machine scans 1/S of the records; see ARCHITECTURE.md, "Scale-out".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import load_dataset, recall_at_k
from bench.sections import replace_section

MARK_START = "<!-- shards:start -->"
MARK_END = "<!-- shards:end -->"
BATCH = 5_000


def measure(collection: Any, ds: Any, queries: int, seconds: float) -> dict[str, float]:
    qs = ds.queries[:queries]
    latencies = []
    found = np.full((len(qs), 10), -1, dtype=np.int64)
    for row, q in enumerate(qs):
        started = time.perf_counter()
        hits = collection.search(q, limit=10, fields=[])
        latencies.append(time.perf_counter() - started)
        found[row, : len(hits)] = [int(h["_id"]) for h in hits]
    recall = recall_at_k(found, ds.gt["all"][: len(qs)], 10)
    filtered = []
    limit = ds.filter_threshold("10%")
    for q in qs[:100]:
        started = time.perf_counter()
        collection.search(q, limit=10, filter={"bucket": {"$lt": limit}}, fields=[])
        filtered.append(time.perf_counter() - started)
    done = [0] * 8
    stop = time.perf_counter() + seconds

    def client(slot: int) -> None:
        rng = np.random.default_rng(slot)
        while time.perf_counter() < stop:
            collection.search(qs[int(rng.integers(len(qs)))], limit=10, fields=[])
            done[slot] += 1

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(8)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "qps": sum(done) / elapsed,
        "filtered_p50_ms": statistics.median(filtered) * 1000,
        "recall": recall,
    }


def build(collection: Any, ds: Any) -> float:
    started = time.perf_counter()
    for start in range(0, ds.n, BATCH):
        stop = min(ds.n, start + BATCH)
        ids = [str(i) for i in range(start, stop)]
        metadata = [{"bucket": int(b)} for b in ds.bucket[start:stop]]
        collection.add_vectors(ids, np.asarray(ds.base[start:stop]), metadata)
    return ds.n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--precision", default="f16", choices=["f32", "f16", "i8"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import ray
    from ray.cluster_utils import Cluster

    from lookalike import Engine
    from lookalike.distributed import RayCluster

    ds = load_dataset(args.n)
    layouts = [(int(s), 1) for s in args.shards.split(",")] + [(2, 2)]
    nodes = max(s * r for s, r in layouts)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    options = {"ndim": ds.ndim, "precision": args.precision, "fields_to_index": ["bucket"]}
    rows: list[tuple[str, float, dict[str, float]]] = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="lookalike-shards-") as folder:
            with Engine(Path(folder) / "local") as engine:
                local = engine.create_collection("bench", **options)
                rate = build(local, ds)
                rows.append(("local collection (no Ray)", rate, measure(local, ds, args.queries, args.seconds)))
                print(rows[-1], flush=True)
            backend = RayCluster(heal_interval=3600)
            with Engine(Path(folder) / "router", cluster=backend) as engine:
                for shards, replicas in layouts:
                    collection = engine.create_collection("bench", shards=shards, replicas=replicas, **options)
                    rate = build(collection, ds)
                    label = f"{shards} shard{'s' if shards > 1 else ''}" + (
                        f" x {replicas} replicas" if replicas > 1 else ""
                    )
                    rows.append((label, rate, measure(collection, ds, args.queries, args.seconds)))
                    print(rows[-1], flush=True)
                    engine.drop_collection("bench")
    finally:
        ray.shutdown()
        cluster.shutdown()
    seconds = time.perf_counter() - started
    lines = [
        MARK_START,
        "## Scale-out: sharded collections on a local Ray cluster",
        "",
        f"`python -m bench.distributed.run_shards {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(
            " `", "`"
        ),
        f"({seconds:.0f} s; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"ray {ray.__version__}; N = {ds.n:,} x {ds.ndim}-d, {args.precision}; one worker node per replica, "
        "all on this machine, sharing its cores).",
        "",
        "| layout | build (records/s) | p50 (ms) | p99 (ms) | QPS, 8 clients | p50 filtered 10 % (ms) | recall@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, rate, m in rows:
        lines.append(
            f"| {label} | {rate:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['qps']:,.0f} | "
            f"{m['filtered_p50_ms']:.2f} | {m['recall']:.3f} |"
        )
    lines += [
        "",
        "Each sharded search is one Ray call per shard (scatter) and a merge in the router; on one machine "
        "the shards share its cores, so these figures are the router's overhead, not the gain of more "
        'machines (ARCHITECTURE.md, "Scale-out", has the capacity model).',
        MARK_END,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.out:
        replace_section(args.out, section, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
