"""The ``products`` collection type: product photos, grouped by product.

Product shots put one object on a plain background, framed anywhere and at any size. The
type trims that background (the box of the pixels that differ from the border's colour, see
:mod:`lookalike_products.trim`), keeps a small margin, and pads the crop to a square with the
background colour instead of cropping the centre, so the whole object reaches the model at the
same scale whatever its framing. The square is resized to 224 pixels (no centre crop) and
embedded with EfficientNet-Lite0 (ImageNet), 1280-d, L2-normalised, cosine.

Records group by ``product_id`` by default (several photos of one product); searches can
return one hit per product with ``group_by``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType, TypeContext, models
from lookalike_products.trim import find_box, pad_to_square, trim_and_pad

__all__ = ["ProductsType", "ProductsConfig", "find_box", "pad_to_square", "trim_and_pad"]


class ProductsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Trim the uniform background around the product (the crop is padded to a square either way).
    trim: bool = True
    #: How far (0-255, largest channel difference) a pixel may be from the background colour and
    #: still count as background; higher tolerates more JPEG noise and shading.
    tolerance: Annotated[int, msgspec.Meta(ge=0, le=255)] = 24
    #: Background kept around the product's box, as a fraction of the box's longer side.
    margin: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.04


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


class ProductsType(CollectionType):
    name = "products"
    version = "1.0"
    description = "Product photos: background trimmed, padded to a square, EfficientNet-Lite0 embeddings"
    Config = ProductsConfig
    metric = "cos"
    default_product_id_field = "product_id"

    config: ProductsConfig

    def __init__(self, config: ProductsConfig, context: TypeContext) -> None:
        super().__init__(config, context)

    @property
    def dimension(self) -> int:
        return 1280

    def square(self, image: Image.Image) -> Image.Image:
        """The trimmed (per the configuration), square-padded image the model sees (224 pixels)."""
        config = self.config
        return trim_and_pad(
            image, trim=config.trim, tolerance=config.tolerance, margin=config.margin, size=models.IMAGE_SIZE
        )

    @property
    def input_side(self) -> int | None:
        return 512  # the trim needs detail; the product is then scaled to 224

    def preprocess(self, image: Image.Image) -> Any:
        return models.pixel_values([self.square(image)], crop=False)[0]

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dimension), dtype=np.float32)
        pixels = np.stack(batch).astype(np.float32, copy=False)
        embedding, _logits = models.image_model(self.context.threads).run(pixels)
        return _unit_rows(embedding)
