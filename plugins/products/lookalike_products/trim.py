"""Background trimming and square padding for product photos (numpy and Pillow only).

:func:`find_box` locates the object on a uniform background:

1. The image is reduced (area average over square blocks) to at most :data:`ANALYSIS_SIDE`
   pixels on its longer side, which also averages JPEG noise away.
2. The background colour is the per-channel median of a band along the border (about 6% of the
   shorter side). A thin frame (a line a few pixels wide around the picture) takes a small share
   of that band, so the median is still the background's colour.
3. A pixel is *foreground* when one of its channels differs from the background by more than
   ``tolerance``. If less than half of the border band is background, the photo has no uniform
   background and nothing is trimmed.
4. Frame lines are dropped: on each side, outer rows (columns) that are mostly foreground, up to
   3% of the side deep, followed by a row that is mostly background.
5. The box spans the rows and columns holding at least a few foreground pixels (0.5% of the
   row's length), so isolated noise pixels do not stretch it.

:func:`trim_and_pad` crops to that box plus a margin (a fraction of the box's longer side) and
pads the crop to a square with the background colour, centred, so the aspect of the object is
kept. It never trims to nothing: an empty mask keeps the whole image, and a tiny box is grown to
a minimum size around its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["ANALYSIS_SIDE", "Box", "Trim", "find_box", "pad_to_square", "trim_and_pad"]

#: Longer side of the reduced copy the analysis runs on.
ANALYSIS_SIDE = 512
#: Depth of the border band that gives the background colour, as a fraction of the shorter side.
BORDER_BAND = 0.06
#: Deepest frame stripped on each side, as a fraction of that side.
FRAME_DEPTH = 0.03
#: Share of background pixels in the border band below which the background is not uniform.
UNIFORM_SHARE = 0.5
#: Share of a row's (column's) pixels that must be foreground for it to hold the object.
ROW_SHARE = 0.005
#: Smallest box side, as a fraction of the image's shorter side.
MIN_BOX = 0.02

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    """A pixel box, ``left <= x < right`` and ``top <= y < bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Trim:
    """What :func:`find_box` found: the object's box (the whole image when nothing is trimmed),
    the background colour, and whether the background was uniform enough to trim."""

    box: Box
    background: RGB
    uniform: bool


