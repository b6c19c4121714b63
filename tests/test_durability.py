"""Durability: reopen gives the same answers, a crash loses nothing acknowledged, snapshots
are derived state that can be lost or damaged without losing data, compaction gives memory back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lookalike

from .conftest import clustered


def fill(engine: lookalike.Engine, n: int = 1500) -> lookalike.Collection:
    col = engine.create_collection(
        "d", ndim=16, fields_to_index=["bucket", "tag"], product_id_field="product", precision="f16"
    )
    base = clustered(n, 16, seed=11)
    col.add_vectors(
        [f"id{i}" for i in range(n)],
        base,
        [{"bucket": i % 10, "tag": ["a", "b"][i % 2], "product": i % 97} for i in range(n)],
    )
    col.remove([f"id{i}" for i in range(0, n, 7)])
    col.update([{"_id": f"id{i}", "bucket": 42} for i in range(1, n, 13) if i % 7])
    return col


def answers(col: lookalike.Collection) -> list[object]:
    base = clustered(20, 16, seed=12)
    out: list[object] = []
    for q in base:
        out.append([h["_id"] for h in col.search(q, limit=10, exact=True)])
        out.append([h["_id"] for h in col.search(q, limit=10, filter={"bucket": {"$in": [3, 42]}}, exact=True)])
        out.append([h["_id"] for h in col.search(q, limit=4, group_by="product", group_size=2, exact=True)])
    out.append(col.count({"tag": "a"}))
    out.append(len(col))
    return out


@pytest.mark.parametrize("snapshot", [True, False])
def test_reopen_gives_same_answers(tmp_path: Path, snapshot: bool) -> None:
    engine = lookalike.Engine(tmp_path)
    col = fill(engine)
    before = answers(col)
    approx_before = [h["_id"] for h in col.search(clustered(1, 16, seed=13)[0], limit=10)]
    if snapshot:
        engine.close()
    else:  # as after a crash: no snapshot at close, everything comes back by replay
        col.close(snapshot=False)
        engine.close()
    engine = lookalike.Engine(tmp_path)
    col = engine.collection("d")
    assert answers(col) == before
    if snapshot:
        approx_after = [h["_id"] for h in col.search(clustered(1, 16, seed=13)[0], limit=10)]
        assert approx_after == approx_before
    engine.close()


def test_replay_after_snapshot_keeps_field_indexes_exact(tmp_path: Path) -> None:
    engine = lookalike.Engine(tmp_path)
    col = fill(engine)
    col.snapshot()
    # Writes after the snapshot: removes, key reuse with other values, updates.
    col.remove([f"id{i}" for i in range(1, 300, 3)])
    col.add([{"_id": f"new{i}", "_vector": [1.0] * 16, "bucket": 77, "tag": "c"} for i in range(60)])
    col.update([{"_id": f"id{i}", "tag": "z"} for i in range(2, 200, 5) if i % 3 != 1 and i % 7])
    before = answers(col) + [col.count({"bucket": 77}), col.count({"tag": "z"}), col.count({"tag": "b"})]
    col.close(snapshot=False)
    engine.close()
    engine = lookalike.Engine(tmp_path)
    col = engine.collection("d")
    assert answers(col) + [col.count({"bucket": 77}), col.count({"tag": "z"}), col.count({"tag": "b"})] == before
    engine.close()


def test_damaged_snapshot_falls_back_to_database(tmp_path: Path) -> None:
    engine = lookalike.Engine(tmp_path)
    col = fill(engine)
    before = answers(col)
    engine.close()
    snapshots = list((tmp_path / "collections" / "d" / "snapshots").iterdir())
    assert len(snapshots) == 1
    state = snapshots[0] / "state.bin"
    data = bytearray(state.read_bytes())
    state.write_bytes(bytes(data[: len(data) // 2]))
    engine = lookalike.Engine(tmp_path)
    assert answers(engine.collection("d")) == before
    engine.close()
    for snapshot in (tmp_path / "collections" / "d" / "snapshots").iterdir():
        (snapshot / "hnsw.usearch").write_bytes(b"garbage")
    engine = lookalike.Engine(tmp_path)
    assert answers(engine.collection("d")) == before
    engine.close()


def test_a_data_folder_has_one_engine_at_a_time(tmp_path: Path) -> None:
    engine = lookalike.Engine(tmp_path)
    engine.create_collection("x", ndim=2).add([{"_id": "a", "_vector": [1, 0]}])
    with pytest.raises(lookalike.StorageError, match="in use"):
        lookalike.Engine(tmp_path)
    other = subprocess.run(
        [sys.executable, "-c", "import sys, lookalike; lookalike.Engine(sys.argv[1])", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0 and "in use" in other.stderr
    engine.close()
    engine = lookalike.Engine(tmp_path)  # released by close
    assert len(engine.collection("x")) == 1
    engine.close()


def test_compaction_gives_memory_back(tmp_path: Path) -> None:
    engine = lookalike.Engine(tmp_path)
    col = engine.create_collection("c", ndim=64)
    base = clustered(40000, 64, seed=14)
    col.add_vectors([str(i) for i in range(40000)], base)
    full = col.memory_usage()
    col.remove([str(i) for i in range(1000, 40000)])
    col.compact()
    assert col.stats()["rebuilds"] >= 1
    # usearch allocates its graph in arenas of a few MiB, so a small index keeps some slack.
    assert col.memory_usage() < full * 0.5
    hits = col.search(base[5], limit=5)
    assert hits[0]["_id"] == "5"
    assert all(int(h["_id"]) < 1000 for h in hits)
    engine.close()


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, lookalike
    engine = lookalike.Engine(sys.argv[1])
    col = engine.create_collection("crash", ndim=8, fields_to_index=["n"], exist_ok=True)
    rng = np.random.default_rng(int(sys.argv[2]))
    i = int(sys.argv[3])
    while True:
        col.add([{"_id": f"r{j}", "_vector": rng.standard_normal(8).tolist(), "n": j} for j in range(i, i + 25)])
        print("added", i, i + 25, flush=True)   # add returned: r{i} .. r{i+24} are acknowledged
        if i % 100 == 0 and i >= 50:
            col.remove([f"r{i - 50}"])
            print("removed", i - 50, flush=True)
        i += 25
    """
)


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    acknowledged: set[str] = set()
    removed: set[str] = set()
    for round_ in range(3):
        start = 100_000 * round_
        process = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "data"), str(round_), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        batches = 0
        kill_after = 20 + 15 * round_
        while time.monotonic() < deadline and batches < kill_after:
            line = process.stdout.readline()
            if not line:
                break
            word, *numbers = line.split()
            if word == "added":
                acknowledged |= {f"r{j}" for j in range(int(numbers[0]), int(numbers[1]))}
                batches += 1
            else:
                removed.add(f"r{numbers[0]}")
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: the writer is busy adding
        process.wait(timeout=30)
        process.stdout.close()
        assert process.returncode == -signal.SIGKILL
        assert batches == kill_after
        engine = lookalike.Engine(tmp_path / "data")
        col = engine.collection("crash")
        expected = acknowledged - removed
        present = {r["_id"] for r in col.get(sorted(expected))}
        assert present == expected
        assert not col.get(sorted(removed))
        # Records added after our last read were acknowledged to the writer too; no more can exist.
        assert len(col) >= len(expected)
        assert col.count({"n": {"$gte": 0}}) == len(col)
        found_by_graph = 0
        for rid in sorted(expected):
            vector = col.get_vector(rid)
            assert col.search(vector, limit=1, exact=True)[0]["_id"] == rid
            found_by_graph += rid in {h["_id"] for h in col.search(vector, limit=5)}
        # The graph is approximate (and built by concurrent inserts): nearly every record finds
        # itself there; the exact scan above finds every one.
        assert found_by_graph >= 0.98 * len(expected)
        engine.close()
    assert len(acknowledged) > 1000


