"""Models a collection type can use, offline and torch-free (loaded lazily, shared per process).

- :func:`image_model`: EfficientNet-Lite0 (ImageNet), 1280-d pooled embeddings and 1000 logits.
- :func:`pixel_values`: images to the model's input tensor (optionally without the centre crop).
- :func:`imagenet_classifier`: the model's final layer, the class prototypes of the concept bridge.
- :func:`text_model`, :func:`concept_bridge`: the MiniLM sentence encoder, and text to the image
  model's embedding space through the 1000 ImageNet concepts.
- :func:`load_clip`, :func:`pull`: CLIP-style model folders (ONNX image and text encoders).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from lookalike.models.clip import ClipModel
    from lookalike.models.concepts import ConceptBridge
    from lookalike.models.efficientnet import EfficientNetLite0
    from lookalike.models.text import MiniLM

__all__ = [
    "IMAGE_SIZE",
    "image_model",
    "pixel_values",
    "imagenet_classifier",
    "text_model",
    "concept_bridge",
    "load_clip",
    "pull",
    "OnnxModel",
]

from lookalike.models.runtime import OnnxModel

#: Input side of the image model.
IMAGE_SIZE = 224

_lock = threading.Lock()
_shared: dict[Any, Any] = {}


def image_model(threads: int | None = None) -> EfficientNetLite0:
    """The shared EfficientNet-Lite0 (converted to ONNX once per machine, then cached)."""
    from lookalike.models import efficientnet

    return efficientnet.shared(threads)


def pixel_values(images: Sequence[Image.Image], *, crop: bool = True) -> np.ndarray:
    """The model's input ``[n, 3, 224, 224]``: with ``crop``, the standard resize of the shorter
    side to 256 and a centre crop; without, a plain resize of the whole (square) image to 224."""
    from lookalike.models import efficientnet

    if crop:
        return efficientnet.preprocess(images)
    from PIL import Image as PILImage

    batch = np.empty((len(images), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for row, image in enumerate(images):
        resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), PILImage.Resampling.BICUBIC)
        array = np.asarray(resized, dtype=np.float32)
        batch[row] = ((array - 127.0) / 128.0).transpose(2, 0, 1)
    return batch


def imagenet_classifier() -> tuple[np.ndarray, np.ndarray]:
    """The image model's final layer: weights ``[1000, 1280]`` and bias ``[1000]``."""
    with _lock:
        found = _shared.get("classifier")
        if found is None:
            from lookalike.models import efficientnet

            found = efficientnet.classifier(efficientnet.load_weights())
            _shared["classifier"] = found
    weights, bias = found
    return weights, bias


def text_model() -> MiniLM:
    """The shared all-MiniLM-L6-v2 (int8) sentence encoder."""
    from lookalike.models.text import MiniLM

    return MiniLM.shared()


def concept_bridge() -> ConceptBridge:
    """Text to EfficientNet-Lite0's embedding space through the 1000 ImageNet concepts."""
    with _lock:
        found = _shared.get("bridge")
    if found is None:
        from lookalike.models.concepts import ConceptBridge

        weights, _bias = imagenet_classifier()
        built = ConceptBridge(weights, text_model())
        with _lock:
            found = _shared.setdefault("bridge", built)
    assert found is not None
    bridge: ConceptBridge = found
    return bridge


def load_clip(folder: str | Path) -> ClipModel:
    """A CLIP-style model folder (``model.json``, ONNX image and text encoders, ``tokenizer.json``)."""
    from lookalike.models.clip import ClipModel

    key = ("clip", str(Path(folder).resolve()))
    with _lock:
        found = _shared.get(key)
        if found is None:
            found = ClipModel.load(Path(folder))
            _shared[key] = found
    model: ClipModel = found
    return model


def pull(name: str, url: str, dest: Path | None = None) -> Path:
    """Downloads a model folder (resumable, sha256-verified); see :mod:`lookalike.models.hub`."""
    from lookalike.models.hub import pull as hub_pull

    return hub_pull(name, url, dest)
