"""sRGB <-> CIELAB (D65 white, 2 degree observer), vectorised with numpy.

sRGB values are gamma-encoded; they are linearised (IEC 61966-2-1), taken to CIE XYZ with the
sRGB primaries and normalised by the D65 white of the same matrix (so sRGB white is exactly
L=100, a=b=0), then mapped to CIELAB with the CIE 1976 formulas (exact constants 6/29).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["srgb_to_linear", "linear_to_srgb", "srgb_to_lab", "lab_to_srgb", "lab_to_hex", "group_pixels", "WHITE_D65"]

#: Linear sRGB -> XYZ (D65), IEC 61966-2-1.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
#: XYZ of sRGB white (D65): the row sums of the matrix (0.95047, 1.0, 1.08883).
WHITE_D65 = _RGB_TO_XYZ.sum(axis=1)
#: Linear sRGB -> XYZ / white, and back.
_TO_XYZN = _RGB_TO_XYZ / WHITE_D65[:, None]
_FROM_XYZN = np.linalg.inv(_TO_XYZN)

_DELTA = 6.0 / 29.0
_DELTA3 = _DELTA**3
_SLOPE = 1.0 / (3.0 * _DELTA * _DELTA)
_OFFSET = 4.0 / 29.0


def srgb_to_linear(values: Any) -> np.ndarray:
    """Gamma-encoded sRGB in [0, 1] -> linear light."""
    c = np.asarray(values, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: Any) -> np.ndarray:
    """Linear light -> gamma-encoded sRGB (not clipped)."""
    c = np.asarray(values, dtype=np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055)


#: Linear value of each 8-bit sRGB level.
_LINEAR_LUT = srgb_to_linear(np.arange(256) / 255.0)


def srgb_to_lab(rgb: Any) -> np.ndarray:
    """CIELAB ``[..., 3]`` (float64) of sRGB colours ``[..., 3]``: integers (uint8 or 0..255)
    or floats in [0, 1]."""
    array = np.asarray(rgb)
    if array.shape[-1:] != (3,):
        raise ValueError(f"colours must have a last axis of 3 (R, G, B), got shape {array.shape}")
    if array.dtype == np.uint8:
        linear = _LINEAR_LUT[array]
    elif np.issubdtype(array.dtype, np.integer):
        linear = _LINEAR_LUT[np.clip(array, 0, 255)]
    else:
        linear = srgb_to_linear(array)
    xyz = linear @ _TO_XYZN.T
    f = np.where(xyz > _DELTA3, np.cbrt(xyz), xyz * _SLOPE + _OFFSET)
    lab = np.empty(f.shape, dtype=np.float64)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def lab_to_srgb(lab: Any) -> np.ndarray:
    """Gamma-encoded sRGB ``[..., 3]`` in [0, 1] of CIELAB colours (out-of-gamut values clipped)."""
    array = np.asarray(lab, dtype=np.float64)
    fy = (array[..., 0] + 16.0) / 116.0
    f = np.stack([fy + array[..., 1] / 500.0, fy, fy - array[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > _DELTA, f**3, (f - _OFFSET) / _SLOPE)
    rgb: np.ndarray = np.clip(linear_to_srgb(xyz @ _FROM_XYZN.T), 0.0, 1.0)
    return rgb


def lab_to_hex(lab: Any) -> list[str]:
    """``#rrggbb`` of each CIELAB colour of ``[n, 3]``."""
    rgb = np.rint(lab_to_srgb(np.atleast_2d(lab)) * 255.0).astype(np.int64)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb.tolist()]


def group_pixels(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of uint8 RGB ``pixels [n, 3]``, grouped by 15-bit cell (5 bits a channel):
    the CIELAB of each group's mean ``[m, 3]`` and its share of the pixels ``[m]`` (summing to 1),
    in cell order."""
    pixels = np.asarray(pixels, dtype=np.uint8).reshape(-1, 3)
    if len(pixels) == 0:
        raise ValueError("no pixels")
    cells = pixels >> 3
    key = (cells[:, 0].astype(np.intp) << 10) | (cells[:, 1].astype(np.intp) << 5) | cells[:, 2]
    counts = np.bincount(key, minlength=32768)
    used = np.flatnonzero(counts)
    sums = np.stack([np.bincount(key, weights=pixels[:, c], minlength=32768)[used] for c in range(3)], axis=1)
    mass = counts[used].astype(np.float64)
    lab = srgb_to_lab(sums / (mass[:, None] * 255.0))
    return lab, mass / len(pixels)
