"""What the matching type computes per image, and how the parts become one cosine vector per view.

Per image (in :meth:`MatchingType.preprocess`, which runs in the decoding threads):

- the model input (the standard resize and centre crop) for the EfficientNet-Lite0 embedding;
- the 64-bit pHash (:mod:`lookalike_matching.phash`) and the 6 x 6 colour layout
  (:mod:`lookalike_matching.layout`) of each of the :data:`VIEWS`: the image, its horizontal
  mirror, its centre crop (:data:`CROP_VIEW` of each side) and that crop's mirror.

The hash and the layout are computed on a copy reduced to :data:`WORK_SIDE` pixels (area
average), which costs little and keeps large images cheap.

One model run per image: the views share the image's embedding. The pooled embedding hardly
changes under a mirror (cosine >= 0.94, median 0.98, on the calibration images of
``calibrate.py``) or a centre crop, while the hash and the layout, which record where things
are, do; so sharing loses nothing measurable and halves the model time against embedding the
mirror separately.

:func:`assemble` concatenates, with weights ``we + wh + wl = 1``::

    v = [ sqrt(we) * e / |e| ,  sqrt(wh) / 8 * (2 * bits - 1) ,  sqrt(wl) * layout ]

Each block has squared norm equal to its weight, so ``|v| = 1`` and, for two views ``a``, ``b``::

    cos(v_a, v_b) = we * cos(e_a, e_b) + wh * (1 - 2 * hamming(bits_a, bits_b) / 64) + wl * cos(l_a, l_b)

exactly; the index's cosine distance ``1 - cos`` is the weighted sum of the embedding's cosine
distance, ``2 * hamming / 64`` and the layout's cosine distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.sdk import models
from lookalike_matching.layout import LAYOUT_DIM, cells, layout_of_cells, mirror_cells
from lookalike_matching.phash import HASH_BITS, dct_low_block, grey32, hash_bits, mirror_block

__all__ = [
    "EMBEDDING_DIM",
    "VECTOR_DIM",
    "VIEWS",
    "CROP_VIEW",
    "WORK_SIDE",
    "Features",
    "features",
    "assemble",
    "similarity",
]

EMBEDDING_DIM = 1280
VECTOR_DIM = EMBEDDING_DIM + HASH_BITS + LAYOUT_DIM
#: The views of each image, in order (view 0 is what a query uses).
VIEWS = ("image", "mirror", "centre crop", "centre crop mirror")
#: Share of each side kept by the centre-crop views.
CROP_VIEW = 0.85
#: Longer side of the reduced copy that the hash and the layout are computed on.
WORK_SIDE = 256


@dataclass(frozen=True)
class Features:
    """One preprocessed image: model input ``[3, 224, 224]``, and per view the hash bits
    (bool ``[views, 64]``) and the layout (float64 ``[views, LAYOUT_DIM]``)."""

    pixels: np.ndarray
    bits: np.ndarray
    layouts: np.ndarray


def _reduced(image: Image.Image) -> Image.Image:
    longest = max(image.size)
    if longest <= WORK_SIDE:
        return image
    factor = WORK_SIDE / longest
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BOX)


def centre_crop(image: Image.Image, keep: float = CROP_VIEW) -> Image.Image:
    """The centred box of ``keep`` of each side."""
    width, height = image.size
    w, h = max(1, round(width * keep)), max(1, round(height * keep))
    left, top = (width - w) // 2, (height - h) // 2
    return image.crop((left, top, left + w, top + h))


def _hash_and_layout(image: Image.Image) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bits and layouts of the image and of its mirror (from one DCT and one cell grid)."""
    block = dct_low_block(grey32(image))
    grid = cells(image)
    return (
        [hash_bits(block), hash_bits(mirror_block(block))],
        [layout_of_cells(grid), layout_of_cells(mirror_cells(grid))],
    )


def features(image: Image.Image) -> Features:
    """The model input and the per-view hashes and layouts of an image (see :data:`VIEWS`)."""
    rgb = image.convert("RGB")
    pixels = models.pixel_values([rgb], crop=True)[0]
    work = _reduced(rgb)
    bits, layouts = _hash_and_layout(work)
    crop_bits, crop_layouts = _hash_and_layout(centre_crop(work))
    return Features(
        pixels=pixels,
        bits=np.stack(bits + crop_bits),
        layouts=np.stack(layouts + crop_layouts),
    )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12))


def assemble(
    embeddings: np.ndarray, bits: np.ndarray, layouts: np.ndarray, hash_weight: float, layout_weight: float
) -> np.ndarray:
    """Vectors ``[n, views, VECTOR_DIM]`` float32 from embeddings ``[n, 1280]``, bits
    ``[n, views, 64]`` and layouts ``[n, views, LAYOUT_DIM]`` (see the module documentation)."""
    embedding_weight = max(0.0, 1.0 - hash_weight - layout_weight)
    n, views = bits.shape[:2]
    out = np.empty((n, views, VECTOR_DIM), dtype=np.float64)
    out[:, :, :EMBEDDING_DIM] = math.sqrt(embedding_weight) * _unit_rows(embeddings)[:, None, :]
    signs = np.where(np.asarray(bits, dtype=bool), 1.0, -1.0)
    out[:, :, EMBEDDING_DIM : EMBEDDING_DIM + HASH_BITS] = math.sqrt(hash_weight) / math.sqrt(HASH_BITS) * signs
    out[:, :, EMBEDDING_DIM + HASH_BITS :] = math.sqrt(layout_weight) * np.asarray(layouts, dtype=np.float64)
    return out.astype(np.float32)


def similarity(
    embedding_cos: np.ndarray | float,
    hamming: np.ndarray | float,
    layout_cos: np.ndarray | float,
    hash_weight: float,
    layout_weight: float,
) -> np.ndarray:
    """The cosine of two assembled vectors from its parts (the identity above), elementwise."""
    embedding_weight = max(0.0, 1.0 - hash_weight - layout_weight)
    return np.asarray(
        embedding_weight * np.asarray(embedding_cos)
        + hash_weight * (1.0 - 2.0 * np.asarray(hamming) / HASH_BITS)
        + layout_weight * np.asarray(layout_cos)
    )
