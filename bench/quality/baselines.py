"""Baselines computed in the same run, on the same image bytes the engine gets.

- ``pixels``: the image decoded to RGB, resized to 32 x 32 (area average), the 3,072 values
  L2-normalised; compared by cosine.
- ``histogram``: the 8 x 8 x 8 joint RGB histogram of the decoded image, L1-normalised, square
  rooted (so L2-normalised: cosine = Bhattacharyya coefficient); compared by cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from bench.quality.datasets import decode

__all__ = ["BASELINES", "pixels", "histogram", "features", "cosine_scores"]


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def pixels(image: Image.Image) -> np.ndarray:
    small = image.resize((32, 32), Image.Resampling.BOX, reducing_gap=None)
    return np.asarray(small, dtype=np.float32).reshape(-1)


def histogram(image: Image.Image) -> np.ndarray:
    codes = np.asarray(image, dtype=np.uint8).reshape(-1, 3) >> 5  # 8 levels per channel
    index = (codes[:, 0].astype(np.int64) * 8 + codes[:, 1]) * 8 + codes[:, 2]
    counts = np.bincount(index, minlength=512).astype(np.float32)
    return np.sqrt(counts / max(float(counts.sum()), 1.0))


BASELINES: dict[str, Callable[[Image.Image], np.ndarray]] = {
    "baseline: 32x32 pixels": pixels,
    "baseline: 8x8x8 RGB histogram": histogram,
}


def features(datas: Sequence[bytes], function: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Unit rows ``[len(datas), d]``."""
    return _unit(np.stack([function(decode(data)) for data in datas]).astype(np.float32))


def cosine_scores(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return np.asarray(queries @ database.T, dtype=np.float32)
