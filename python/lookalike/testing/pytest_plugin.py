"""The pytest plugin of :mod:`lookalike.testing` (registered through the ``pytest11`` entry
point): fixtures for collection-type tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lookalike.testing.fakes import fake_images


@pytest.fixture
def lookalike_fake_images() -> list[Image.Image]:
    """Eight small deterministic pictures."""
    return fake_images(8)


@pytest.fixture
def lookalike_data_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty data folder for an :class:`lookalike.Engine`."""
    folder = tmp_path / "lookalike-data"
    folder.mkdir()
    yield folder