def _reduced(image: Image.Image) -> tuple[np.ndarray, float, float]:
    """An RGB int16 array of at most ANALYSIS_SIDE pixels a side, and the x/y scale back."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    factor = math.ceil(max(width, height) / ANALYSIS_SIDE)
    if factor > 1:
        rgb = rgb.reduce(factor)  # area average over factor x factor blocks
    array = np.asarray(rgb, dtype=np.int16)
    return array, width / array.shape[1], height / array.shape[0]


def _border_band(array: np.ndarray, depth: int) -> np.ndarray:
    """The pixels of a band ``depth`` deep along the four edges, as ``[n, 3]``."""
    height, width = array.shape[:2]
    depth = max(1, min(depth, height // 2 or 1, width // 2 or 1))
    parts = [
        array[:depth].reshape(-1, 3),
        array[height - depth :].reshape(-1, 3),
        array[depth : height - depth, :depth].reshape(-1, 3),
        array[depth : height - depth, width - depth :].reshape(-1, 3),
    ]
    return np.concatenate(parts, axis=0)


def _frame_depth(shares: np.ndarray, limit: int) -> int:
    """How many leading rows of ``shares`` (foreground share per row, outside first) are a frame:
    mostly foreground, at most ``limit`` of them, followed by a mostly-background row."""
    depth = 0
    while depth < min(limit, len(shares) - 1) and shares[depth] >= 0.5:
        depth += 1
    if depth == 0 or shares[depth] >= 0.5:
        return 0
    return depth


def _span(counts: np.ndarray, minimum: int) -> tuple[int, int] | None:
    """First and one-past-last index whose count reaches ``minimum``."""
    hits = np.flatnonzero(counts >= minimum)
    if hits.size == 0:
        return None
    return int(hits[0]), int(hits[-1]) + 1


def find_box(image: Image.Image, tolerance: int = 24) -> Trim:
    """The object's box on a uniform background (see the module documentation)."""
    array, scale_x, scale_y = _reduced(image)
    height, width = array.shape[:2]
    full = Box(0, 0, image.width, image.height)
    band = _border_band(array, max(2, round(BORDER_BAND * min(height, width))))
    background_array = np.median(band, axis=0)
    background: RGB = (int(background_array[0]), int(background_array[1]), int(background_array[2]))
    reference = np.asarray(background, dtype=np.int16)
    share = float(np.mean(np.abs(band - reference).max(axis=1) <= tolerance))
    if share < UNIFORM_SHARE:
        return Trim(full, background, uniform=False)

    mask = np.abs(array - reference).max(axis=2) > tolerance
    # Frame lines along the edges.
    top = _frame_depth(mask.mean(axis=1), max(1, math.ceil(FRAME_DEPTH * height)))
    bottom = _frame_depth(mask.mean(axis=1)[::-1], max(1, math.ceil(FRAME_DEPTH * height)))
    left = _frame_depth(mask.mean(axis=0), max(1, math.ceil(FRAME_DEPTH * width)))
    right = _frame_depth(mask.mean(axis=0)[::-1], max(1, math.ceil(FRAME_DEPTH * width)))
    inner = mask[top : height - bottom, left : width - right]
    if inner.size == 0:
        return Trim(full, background, uniform=True)

    rows = _span(inner.sum(axis=1), max(1, int(ROW_SHARE * inner.shape[1])))
    cols = _span(inner.sum(axis=0), max(1, int(ROW_SHARE * inner.shape[0])))
    if rows is None or cols is None:
        return Trim(full, background, uniform=True)
    y0, y1 = rows[0] + top, rows[1] + top
    x0, x1 = cols[0] + left, cols[1] + left
    box = Box(
        max(0, math.floor(x0 * scale_x)),
        max(0, math.floor(y0 * scale_y)),
        min(image.width, math.ceil(x1 * scale_x)),
        min(image.height, math.ceil(y1 * scale_y)),
    )
    return Trim(_at_least(box, image.width, image.height), background, uniform=True)


def _grow(start: int, stop: int, size: int, limit: int) -> tuple[int, int]:
    """The interval ``[start, stop)`` grown around its centre to ``size`` (within ``[0, limit)``)."""
    if stop - start >= size:
        return start, stop
    size = min(size, limit)
    start = max(0, min((start + stop - size) // 2, limit - size))
    return start, start + size


def _at_least(box: Box, width: int, height: int) -> Box:
    side = max(1, round(MIN_BOX * min(width, height)))
    left, right = _grow(box.left, box.right, side, width)
    top, bottom = _grow(box.top, box.bottom, side, height)
    return Box(left, top, right, bottom)


def pad_to_square(image: Image.Image, colour: RGB) -> Image.Image:
    """The image centred on a square canvas of ``colour`` (the image itself if already square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def trim_and_pad(
    image: Image.Image, *, trim: bool = True, tolerance: int = 24, margin: float = 0.04, size: int | None = None
) -> Image.Image:
    """The object cropped from its background (with ``margin``, a fraction of the box's longer
    side, of background around it) and padded to a square with the background colour; with
    ``size``, scaled (bicubic, aspect kept) to fit that square before padding, which is cheaper
    than padding at full resolution and resizing the square."""
    rgb = image.convert("RGB")
    found = find_box(rgb, tolerance)
    box = found.box
    if trim and found.uniform and (box.width, box.height) != rgb.size:
        pad = round(margin * max(box.width, box.height))
        width, height = box.width + 2 * pad, box.height + 2 * pad
        # The crop may reach past the image: Pillow fills that with black, so paste onto the background.
        canvas = Image.new("RGB", (width, height), found.background)
        left, top = box.left - pad, box.top - pad
        inside = (max(0, left), max(0, top), min(rgb.width, left + width), min(rgb.height, top + height))
        canvas.paste(rgb.crop(inside), (inside[0] - left, inside[1] - top))
        rgb = canvas
    if size is not None:
        scale = size / max(rgb.size)
        fitted = (max(1, min(size, round(rgb.width * scale))), max(1, min(size, round(rgb.height * scale))))
        if fitted != rgb.size:
            rgb = rgb.resize(fitted, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return pad_to_square(rgb, found.background)
