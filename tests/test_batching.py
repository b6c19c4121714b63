"""Micro-batching: concurrent callers share model calls and each gets its own rows."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike import Engine
from lookalike.batching import MicroBatcher
from lookalike.sdk.registry import Registry
from lookalike.testing import fake_image, image_base64
from tests.plugin_fixtures import MeanColour


def test_concurrent_callers_share_calls_and_get_their_rows() -> None:
    seen_batches: list[int] = []

    def embed(items: list[int]) -> np.ndarray:
        seen_batches.append(len(items))
        time.sleep(0.01)  # a model call takes a while; callers pile up meanwhile
        return np.asarray([[item, item * 2] for item in items], dtype=np.float32)

    batcher = MicroBatcher(embed, max_batch=16, max_wait_s=0.005)
    results: dict[int, np.ndarray] = {}

    def call(start: int) -> None:
        results[start] = batcher.submit([start, start + 1])

    threads = [threading.Thread(target=call, args=(i * 10,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    for start, rows in results.items():
        np.testing.assert_array_equal(rows, [[start, 2 * start], [start + 1, 2 * start + 2]])
    assert sum(seen_batches) == 48
    assert max(seen_batches) <= 16
    assert len(seen_batches) < 24  # shared: fewer model calls than requests


def test_a_failing_batch_fails_its_callers_only() -> None:
    def embed(items: list[int]) -> np.ndarray:
        if -1 in items:
            raise RuntimeError("model failed")
        return np.asarray([[item] for item in items], dtype=np.float32)

    batcher = MicroBatcher(embed, max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.submit([-1])
    np.testing.assert_array_equal(batcher.submit([5]), [[5]])
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1])


def test_the_engine_micro_batches_concurrent_inserts(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(MeanColour)
    with Engine(tmp_path, registry=registry, micro_batch=True, batch_size=32) as engine:
        col = engine.create_collection("c", type="meancolour")
        errors: list[BaseException] = []

        def insert(start: int) -> None:
            try:
                col.add([{"_id": f"r{i}", "_base64": image_base64(fake_image(i, 32))} for i in (start, start + 1)])
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=insert, args=(i * 2,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert len(col) == 32
        batcher = engine._batcher_for(col.type)  # type: ignore[arg-type]
        assert batcher is not None and batcher.items >= 32
        for i in (0, 7, 31):
            assert col.search(record={"_base64": image_base64(fake_image(i, 32))}, limit=1)[0]["_id"] == f"r{i}"
