"""The generic type on a real CLIP-style model folder, pulled with `lookalike models pull` from a
local HTTP server that serves a tiny CLIP-shaped ONNX model the tests build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine
from lookalike.cli import main
from lookalike.errors import InvalidConfigError
from lookalike.models.clip import ClipModel
from lookalike.sdk.registry import Registry
from lookalike.testing import image_base64
from lookalike_generic import GenericType
from tests.test_clip_hub import ServerState, fast_retries, served  # noqa: F401 - fixtures

COLOURS = {
    "red": (230, 20, 20),
    "blue": (20, 30, 220),
    "green": (20, 200, 40),
    "white": (250, 250, 250),
    "dark": (20, 20, 20),
}


@pytest.fixture
def registry() -> Registry:
    made = Registry()
    made.register(GenericType)
    return made


def test_pull_then_search_by_image_and_text(
    served: tuple[ServerState, str, Path],  # noqa: F811
    tmp_path: Path,
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _state, url, _folder = served
    assert main(["models", "pull", "tiny-clip", "--from", url]) == 0
    pulled = Path(capsys.readouterr().out.strip())
    assert (pulled / "model.json").is_file() and pulled.name == "tiny-clip"

    clip = ClipModel.load(pulled)
    with Engine(tmp_path / "data", registry=registry) as engine:
        col = engine.create_collection("clip", type="generic", config={"model": "tiny-clip"})
        assert (col.config.ndim, col.stats()["type_config"]) == (8, {"model": "tiny-clip"})
        images = {name: Image.new("RGB", (40, 30), rgb) for name, rgb in COLOURS.items()}
        col.add([{"_id": name, "_base64": image_base64(image)} for name, image in images.items()])

        assert col.search(record={"_base64": image_base64(images["blue"])}, limit=1)[0]["_id"] == "blue"

        # Text goes through the model's own text encoder: the ranking is the model's cosine.
        query = clip.embed_text(["a red car on the sofa"])[0]
        stored = clip.embed_images(list(images.values()))
        expected = [list(images)[i] for i in np.argsort(-(stored @ query), kind="stable")]
        hits = col.search(text="a red car on the sofa", limit=5)
        assert [h["_id"] for h in hits] == expected
        for hit, score in zip(hits, np.sort(-(stored @ query)), strict=True):
            assert hit["distance"] == pytest.approx(1 + score, abs=1e-4)


def test_a_model_path_works_too(
    served: tuple[ServerState, str, Path],  # noqa: F811
    tmp_path: Path,
    registry: Registry,
) -> None:
    _state, _url, folder = served
    with Engine(tmp_path / "data", registry=registry) as engine:
        col = engine.create_collection("clip", type="generic", config={"model": str(folder)})
        col.add([{"_id": "x", "_base64": image_base64(Image.new("RGB", (20, 20), (1, 2, 3)))}])
        assert col.search(text="a dog", limit=1)[0]["_id"] == "x"


def test_a_broken_model_folder_is_a_config_error(tmp_path: Path, registry: Registry) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.json").write_text("{not json")
    with Engine(tmp_path / "data", registry=registry) as engine:
        with pytest.raises(InvalidConfigError, match="model.json"):
            engine.create_collection("clip", type="generic", config={"model": str(folder)})
        assert engine.list_collections() == []
