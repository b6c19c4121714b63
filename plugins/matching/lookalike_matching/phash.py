"""The 64-bit DCT perceptual hash (pHash), numpy and Pillow only.

The image is converted to greyscale and reduced to 32 x 32 pixels (area average, which ignores
resizing and most re-encoding noise), then transformed with the orthonormal 2-D DCT-II. The 8 x 8
lowest frequencies (the top-left block) are kept; each bit says whether a coefficient lies above
the median of the 63 AC coefficients (the DC term, the mean brightness, is left out of the median:
it dwarfs the others). The DC bit is therefore always set for any image that is not black; the 63
others carry the image's coarse structure.

A horizontal mirror multiplies the coefficient of horizontal frequency ``v`` by ``(-1) ** v``, so
the hash of a mirrored image can be computed from the same DCT (:func:`phash_pair`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "HASH_BITS",
    "HASH_SIZE",
    "dct_matrix",
    "dct_low_block",
    "mirror_block",
    "grey32",
    "hash_bits",
    "phash",
    "phash_pair",
    "hamming",
    "pack",
]

#: Side of the greyscale thumbnail the DCT runs on.
HASH_SIZE = 32
#: Side of the kept low-frequency block; the hash has ``LOW ** 2`` bits.
LOW = 8
HASH_BITS = LOW * LOW


def dct_matrix(n: int = HASH_SIZE) -> np.ndarray:
    """The orthonormal DCT-II matrix ``C`` (``C @ x`` transforms a column, ``C @ X @ C.T`` an image)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return np.asarray(matrix, dtype=np.float64)


_DCT = dct_matrix()
#: ``(-1) ** v`` for the kept block's columns: the effect of a horizontal mirror on the DCT.
_MIRROR = np.where(np.arange(LOW) % 2 == 0, 1.0, -1.0)[None, :]


def grey32(image: Image.Image) -> np.ndarray:
    """The 32 x 32 greyscale thumbnail, float64 in 0..255."""
    grey = image.convert("L").resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float64)


def hash_bits(low: np.ndarray) -> np.ndarray:
    """Bits (bool ``[64]``) of an 8 x 8 low-frequency block: above the median of its AC terms."""
    flat = low.reshape(-1)
    return np.asarray(flat > np.median(flat[1:]), dtype=bool)


def dct_low_block(grey: np.ndarray) -> np.ndarray:
    """The 8 x 8 lowest-frequency block of the 2-D DCT of a 32 x 32 thumbnail."""
    coefficients = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T
    return np.asarray(coefficients[:LOW, :LOW])


def mirror_block(low: np.ndarray) -> np.ndarray:
    """The block of the horizontally mirrored thumbnail."""
    return np.asarray(low * _MIRROR)


def phash(image: Image.Image) -> np.ndarray:
    """The 64-bit pHash as bool ``[64]`` (row-major over the 8 x 8 block)."""
    return hash_bits(dct_low_block(grey32(image)))


def phash_pair(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The pHash of the image and of its horizontal mirror (from one DCT)."""
    low = dct_low_block(grey32(image))
    return hash_bits(low), hash_bits(mirror_block(low))


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of differing bits of two bool hashes."""
    return int(np.count_nonzero(np.asarray(a, dtype=bool) != np.asarray(b, dtype=bool)))


def pack(bits: np.ndarray) -> str:
    """The hash as 16 hex digits (for display)."""
    return bytes(np.packbits(np.asarray(bits, dtype=bool))).hex()
