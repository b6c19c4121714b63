"""The ``generic`` collection type: general photos, searched by image and by text.

Offline default: EfficientNet-Lite0 (ImageNet) embeddings, 1280-d, cosine. Text queries go
through a concept bridge: the sentence embedding of the query is compared with prompts for the
1000 ImageNet classes, and the resulting class weights map the query onto the model's class
prototypes (its final-layer weights) in the image embedding space. A text query is then an
ordinary vector search in the same index, so it combines with filters, grouping and an image.
The bridge knows the 1000 ImageNet concepts and nothing else: "tabby cat", "espresso",
"space shuttle" work; "my aunt's red sofa from 1970" finds sofas at best.

Real CLIP: set ``model`` to a CLIP-style model folder (ONNX image and text encoders, a
``tokenizer.json`` and ``model.json``), a path or the name of a folder pulled with
``lookalike models pull NAME --from URL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from PIL import Image

from lookalike.sdk import CollectionType, InvalidConfigError, ModelError, SupportsTextQuery, TypeContext, models

__all__ = ["GenericType", "GenericConfig", "DEFAULT_MODEL"]

DEFAULT_MODEL = "efficientnet-lite0"


class GenericConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: "efficientnet-lite0" (offline default), or a CLIP model folder: a path, or the name of a
    #: folder in the model cache (``lookalike models pull NAME --from URL``).
    model: str = DEFAULT_MODEL


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def clip_folder(model: str, context: TypeContext) -> Path:
    """Where a CLIP model named in the configuration lives."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    cached = context.cache_dir / "models" / model
    if cached.is_dir():
        return cached
    raise InvalidConfigError(
        f"model {model!r} is neither {DEFAULT_MODEL!r}, a model folder, nor a folder in the model cache "
        f"({context.cache_dir / 'models'}); pull one with `lookalike models pull {model} --from URL`"
    )


class GenericType(CollectionType, SupportsTextQuery):
    name = "generic"
    version = "1.0"
    description = "General photos: image-to-image and text-to-image (EfficientNet-Lite0, or a CLIP model folder)"
    Config = GenericConfig
    metric = "cos"

    def __init__(self, config: GenericConfig, context: TypeContext) -> None:
        super().__init__(config, context)
        self._clip = None
        if config.model != DEFAULT_MODEL:
            try:
                self._clip = models.load_clip(clip_folder(config.model, context))
            except ModelError as error:
                raise InvalidConfigError(f"model {config.model!r}: {error}") from error

    @property
    def dimension(self) -> int:
        if self._clip is not None:
            return int(self._clip.dimension)
        return 1280

    @property
    def input_side(self) -> int | None:
        if self._clip is not None:
            return int(self._clip.config.image_size)
        return 256  # EfficientNet-Lite0 resizes the shorter side to 256 before its centre crop

    def preprocess(self, image: Image.Image) -> Any:
        if self._clip is not None:
            return self._clip.preprocess([image])[0]
        return models.pixel_values([image])[0]

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        pixels = np.stack(batch).astype(np.float32, copy=False)
        if self._clip is not None:
            return _unit_rows(self._clip.run_images(pixels))
        embedding, _logits = models.image_model(self.context.threads).run(pixels)
        return _unit_rows(embedding)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        if self._clip is not None:
            return _unit_rows(self._clip.embed_text(texts))
        bridge = models.concept_bridge()
        return _unit_rows(np.stack([bridge.embed_text(text) for text in texts]))
