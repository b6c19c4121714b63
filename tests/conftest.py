"""Shared fixtures: a fresh engine per test and embedding-like vectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import lookalike


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[lookalike.Engine]:
    eng = lookalike.Engine(tmp_path / "data")
    yield eng
    eng.close()


def clustered(n: int, ndim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors in clusters, like image embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, ndim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    points = centres[labels] + 0.35 * rng.standard_normal((n, ndim)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def exact_neighbours(base: np.ndarray, query: np.ndarray, k: int, metric: str = "cos") -> list[int]:
    if metric in ("cos", "ip"):
        b = base / np.linalg.norm(base, axis=1, keepdims=True) if metric == "cos" else base
        q = query / np.linalg.norm(query) if metric == "cos" else query
        distances = 1.0 - b @ q
    else:
        distances = ((base - query) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(len(base)), distances))
    return [int(i) for i in order[:k]]
