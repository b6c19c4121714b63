"""The generic type: EfficientNet-Lite0 image search and text search through the concept bridge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as skdata

from lookalike import Engine
from lookalike.errors import InvalidConfigError
from lookalike.sdk.registry import Registry
from lookalike.testing import CollectionTypeSuite, image_base64
from lookalike_generic import GenericType


class TestGenericConformance(CollectionTypeSuite):
    collection_type = GenericType
    bad_configs = [{"model": 3}, {"size": 1}]


def photos() -> dict[str, Image.Image]:
    return {
        "chelsea": Image.fromarray(skdata.chelsea()),
        "coffee": Image.fromarray(skdata.coffee()),
        "rocket": Image.fromarray(skdata.rocket()),
        "astronaut": Image.fromarray(skdata.astronaut()),
        "camera": Image.fromarray(skdata.camera()).convert("RGB"),
    }


def kind(name: str) -> str:
    return "animal" if name == "chelsea" else "thing"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    registry = Registry()
    registry.register(GenericType)
    with Engine(tmp_path_factory.mktemp("generic"), registry=registry) as opened:
        col = opened.create_collection("photos", type="generic", fields_to_index=["kind"])
        col.add(
            [
                {"_id": name, "_base64": image_base64(image, "JPEG"), "kind": kind(name)}
                for name, image in photos().items()
            ]
        )
        yield opened


def test_an_unknown_model_folder_is_a_config_error(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(GenericType)
    with Engine(tmp_path, registry=registry) as engine:
        with pytest.raises(InvalidConfigError, match="models pull"):
            engine.create_collection("c", type="generic", config={"model": "nothing-here"})


def test_an_edited_photo_finds_its_original(engine: Engine) -> None:
    col = engine.collection("photos")
    for name, image in photos().items():
        width, height = image.size
        edited = ImageOps.mirror(image.crop((width // 10, height // 10, width, height))).resize((200, 150))
        hits = col.search(record={"_base64": image_base64(edited, "JPEG")}, limit=2)
        assert hits[0]["_id"] == name, hits


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a cat", "chelsea"), ("a cup of coffee", "coffee"), ("a rocket launch", "rocket"), ("espresso", "coffee")],
)
def test_text_finds_the_photo_of_the_concept(engine: Engine, text: str, expected: str) -> None:
    hits = engine.collection("photos").search(text=text, limit=5)
    assert hits[0]["_id"] == expected, [(h["_id"], round(h["distance"], 3)) for h in hits]


def test_text_combines_with_filters_and_images(engine: Engine) -> None:
    col = engine.collection("photos")
    hits = col.search(text="a cat", filter={"kind": "thing"}, limit=4)
    assert "chelsea" not in [h["_id"] for h in hits] and len(hits) == 4
    cat = {"_base64": image_base64(photos()["chelsea"], "JPEG")}
    assert col.search(record=cat, text="a cup of coffee", text_weight=0.0, limit=1)[0]["_id"] == "chelsea"
    assert col.search(record=cat, text="a cup of coffee", text_weight=0.9, limit=1)[0]["_id"] == "coffee"


def test_embeddings_are_unit_vectors(engine: Engine) -> None:
    vector = engine.collection("photos").get_vector("rocket")
    assert vector.shape == (1280,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
