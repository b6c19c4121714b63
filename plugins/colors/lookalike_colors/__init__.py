"""The ``colors`` collection type: images that share dominant colours, and search by colours.

Each image is shrunk to a thumbnail (at most ``max_side`` pixels a side, area-averaged) and its
pixels are taken to CIELAB. The vector is a soft-binned CIELAB histogram of those pixels,
normalised and square-rooted (see :mod:`lookalike_colors.descriptor`): its squared L2 distance
("l2sq") is 2 x the squared Hellinger distance of the colour distributions, 0 for the same
colours and 2 for no colour in common. A colour query (``[{"color": "#ff0000", "weight": 0.7},
...]``) builds the same histogram from the given colours and shares, so it finds the images whose
colours match in hue and in proportion.

Every record also gets ``_colors``, the image's palette: up to ``palette_size`` dominant colours
from a deterministic weighted k-means in CIELAB, heaviest first::

    [{"color": "#d42a2a", "weight": 0.62, "lab": [46.8, 64.9, 42.1]}, ...]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType, InvalidInputError, SupportsColorQuery, TypeContext
from lookalike_colors.descriptor import Grid, descriptor, grid, histogram
from lookalike_colors.lab import group_pixels, lab_to_hex, srgb_to_lab
from lookalike_colors.palette import kmeans

__all__ = ["ColorsType", "ColorsConfig"]


class ColorsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Most colours in an image's palette (``_colors``).
    palette_size: Annotated[int, msgspec.Meta(ge=1, le=16)] = 5
    #: Resolution of the CIELAB histogram: bin centres along a* and along b* (-100..100); L*
    #: gets the same spacing. 9 gives a spacing of 25 and 294 dimensions.
    bins: Annotated[int, msgspec.Meta(ge=5, le=13)] = 9
    #: Width of the Gaussian kernel that spreads each colour over nearby bins, in bin spacings.
    smoothing: Annotated[float, msgspec.Meta(ge=0.25, le=2.0)] = 0.5
    #: Longest side of the thumbnail the colours are read from, in pixels.
    max_side: Annotated[int, msgspec.Meta(ge=8, le=512)] = 64


class ColorsType(CollectionType, SupportsColorQuery):
    name = "colors"
    version = "1.0"
    description = "Dominant-colour similarity: CIELAB colour histograms, palettes, and search by colours"
    Config = ColorsConfig
    metric = "l2sq"
    derived_fields = frozenset({"_colors"})

    config: ColorsConfig

    def __init__(self, config: ColorsConfig, context: TypeContext) -> None:
        super().__init__(config, context)
        self.grid: Grid = grid(config.bins, config.smoothing)
        # The engine calls describe() then preprocess() on one image, in one thread: preprocess
        # reuses the colours describe read (matched by identity, so an image edited in place
        # between the two calls would be read stale; the engine never does that).
        self._last = threading.local()

    @property
    def dimension(self) -> int:
        return self.grid.dimension

    # -- pixels ----------------------------------------------------------------------------

    def thumbnail(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """The image's colours: CIELAB ``[m, 3]`` and shares ``[m]`` (summing to 1) of a thumbnail of
        at most ``max_side`` pixels a side, its pixels grouped by 15-bit RGB cell (each group is
        the mean of its pixels, so flat colours stay exact)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        side = max(width, height)
        limit = self.config.max_side
        if side > limit:
            size = (max(1, round(width * limit / side)), max(1, round(height * limit / side)))
            image = image.resize(size, Image.Resampling.BOX, reducing_gap=1.0)
        return group_pixels(np.asarray(image, dtype=np.uint8).reshape(-1, 3))

    def _pixels(self, image: Image.Image, *, keep: bool) -> tuple[np.ndarray, np.ndarray]:
        last = self._last
        ref = getattr(last, "image", None)
        if ref is not None and ref() is image:
            colours: tuple[np.ndarray, np.ndarray] = last.colours
        else:
            colours = self.thumbnail(image)
        if keep:
            try:
                last.image, last.colours = weakref.ref(image), colours
            except TypeError:
                last.image = last.colours = None
        else:
            last.image = last.colours = None
        return colours

    # -- the contract ----------------------------------------------------------------------

    @property
    def input_side(self) -> int | None:
        side: int = self.config.max_side
        return side

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The image's descriptor (all the work happens here, in the decoding threads)."""
        return descriptor(histogram(self.grid, *self._pixels(image, keep=False)))

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([np.asarray(row, dtype=np.float32) for row in batch])

    def describe(self, image: Image.Image) -> dict[str, Any]:
        return {"_colors": self.palette(image)}

    def embed_colors(self, colors: Sequence[tuple[tuple[int, int, int], float]]) -> np.ndarray:
        if not colors:
            raise InvalidInputError("colors must name at least one colour")
        try:
            rgb = np.array([c for c, _ in colors], dtype=np.int64)
            weights = np.array([w for _, w in colors], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                "colors must be ((r, g, b), weight) pairs; use lookalike.sdk.parse_colors"
            ) from error
        if rgb.shape != (len(colors), 3) or ((rgb < 0) | (rgb > 255)).any():
            raise InvalidInputError("colors must be (r, g, b) triples of 0..255")
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise InvalidInputError("colour weights must be positive numbers")
        return descriptor(histogram(self.grid, srgb_to_lab(rgb.astype(np.uint8)), weights))

    # -- palettes --------------------------------------------------------------------------

    def palette(self, image: Image.Image) -> list[dict[str, Any]]:
        """The image's dominant colours, heaviest first: ``color`` (hex), ``weight`` (share of
        the pixels) and ``lab``."""
        centres, shares = kmeans(*self._pixels(image, keep=True), k=self.config.palette_size)
        return [
            {
                "color": hex_,
                "weight": round(float(share), 3),
                "lab": [round(float(v), 1) + 0.0 for v in centre],
            }
            for hex_, share, centre in zip(lab_to_hex(centres), shares, centres, strict=True)
        ]
