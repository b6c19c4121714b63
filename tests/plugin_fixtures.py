"""Collection types used by the registry and engine tests (loaded through fake entry points)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType, SupportsColorQuery, SupportsMultiVector, SupportsTextQuery

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


class MeanColourConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    grid: int = 2


class MeanColour(CollectionType, SupportsTextQuery, SupportsColorQuery):
    """Mean colour per grid cell: tiny, deterministic, and with every query kind."""

    name = "meancolour"
    description = "mean colour per cell (tests)"
    Config = MeanColourConfig
    derived_fields = frozenset({"_mean"})

    @property
    def dimension(self) -> int:
        grid: int = self.config.grid
        return grid * grid * 3

    def preprocess(self, image: Image.Image) -> Any:
        grid = self.config.grid
        return np.asarray(image.resize((grid, grid), Image.Resampling.BOX), dtype=np.float32).reshape(-1) / 255 + 0.01

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        return np.stack(batch).astype(np.float32)

    def describe(self, image: Image.Image) -> dict[str, Any]:
        mean = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        return {"_mean": [round(float(v), 1) for v in mean]}

    def _colour_vector(self, rgb: tuple[int, int, int]) -> np.ndarray:
        grid = self.config.grid
        return np.tile(np.asarray(rgb, dtype=np.float32) / 255 + 0.01, grid * grid)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            named = [rgb for name, rgb in COLOURS.items() if name in text.lower()] or [(128, 128, 128)]
            rows.append(np.mean([self._colour_vector(rgb) for rgb in named], axis=0))
        return np.stack(rows).astype(np.float32)

    def embed_colors(self, colors: Sequence[tuple[tuple[int, int, int], float]]) -> np.ndarray:
        return np.sum([w * self._colour_vector(rgb) for rgb, w in colors], axis=0).astype(np.float32)


class Mirrored(MeanColour, SupportsMultiVector):
    """Two views per image: the image and its mirror."""

    name = "mirrored"
    vectors_per_image = 2

    def preprocess(self, image: Image.Image) -> Any:
        return (super().preprocess(image), super().preprocess(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        return np.stack([pair[0] for pair in batch]).astype(np.float32)

    def embed_views(self, batch: Sequence[Any]) -> np.ndarray:
        return np.stack([np.stack(pair) for pair in batch]).astype(np.float32)


class NotAType:
    name = "nottype"


class BadName(MeanColour):
    name = "Bad Name!"
