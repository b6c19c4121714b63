"""Calibrated duplicate thresholds (cosine distance) for each pair of weights.

The numbers come from ``plugins/matching/calibrate.py`` (see its docstring for the data and the
rule); its output is pasted below. Thresholds between the grid points (steps of 0.1 in
``hash_weight`` and ``layout_weight``) are interpolated linearly on the triangle of the three
nearest grid points, so any valid pair of weights gets a threshold.
"""

from __future__ import annotations

import math

__all__ = ["STEP", "THRESHOLDS", "threshold_for"]

#: Grid step of the table.
STEP = 0.1

# fmt: off
#: (round(hash_weight / STEP), round(layout_weight / STEP)) -> threshold. Pasted from calibrate.py.
THRESHOLDS: dict[tuple[int, int], float] = {
    (0, 0): 0.1180, (0, 1): 0.1545, (0, 2): 0.1755, (0, 3): 0.1795, (0, 4): 0.1800, (0, 5): 0.1725,
    (0, 6): 0.1640, (0, 7): 0.1575, (0, 8): 0.1510, (0, 9): 0.1330, (0, 10): 0.1050,
    (1, 0): 0.1850, (1, 1): 0.2190, (1, 2): 0.2335, (1, 3): 0.2360, (1, 4): 0.2380, (1, 5): 0.2390,
    (1, 6): 0.2355, (1, 7): 0.2290, (1, 8): 0.2155, (1, 9): 0.1880,
    (2, 0): 0.2390, (2, 1): 0.2680, (2, 2): 0.2885, (2, 3): 0.2945, (2, 4): 0.2985, (2, 5): 0.3005,
    (2, 6): 0.2950, (2, 7): 0.2795, (2, 8): 0.2505,
    (3, 0): 0.2730, (3, 1): 0.3215, (3, 2): 0.3385, (3, 3): 0.3465, (3, 4): 0.3500, (3, 5): 0.3460,
    (3, 6): 0.3305, (3, 7): 0.3065,
    (4, 0): 0.3115, (4, 1): 0.3585, (4, 2): 0.3855, (4, 3): 0.3925, (4, 4): 0.3900, (4, 5): 0.3770,
    (4, 6): 0.3495,
    (5, 0): 0.3225, (5, 1): 0.3800, (5, 2): 0.4170, (5, 3): 0.4270, (5, 4): 0.4150, (5, 5): 0.3860,
    (6, 0): 0.3405, (6, 1): 0.4140, (6, 2): 0.4450, (6, 3): 0.4435, (6, 4): 0.4220,
    (7, 0): 0.3625, (7, 1): 0.4335, (7, 2): 0.4715, (7, 3): 0.4520,
    (8, 0): 0.3765, (8, 1): 0.4450, (8, 2): 0.4685,
    (9, 0): 0.3885, (9, 1): 0.4225,
    (10, 0): 0.3975,
}
# fmt: on


def _snap(value: float) -> float:
    """Grid coordinates within rounding error of a grid point are that point."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 1e-9 else value


def _at(i: int, j: int) -> float:
    return THRESHOLDS[(i, j)]


def threshold_for(hash_weight: float, layout_weight: float) -> float:
    """The calibrated threshold for these weights (``hash_weight + layout_weight <= 1``)."""
    x, y = _snap(hash_weight / STEP), _snap(layout_weight / STEP)
    steps = round(1 / STEP)
    i, j = min(math.floor(x), steps), min(math.floor(y), steps)
    fx, fy = max(0.0, x - i), max(0.0, y - j)
    if fx + fy <= 1 or i + j + 2 > steps:
        # Lower-left triangle (i, j), (i + 1, j), (i, j + 1); always inside the table's triangle
        # when the weights are valid.
        base = _at(i, j)
        dx = _at(i + 1, j) - base if fx > 0 else 0.0
        dy = _at(i, j + 1) - base if fy > 0 else 0.0
        return base + fx * dx + fy * dy
    # Upper-right triangle (i + 1, j + 1), (i, j + 1), (i + 1, j).
    top = _at(i + 1, j + 1)
    return top + (1 - fx) * (_at(i, j + 1) - top) + (1 - fy) * (_at(i + 1, j) - top)