def test_writes_go_on_during_a_compaction(tmp_path: Path) -> None:
    """The graph rebuild runs without the writer lock: adds, updates and removes made while it
    builds complete meanwhile and are in the new graph (or gone from it) once it is swapped in."""
    import threading

    import numpy as np

    n = 12_000
    with lookalike.Engine(tmp_path / "data") as engine:
        col = engine.create_collection("c", ndim=32, fields_to_index=["tag"])
        base = clustered(n + 2_000, 32, seed=21)
        col.add_vectors([f"r{i}" for i in range(n)], base[:n], [{"tag": i % 3} for i in range(n)])
        col.remove([f"r{i}" for i in range(0, 4_000)])  # enough to make the rebuild worth it
        thread = threading.Thread(target=col.compact, kwargs={"threads": 1})
        thread.start()
        done_while_compacting = 0
        added: list[str] = []
        for step in range(40):
            ids = [f"n{step}-{j}" for j in range(25)]
            col.add_vectors(ids, base[n + step * 25 : n + (step + 1) * 25], [{"tag": 9}] * 25)
            added += ids
            col.remove([f"r{4_000 + step}"])
            col.update([{"_id": f"r{6_000 + step}", "tag": 7}])
            if col.stats()["compacting"] or thread.is_alive():
                done_while_compacting += 1
        thread.join()
        assert done_while_compacting > 0, "every write waited for the compaction"
        assert col.stats()["rebuilds"] >= 1
        assert len(col) == n - 4_000 + len(added) - 40
        for position, id_ in enumerate(added[::50]):
            vector = base[n + position * 50]
            assert col.search(vector, limit=1)[0]["_id"] == id_
        for step in range(40):
            gone = base[4_000 + step]
            assert f"r{4_000 + step}" not in [h["_id"] for h in col.search(gone, limit=5)]
            assert f"r{4_000 + step}" not in [h["_id"] for h in col.search(gone, limit=5, exact=True)]
        assert col.count({"tag": 7}) == 40 and col.count({"tag": 9}) == len(added)
        query = np.asarray(base[7_000])
        graph = {h["_id"] for h in col.search(query, limit=10)}
        exact = {h["_id"] for h in col.search(query, limit=10, exact=True)}
        assert len(graph & exact) >= 8
