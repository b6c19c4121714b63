"""Many reader threads search while a writer adds and removes; nothing fails, nothing is lost,
and searches run with the GIL released."""

from __future__ import annotations

import threading
import time

import numpy as np

import lookalike

from .conftest import clustered


def test_readers_and_a_writer(engine: lookalike.Engine) -> None:
    col = engine.create_collection("cc", ndim=32, fields_to_index=["batch"])
    base = clustered(6000, 32, seed=21)
    col.add_vectors([str(i) for i in range(1000)], base[:1000], [{"batch": 0} for _ in range(1000)])
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                q = base[int(rng.integers(0, 6000))]
                hits = col.search(q, limit=10, filter={"batch": {"$gte": 0}} if rng.random() < 0.5 else None)
                assert len(hits) == 10
                distances = [h["distance"] for h in hits]
                assert distances == sorted(distances)
                searches[0] += 1
        except BaseException as error:  # reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for b in range(1, 6):
            ids = [str(i) for i in range(b * 1000, (b + 1) * 1000)]
            col.add_vectors(ids, base[b * 1000 : (b + 1) * 1000], [{"batch": b} for _ in ids])
            col.remove([str(i) for i in range((b - 1) * 1000, (b - 1) * 1000 + 100)])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert searches[0] > 0
    assert len(col) == 6000 - 500
    for i in range(500, 6000, 250):
        expected = str(i)
        if (i % 1000) < 100 and i < 5000:
            continue
        assert col.search(base[i], limit=1, exact=True)[0]["_id"] == expected


def test_search_releases_the_gil(engine: lookalike.Engine) -> None:
    """A pure-Python thread keeps making progress while another thread runs long searches."""
    col = engine.create_collection("gil", ndim=256)
    base = clustered(20000, 256, seed=22)
    col.add_vectors([str(i) for i in range(len(base))], base)
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    queries = clustered(64, 256, seed=23)
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        started = counter[0]
        t0 = time.perf_counter()
        col.search_vectors(queries, limit=10, exact=True, threads=1)
        elapsed = time.perf_counter() - t0
        progressed = counter[0] - started
    finally:
        stop.set()
        spinner.join()
    # With the GIL held for the whole batch the spinner could only run at the switch interval
    # boundaries before and after the call; released, it runs all along.
    assert elapsed > 0
    assert progressed > 1000
