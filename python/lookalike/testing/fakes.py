"""Small deterministic fake inputs for testing collection types: no files, no network."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["fake_image", "fake_images", "image_base64", "fake_records"]

_PALETTE = [
    (220, 40, 40),
    (40, 160, 60),
    (40, 80, 200),
    (240, 200, 40),
    (150, 60, 170),
    (30, 170, 170),
    (240, 130, 30),
    (90, 90, 90),
]


def fake_image(seed: int, size: int = 96) -> Image.Image:
    """A deterministic RGB picture: a coloured background, shapes and a little texture; images
    of different seeds differ in colour and layout."""
    rng = np.random.default_rng(seed)
    background = _PALETTE[seed % len(_PALETTE)]
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(3 + seed % 3):
        x0, y0 = (int(v) for v in rng.integers(0, size * 2 // 3, size=2))
        w, h = (int(v) for v in rng.integers(size // 6, size // 2, size=2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    noise = rng.integers(-12, 13, size=(size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def fake_images(count: int, size: int = 96, start: int = 0) -> list[Image.Image]:
    return [fake_image(seed, size) for seed in range(start, start + count)]


def image_base64(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def fake_records(count: int, size: int = 96, start: int = 0) -> list[dict[str, object]]:
    """Records ``{"_id": "img-<seed>", "_base64": ..., "parity": "even"|"odd", "seed": n}``."""
    return [
        {
            "_id": f"img-{seed}",
            "_base64": image_base64(fake_image(seed, size)),
            "parity": "even" if seed % 2 == 0 else "odd",
            "seed": seed,
        }
        for seed in range(start, start + count)
    ]
