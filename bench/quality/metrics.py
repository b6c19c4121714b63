"""Ranking metrics over full leave-one-out rankings.

A ranking is a boolean array: the relevance of each database item to the query, in ranked order,
the query itself removed. ``total`` is how many relevant items the database holds (the ranking
may be cut short, for example by a search limit; missing relevant items then count as never
retrieved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["average_precision", "precision_at", "Summary", "summarise", "rankings_from_scores", "rank_of"]


def average_precision(relevant: np.ndarray, total: int | None = None) -> float:
    relevant = np.asarray(relevant, dtype=bool)
    total = int(relevant.sum()) if total is None else total
    if total == 0:
        return float("nan")
    hits = np.flatnonzero(relevant)
    return float(np.sum(np.arange(1, len(hits) + 1) / (hits + 1)) / total)


def precision_at(relevant: np.ndarray, k: int) -> float:
    return float(np.asarray(relevant[:k], dtype=bool).sum() / k)


@dataclass(frozen=True)
class Summary:
    queries: int
    map: float
    precision: float
    k: int
    recall_at_1: float


def summarise(rankings: Sequence[np.ndarray], totals: Sequence[int], k: int) -> Summary:
    aps = [average_precision(r, t) for r, t in zip(rankings, totals, strict=True)]
    return Summary(
        queries=len(rankings),
        map=float(np.nanmean(aps)),
        precision=float(np.mean([precision_at(r, k) for r in rankings])),
        k=k,
        recall_at_1=float(np.mean([bool(r[0]) if len(r) else False for r in rankings])),
    )


def rankings_from_scores(
    scores: np.ndarray, query_rows: np.ndarray, labels: np.ndarray, query_labels: np.ndarray
) -> list[np.ndarray]:
    """Leave-one-out rankings from a ``[queries, database]`` similarity matrix (larger is
    closer): ``query_rows[i]`` is query i's own row in the database (removed), ties broken by
    database order."""
    out = []
    for i, row in enumerate(query_rows):
        order = np.argsort(-scores[i], kind="stable")
        order = order[order != row]
        out.append(labels[order] == query_labels[i])
    return out


def rank_of(ids: Sequence[str], wanted: str) -> int | None:
    """1-based rank of ``wanted`` in ``ids``, None when absent."""
    try:
        return list(ids).index(wanted) + 1
    except ValueError:
        return None
