"""Shared fixtures of the server tests: the application on a fresh data folder, driven by
Litestar's test client, with a tiny deterministic image collection type.

- ``registry``: a :class:`~lookalike.sdk.registry.Registry` holding only :class:`TinyColour`
  (``type="tinycolour"``: mean colour per grid cell, with text, colour and image queries, and a
  duplicate threshold), so no model is loaded.
- ``app_factory(**settings)``: a new application on ``tmp_path / "data"`` (each call its own
  folder) with the admin token :data:`ADMIN_TOKEN`; ``settings`` override :class:`Settings`.
- ``client_factory(**settings)``: a started :class:`TestClient` of such an application (stopped
  at teardown); ``client``: one with the default settings.
- ``ADMIN``: the ``Authorization`` header of the admin token; :func:`auth` makes one for any token.
- :func:`png`, :func:`b64`: deterministic test images.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image

from lookalike.sdk import CollectionType, SupportsColorQuery, SupportsTextQuery
from lookalike.sdk.registry import Registry
from lookalike.testing.fakes import fake_image
from lookalike_server.app import create_app
from lookalike_server.settings import Settings

ADMIN_TOKEN = "admin"
ADMIN = {"Authorization": f"Token {ADMIN_TOKEN}"}

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


class TinyColourConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    grid: int = 2


class TinyColour(CollectionType, SupportsTextQuery, SupportsColorQuery):
    """Mean colour per grid cell: tiny, deterministic, every query kind but multi-vector."""

    name = "tinycolour"
    description = "mean colour per grid cell (tests)"
    Config = TinyColourConfig
    derived_fields = frozenset({"_mean"})
    duplicate_threshold = 0.0005

    @property
    def dimension(self) -> int:
        grid: int = self.config.grid
        return grid * grid * 3

    def preprocess(self, image: Image.Image) -> Any:
        grid = self.config.grid
        return np.asarray(image.resize((grid, grid), Image.Resampling.BOX), dtype=np.float32).reshape(-1) / 255 + 0.01

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        return np.stack(batch).astype(np.float32)

    def describe(self, image: Image.Image) -> dict[str, Any]:
        mean = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        return {"_mean": [round(float(v), 1) for v in mean]}

    def _colour_vector(self, rgb: tuple[int, int, int]) -> np.ndarray:
        grid = self.config.grid
        return np.tile(np.asarray(rgb, dtype=np.float32) / 255 + 0.01, grid * grid)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            named = [rgb for name, rgb in COLOURS.items() if name in text.lower()] or [(128, 128, 128)]
            rows.append(np.mean([self._colour_vector(rgb) for rgb in named], axis=0))
        return np.stack(rows).astype(np.float32)

    def embed_colors(self, colors: Sequence[tuple[tuple[int, int, int], float]]) -> np.ndarray:
        return np.sum([w * self._colour_vector(rgb) for rgb, w in colors], axis=0).astype(np.float32)


def png(image: Image.Image | int, size: int = 64) -> bytes:
    """PNG bytes of an image, or of the deterministic test image with this seed."""
    if isinstance(image, int):
        image = fake_image(image, size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: Image.Image | int, size: int = 64) -> str:
    return base64.b64encode(png(image, size)).decode("ascii")


def solid(rgb: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


@pytest.fixture
def registry() -> Registry:
    found = Registry()
    found.register(TinyColour)
    return found


AppFactory = Callable[..., Litestar]
ClientFactory = Callable[..., TestClient[Litestar]]


@pytest.fixture
def app_factory(tmp_path: Path, registry: Registry) -> AppFactory:
    counter = itertools.count()

    def make(**overrides: Any) -> Litestar:
        data = tmp_path / f"data{next(counter)}" if "data" not in overrides else Path(overrides.pop("data"))
        settings = Settings(**{"data": str(data), "admin_token": ADMIN_TOKEN, **overrides})
        return create_app(settings, registry=registry)

    return make


@pytest.fixture
def client_factory(app_factory: AppFactory) -> Iterator[ClientFactory]:
    started: list[TestClient[Litestar]] = []

    def make(**overrides: Any) -> TestClient[Litestar]:
        test_client = TestClient(app_factory(**overrides), raise_server_exceptions=False)
        test_client.__enter__()
        started.append(test_client)
        return test_client

    yield make
    for test_client in reversed(started):
        test_client.__exit__(None, None, None)


@pytest.fixture
def client(client_factory: ClientFactory) -> TestClient[Litestar]:
    return client_factory()
