"""Soft-binned CIELAB histograms whose L2 distance follows colour-distribution distance.

Bin centres sit on a regular grid in CIELAB: ``bins`` centres along a* and along b*
(from -100 to 100), and the same spacing along L* (from 0 to 100). Every colour (a pixel of the
thumbnail, or a colour of a query) spreads its weight over the centres with a Gaussian kernel
(standard deviation ``smoothing`` x the spacing, the same in L*, a* and b*), normalised so each
colour hands out exactly its weight. The kernel is separable, so a whole image costs one small
matrix product. Centres that no sRGB colour can reach (outside the gamut) are dropped once per
grid; what is left is the descriptor's dimension.

The histogram is normalised to sum 1 and the descriptor is its element-wise square root, so the
L2 distance between two descriptors is sqrt(2) x the Hellinger distance of their histograms
(``||sqrt(p) - sqrt(q)||^2 = 2 (1 - sum sqrt(p q))``), from 0 (same colours) to sqrt(2)
(no colour in common).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lookalike_colors.lab import srgb_to_lab

__all__ = ["Grid", "grid", "histogram", "descriptor", "hellinger"]

#: A centre is kept when some sRGB colour gives it at least this share of its weight.
_REACH = 1e-3


@dataclass(frozen=True, eq=False)
class Grid:
    """The bin centres of one descriptor resolution."""

    l_centres: np.ndarray
    ab_centres: np.ndarray
    sigma: float
    #: Which cells of the full ``[len(l_centres), len(ab_centres), len(ab_centres)]`` grid are kept.
    keep: np.ndarray

    @property
    def dimension(self) -> int:
        return int(np.count_nonzero(self.keep))

    @property
    def centres(self) -> np.ndarray:
        """CIELAB centres of the kept bins, ``[dimension, 3]``."""
        lab = np.stack(np.meshgrid(self.l_centres, self.ab_centres, self.ab_centres, indexing="ij"), axis=-1)
        kept: np.ndarray = lab.reshape(-1, 3)[self.keep]
        return kept

    def _kernel(self, values: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """``[n, len(centres)]`` Gaussian weights of each value, each row summing to 1."""
        d = (values[:, None] - centres[None, :]) * (1.0 / self.sigma)
        k: np.ndarray = np.exp(-0.5 * d * d)
        k /= np.maximum(k.sum(axis=1, keepdims=True), 1e-300)
        return k

    def spread(self, lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The full soft histogram ``[len(l), len(ab) * len(ab)]`` (not pruned, not normalised)."""
        kl = self._kernel(lab[:, 0], self.l_centres) * weights[:, None]
        ka = self._kernel(lab[:, 1], self.ab_centres)
        kb = self._kernel(lab[:, 2], self.ab_centres)
        ab = (ka[:, :, None] * kb[:, None, :]).reshape(len(lab), -1)
        out: np.ndarray = kl.T @ ab
        return out


@functools.lru_cache(maxsize=16)
def grid(bins: int = 9, smoothing: float = 0.5) -> Grid:
    """The grid of ``bins`` centres per a*/b* axis (-100..100) and the same spacing along L*."""
    if bins < 2 or smoothing <= 0:
        raise ValueError("bins must be at least 2 and smoothing positive")
    spacing = 200.0 / (bins - 1)
    l_count = max(2, int(round(100.0 / spacing)) + 1)
    full = Grid(
        l_centres=np.linspace(0.0, 100.0, l_count),
        ab_centres=np.linspace(-100.0, 100.0, bins),
        sigma=smoothing * spacing,
        keep=np.ones(l_count * bins * bins, dtype=bool),
    )
    # The largest share any sRGB colour (a 33-level cube) hands each centre.
    levels = np.linspace(0.0, 1.0, 33)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = srgb_to_lab(cube)
    reach = np.zeros(full.keep.shape)
    for start in range(0, len(lab), 4096):
        part = lab[start : start + 4096]
        kl = full._kernel(part[:, 0], full.l_centres)
        ka = full._kernel(part[:, 1], full.ab_centres)
        kb = full._kernel(part[:, 2], full.ab_centres)
        shares = kl[:, :, None, None] * ka[:, None, :, None] * kb[:, None, None, :]
        reach = np.maximum(reach, shares.reshape(len(part), -1).max(axis=0))
    keep = reach >= _REACH
    keep.setflags(write=False)
    return Grid(full.l_centres, full.ab_centres, full.sigma, keep)


def histogram(grid: Grid, lab: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The soft histogram (float64 ``[grid.dimension]``, summing to 1) of CIELAB colours
    ``[n, 3]`` with non-negative weights (default: equal)."""
    lab = np.asarray(lab, dtype=np.float64).reshape(-1, 3)
    if len(lab) == 0:
        raise ValueError("a histogram needs at least one colour")
    w = np.ones(len(lab)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(lab),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be one non-negative finite number per colour, not all zero")
    full = grid.spread(lab, w).reshape(-1)[grid.keep]
    total = full.sum()
    if not total > 0:  # only for colours far outside every kept centre, which sRGB cannot produce
        raise ValueError("the colours fall outside the descriptor grid")
    out: np.ndarray = full / total
    return out


def descriptor(hist: np.ndarray) -> np.ndarray:
    """The float32 vector of a histogram: its element-wise square root."""
    out: np.ndarray = np.sqrt(np.maximum(hist, 0.0)).astype(np.float32)
    return out


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance of two histograms that each sum to 1: ``sqrt(1 - sum sqrt(p q))``."""
    coefficient = float(np.sum(np.sqrt(np.asarray(p, dtype=np.float64) * np.asarray(q, dtype=np.float64))))
    return float(np.sqrt(max(0.0, 1.0 - coefficient)))
