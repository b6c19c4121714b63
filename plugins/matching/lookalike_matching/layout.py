"""The colour layout descriptor: a 6 x 6 colour thumbnail, mean-centred and L2-normalised.

Each cell is the mean RGB colour of one of 6 x 6 equal tiles (area average). The mean over all
cells and channels is subtracted (a global brightness shift does not matter), and the result is
scaled to unit length, so the cosine of two descriptors compares where the colours are. It is
what a pooled CNN embedding lacks: the position of the image's parts (two product shots on the
same background with the same shapes in different places embed alike, but lay out differently).
To keep nearly uniform images (where the centred cells are only noise) stable, a constant
``FLOOR`` along the all-ones direction (orthogonal to every centred vector) is added before the
normalisation: a uniform image gets that constant direction, and for any image with visible
structure (cell deviations of tens of grey levels) its effect on cosines is below 0.1%.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["GRID", "LAYOUT_DIM", "FLOOR", "cells", "layout", "layout_of_cells", "mirror_cells"]

#: Cells per side.
GRID = 6
#: Length of the descriptor (cells x RGB).
LAYOUT_DIM = GRID * GRID * 3

#: Length of the constant added along the all-ones direction (grey levels, summed over cells).
FLOOR = 8.0

_ONES = np.full(LAYOUT_DIM, 1.0 / np.sqrt(LAYOUT_DIM))


def cells(image: Image.Image) -> np.ndarray:
    """Mean colour of each tile, ``[GRID, GRID, 3]`` float64 in 0..255."""
    small = image.convert("RGB").resize((GRID, GRID), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def mirror_cells(grid: np.ndarray) -> np.ndarray:
    """The cells of the horizontally mirrored image."""
    return np.ascontiguousarray(grid[:, ::-1])


def layout_of_cells(grid: np.ndarray) -> np.ndarray:
    """The descriptor (``[LAYOUT_DIM]`` float64, unit length) of a cell grid."""
    flat = np.asarray(grid, dtype=np.float64).reshape(-1)
    vector = flat - flat.mean() + FLOOR * _ONES
    return np.asarray(vector / np.linalg.norm(vector))


def layout(image: Image.Image) -> np.ndarray:
    """The colour layout descriptor of an image."""
    return layout_of_cells(cells(image))
