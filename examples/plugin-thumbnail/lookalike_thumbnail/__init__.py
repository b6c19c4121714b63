"""An example collection type: each image becomes a tiny colour thumbnail, flattened.

It is the worked example of the README's "Writing a collection type": no model, a few lines,
and it passes the conformance suite. Good for exact-ish copies; useless for "looks like".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType


class ThumbnailConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Side of the thumbnail in pixels: the vector has side * side * 3 numbers.
    side: Annotated[int, msgspec.Meta(ge=2, le=32)] = 8


class ThumbnailType(CollectionType):
    name = "thumbnail"
    version = "1.0"
    description = "Tiny colour thumbnails (example plugin)"
    Config = ThumbnailConfig
    metric = "cos"

    @property
    def dimension(self) -> int:
        side: int = self.config.side
        return side * side * 3

    def preprocess(self, image: Image.Image) -> Any:
        side = self.config.side
        small = image.resize((side, side), Image.Resampling.BOX)
        pixels = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
        return pixels - pixels.mean() + 1e-3  # centred, so cosine compares the pattern, not the brightness

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        return np.stack(batch).astype(np.float32)
