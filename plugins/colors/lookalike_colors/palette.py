"""Dominant colours: weighted k-means in CIELAB, deterministic.

Initialisation is k-means++ with a fixed seed (so one image always gives one palette), followed
by Lloyd iterations until the assignment stops changing. Clusters whose centres end up closer
than ``merge_distance`` (CIE76 delta E) are merged, so a flat colour with a little noise or
JPEG ringing reads as one colour, and an image with fewer distinct colours than ``k`` gets a
shorter palette.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans", "MERGE_DISTANCE"]

#: Centres closer than this (delta E 1976) are one colour.
MERGE_DISTANCE = 8.0


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``[n, k]`` squared distances (``|p|^2 - 2 p.c + |c|^2``, clipped at 0)."""
    out: np.ndarray = (points * points).sum(axis=1)[:, None] - 2.0 * (points @ centres.T)
    out += (centres * centres).sum(axis=1)[None, :]
    np.maximum(out, 0.0, out=out)
    return out


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of each point's nearest centre (``|c|^2 - 2 p.c``: ``|p|^2`` does not change the order)."""
    scores = (centres * centres).sum(axis=1)[None, :] - 2.0 * (points @ centres.T)
    out: np.ndarray = scores.argmin(axis=1)
    return out


def _init(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on weighted points (fewer centres when fewer distinct colours exist)."""
    first = int(rng.choice(len(points), p=weights / weights.sum()))
    centres = [points[first]]
    nearest = np.sum((points - points[first]) ** 2, axis=1)
    for _ in range(1, k):
        mass = weights * nearest
        total = mass.sum()
        if not total > 1e-9:
            break
        pick = int(rng.choice(len(points), p=mass / total))
        centres.append(points[pick])
        nearest = np.minimum(nearest, np.sum((points - points[pick]) ** 2, axis=1))
    return np.array(centres)


def _merge(centres: np.ndarray, shares: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Merges the closest pair of centres while it is closer than ``distance``."""
    centres, shares = centres.copy(), shares.copy()
    while len(centres) > 1:
        d = _squared_distances(centres, centres)
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] >= distance * distance:
            break
        total = shares[i] + shares[j]
        centres[i] = (centres[i] * shares[i] + centres[j] * shares[j]) / total
        shares[i] = total
        centres = np.delete(centres, j, axis=0)
        shares = np.delete(shares, j)
    return centres, shares


def kmeans(
    points: np.ndarray,
    weights: np.ndarray | None = None,
    k: int = 5,
    *,
    iterations: int = 10,
    seed: int = 0,
    merge_distance: float = MERGE_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Dominant colours of CIELAB ``points [n, 3]`` with ``weights [n]`` (default: equal):
    ``(centres [m, 3], shares [m])`` with ``m <= k``, shares summing to 1, heaviest first."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise ValueError("k-means needs at least one point")
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(points),) or (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights must be one non-negative number per point, not all zero")
    rng = np.random.default_rng(seed)
    centres = _init(points, w, max(1, k), rng)
    weighted = (points * w[:, None]).reshape(-1)
    channel = np.arange(3)
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        new_labels = _nearest(points, centres)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        count = len(centres)
        mass = np.bincount(labels, weights=w, minlength=count)
        cells = (labels[:, None] * 3 + channel).reshape(-1)
        sums = np.bincount(cells, weights=weighted, minlength=3 * count).reshape(count, 3)
        used = mass > 0
        centres = sums[used] / mass[used, None]
        if not used.all():  # an emptied cluster goes; relabel against the remaining centres
            labels = np.full(len(points), -1)
    labels = _nearest(points, centres)
    shares = np.bincount(labels, weights=w, minlength=len(centres))
    used = shares > 0
    centres, shares = centres[used], shares[used] / shares.sum()
    centres, shares = _merge(centres, shares, merge_distance)
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0], -shares))
    return centres[order], shares[order]
