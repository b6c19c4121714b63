"""Single-query search: Lookalike vs faiss HNSW vs hnswlib at a fixed ef (pytest-benchmark).

N = 20,000 embedding-like vectors (bench/datasets.py, generated on the fly, ~1 s), 200 queries,
k = 10, ef = 64, M = 16, efConstruction 200. Each engine's recall@10 against the exact top-10
is asserted (>= 0.95) before it is timed; the timed call is one query (cycling through the
query set), as an application would call it. Lookalike is skipped if it is not importable.

    pytest bench/ --benchmark-enable     (see bench/conftest.py)
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import datasets as D
from bench import peers as P

N = 20_000
NQ = 200
K = 10
EF = 64
MIN_RECALL = 0.95


class Data:
    def __init__(self) -> None:
        D.set_threads(2)
        self.base, self.queries = D.generate(N, seed=7, nq=NQ)
        self.bucket, codes = D.make_metadata(N, seed=7)
        self.category = np.asarray(D.CATEGORIES, dtype=object)[codes]
        gt = D.exact_topk(self.base, self.queries, K, {"all": None, "1%": self.bucket < 10})
        self.truth = gt["all"][0]
        self.truth_1pct = gt["1%"][0]


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


def _build(peer: P.Peer, data: Data) -> P.Peer:
    peer.build(data.base, data.bucket, data.category)
    peer.set_param(EF)
    peer.single_thread()
    return peer


@pytest.fixture(scope="module")
def faiss_hnsw(data: Data) -> Iterator[P.Peer]:
    pytest.importorskip("faiss")
    peer = _build(P.FaissHNSW(), data)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def hnswlib_index(data: Data) -> Iterator[P.Peer]:
    pytest.importorskip("hnswlib")
    peer = _build(P.HnswLib(), data)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def lookalike_col(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Iterator[P.Peer]:
    if not P.lookalike_available():
        pytest.skip("lookalike is not importable (build it with `make setup`)")
    folder: Path = tmp_path_factory.mktemp("lookalike")
    peer = _build(P.Lookalike(folder / "engine", precision="i8"), data)
    yield peer
    peer.close()
    shutil.rmtree(folder, ignore_errors=True)


def _recall(peer: P.Peer, data: Data, truth: np.ndarray) -> float:
    ids = np.stack([peer.search_one(q, K) for q in data.queries])
    return D.recall_at_k(ids, truth, K)


def _one_query(peer: P.Peer, data: Data) -> Callable[[], Any]:
    cycle = itertools.cycle(range(NQ))

    def run() -> Any:
        return peer.search_one(data.queries[next(cycle)], K)

    return run


@pytest.mark.parametrize("engine", ["lookalike_col", "faiss_hnsw", "hnswlib_index"])
def test_single_query(engine: str, data: Data, benchmark: Any, request: pytest.FixtureRequest) -> None:
    peer: P.Peer = request.getfixturevalue(engine)
    recall = _recall(peer, data, data.truth)
    assert recall >= MIN_RECALL, f"{peer.name}: recall@{K} {recall:.4f} at ef={EF}"
    benchmark.extra_info["recall@10"] = recall
    benchmark.extra_info["ef"] = EF
    benchmark(_one_query(peer, data))


def test_lookalike_filtered_1pct(lookalike_col: P.Peer, data: Data, benchmark: Any) -> None:
    """Filtered single-query search at 1 % selectivity; must match the exact filtered answer."""
    lookalike_col.set_filter(10, data.bucket < 10)
    try:
        recall = _recall(lookalike_col, data, data.truth_1pct)
        assert recall >= MIN_RECALL, f"filtered recall@{K} {recall:.4f}"
        benchmark.extra_info["recall@10"] = recall
        benchmark(_one_query(lookalike_col, data))
    finally:
        lookalike_col.set_filter(None, None)


def test_exact_prefiltered_1pct(data: Data, benchmark: Any) -> None:
    """The baseline for the filtered test: exact search over the contiguous 1 % subset."""
    peer = P.Exact()
    peer.build(data.base, data.bucket, data.category)
    peer.set_filter(10, data.bucket < 10)
    peer.single_thread()
    recall = _recall(peer, data, data.truth_1pct)
    assert recall == 1.0
    benchmark(_one_query(peer, data))
    peer.close()
