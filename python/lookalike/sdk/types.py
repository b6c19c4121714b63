"""The contract between the engine and a collection type."""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec
import numpy as np

from lookalike.errors import InvalidConfigError, InvalidInputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Metric",
    "QueryKind",
    "EmptyConfig",
    "TypeContext",
    "CollectionType",
    "SupportsTextQuery",
    "SupportsColorQuery",
    "SupportsMultiVector",
    "Color",
    "parse_colors",
    "query_kinds",
]

Metric = Literal["cos", "ip", "l2sq", "hamming"]
QueryKind = Literal["vector", "id", "image", "text", "image+text", "colors"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class EmptyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The configuration of a type that has nothing to configure."""


@dataclass(frozen=True)
class TypeContext:
    """What the engine hands a collection type: where to cache models, how many threads to use
    for inference, and the preferred inference batch size."""

    cache_dir: Path
    threads: int = 1
    batch_size: int = 32
    extra: Mapping[str, Any] = field(default_factory=dict)


class CollectionType(abc.ABC):
    """Base class of every collection type (a model, its preprocessing and its query kinds).

    A subclass sets the class attributes, declares its settings as a msgspec ``Config`` struct
    (fixed when a collection is created and stored with it), and implements ``dimension`` and
    ``embed_images``. The engine decodes images (EXIF orientation, colour modes, pixel cap),
    calls ``preprocess`` on each, then ``embed_images`` on batches, and indexes the rows.

    Capabilities come from mixins: :class:`SupportsTextQuery`, :class:`SupportsColorQuery`,
    :class:`SupportsMultiVector`.
    """

    #: Unique name, the value of ``type`` when a collection is created.
    name: ClassVar[str]
    #: The type's version; stored with each collection (a new major version may change vectors).
    version: ClassVar[str] = "1.0"
    description: ClassVar[str] = ""
    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    #: How vectors are compared: "cos", "ip", "l2sq" (float vectors) or "hamming" (bits).
    metric: ClassVar[Metric] = "cos"
    #: The metadata field that groups records (for example a product id), on by default.
    default_product_id_field: ClassVar[str | None] = None
    #: Reserved fields (starting with "_") that ``describe`` adds to every record.
    derived_fields: ClassVar[frozenset[str]] = frozenset()
    #: Searches scan exactly while at most this many vectors pass (0: the planner decides). Types
    #: whose answers must not miss a near neighbour (duplicates) set it; users may override it.
    default_exact_threshold: ClassVar[int] = 0
    #: Distance under which two images count as duplicates (hits then carry ``is_duplicate``);
    #: an instance may set its own from its configuration.
    duplicate_threshold: float | None = None

    def __init__(self, config: Any, context: TypeContext) -> None:
        self.config = config
        self.context = context

    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Length of each vector (bits, for the hamming metric)."""

    @property
    def input_side(self) -> int | None:
        """The shorter side, in pixels, the type needs at most; larger JPEGs are then decoded
        at a reduced scale (never below it), which makes ingest faster. None: full size."""
        return None

    def preprocess(self, image: Image.Image) -> Any:
        """Per-image work before batching (runs in decoding threads). Default: the RGB image."""
        return image

    @abc.abstractmethod
    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        """Vectors for preprocessed images: float32 ``[len(batch), dimension]``
        (uint8 ``[len(batch), dimension // 8]`` packed bits for the hamming metric)."""

    def describe(self, image: Image.Image) -> dict[str, Any]:
        """Readable metadata derived from an image, stored with its record (keys must be listed
        in ``derived_fields``). Default: nothing."""
        return {}

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Releases what the type holds (sessions, files). Default: nothing."""

    @classmethod
    def parse_config(cls, raw: Mapping[str, Any] | None) -> Any:
        """The type's ``Config`` from plain data; unknown keys or wrong types raise
        :class:`InvalidConfigError` naming the key."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidConfigError(f"the configuration of type {cls.name!r} must be an object")
        try:
            return msgspec.convert(dict(raw), type=cls.Config, strict=False)
        except msgspec.ValidationError as error:
            raise InvalidConfigError(f"type {cls.name!r}: {error}") from error

    @classmethod
    def config_to_dict(cls, config: Any) -> dict[str, Any]:
        out = msgspec.to_builtins(config)
        assert isinstance(out, dict)
        return out

    @classmethod
    def check_class(cls) -> None:
        """Raises ``TypeError`` when the class does not meet the contract (used by the registry)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise TypeError(f"{cls.__qualname__}.name must match {NAME_PATTERN.pattern}, got {name!r}")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, msgspec.Struct)):
            raise TypeError(f"{cls.__qualname__}.Config must be a msgspec.Struct subclass")
        if cls.metric not in ("cos", "ip", "l2sq", "hamming"):
            raise TypeError(f"{cls.__qualname__}.metric must be cos, ip, l2sq or hamming, got {cls.metric!r}")
        for derived in cls.derived_fields:
            if not derived.startswith("_"):
                raise TypeError(f"{cls.__qualname__}.derived_fields must start with '_', got {derived!r}")
        if issubclass(cls, SupportsMultiVector):
            views = getattr(cls, "vectors_per_image", None)
            if not isinstance(views, int) or not 1 <= views <= 16:
                raise TypeError(f"{cls.__qualname__}.vectors_per_image must be an integer from 1 to 16")
        if getattr(cls, "__abstractmethods__", None):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(f"{cls.__qualname__} does not implement {missing}")


class SupportsTextQuery(abc.ABC):
    """A type whose vectors can be searched by text: ``embed_text`` maps text into the same space."""

    @abc.abstractmethod
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[len(texts), dimension]``, comparable with the image vectors."""


class Color(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One colour of a colour query: ``#rrggbb`` (or ``#rgb``) and a weight > 0."""

    color: str
    weight: float = 1.0


_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def parse_colors(colors: Any) -> list[tuple[tuple[int, int, int], float]]:
    """Validates a colour query (``[{"color": "#ff0000", "weight": 0.7}, ...]`` or ``["#ff0000"]``)
    and returns ``((r, g, b), weight)`` pairs with weights summing to 1."""
    if isinstance(colors, str | bytes) or not isinstance(colors, Sequence) or not colors:
        raise InvalidInputError('colors must be a non-empty list like [{"color": "#ff0000", "weight": 1.0}]')
    if len(colors) > 64:
        raise InvalidInputError("colors takes at most 64 colours")
    out: list[tuple[tuple[int, int, int], float]] = []
    for position, item in enumerate(colors):
        text: Any
        weight: Any
        if isinstance(item, str):
            text, weight = item, 1.0
        elif isinstance(item, Mapping):
            unknown = set(item) - {"color", "weight"}
            if unknown:
                raise InvalidInputError(f"colors[{position}]: unknown key {sorted(unknown)[0]!r} (color, weight)")
            text, weight = item.get("color"), item.get("weight", 1.0)
        else:
            raise InvalidInputError(f"colors[{position}] must be an object with 'color' and 'weight'")
        if not isinstance(text, str) or not _HEX.match(text):
            raise InvalidInputError(f"colors[{position}].color must be a hex colour like '#ff8800', got {text!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not np.isfinite(weight) or weight <= 0:
            raise InvalidInputError(f"colors[{position}].weight must be a positive number, got {weight!r}")
        digits = text.lstrip("#")
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        rgb = (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        out.append((rgb, float(weight)))
    total = sum(w for _, w in out)
    return [(rgb, w / total) for rgb, w in out]


class SupportsColorQuery(abc.ABC):
    """A type that can be searched by a list of weighted colours."""

    @abc.abstractmethod
    def embed_colors(self, colors: Sequence[tuple[tuple[int, int, int], float]]) -> np.ndarray:
        """float32 ``[dimension]`` for ``((r, g, b), weight)`` pairs (weights sum to 1), as
        :func:`parse_colors` returns them."""


class SupportsMultiVector(abc.ABC):
    """A type that stores several vectors per image (views: a flip, crops, ...). Search treats a
    record as one hit, at the distance of its closest view. Queries use view 0 (``embed_images``)."""

    vectors_per_image: ClassVar[int]

    @abc.abstractmethod
    def embed_views(self, batch: Sequence[Any]) -> np.ndarray:
        """``[len(batch), vectors_per_image, dimension]``; view 0 equals ``embed_images``."""


def query_kinds(cls: type[CollectionType] | CollectionType) -> list[QueryKind]:
    """The query kinds a type answers."""
    klass = cls if isinstance(cls, type) else type(cls)
    kinds: list[QueryKind] = ["vector", "id", "image"]
    if issubclass(klass, SupportsTextQuery):
        kinds += ["text", "image+text"]
    if issubclass(klass, SupportsColorQuery):
        kinds.append("colors")
    return kinds
