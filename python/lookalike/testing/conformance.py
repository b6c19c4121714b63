"""The conformance suite every collection type runs, built-in or third-party.

Subclass :class:`CollectionTypeSuite` in a test module and name the type::

    from lookalike.testing import CollectionTypeSuite
    from my_package import MyType

    class TestMyType(CollectionTypeSuite):
        collection_type = MyType
        config = {"bins": 8}                 # a valid configuration (default: {})
        bad_configs = [{"bins": "many"}]     # each must raise InvalidConfigError

pytest then runs every check below against the type, with small deterministic fake images:
the class contract, configuration round trips, vector shapes and types, determinism, batch
against single, the optional capabilities (text, colours, several views) and a full round trip
through an :class:`lookalike.Engine` (add by base64, search by image and by id, filters,
per-record errors for bad images, unsupported query kinds, reopening the data folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np
import pytest
from PIL import Image

from lookalike.engine import Engine
from lookalike.errors import InvalidConfigError, UnsupportedError
from lookalike.sdk.registry import ENTRY_POINT_GROUP, Registry
from lookalike.sdk.types import (
    CollectionType,
    SupportsColorQuery,
    SupportsMultiVector,
    SupportsTextQuery,
    TypeContext,
    parse_colors,
    query_kinds,
)
from lookalike.testing.fakes import fake_image, fake_images, fake_records, image_base64

__all__ = ["CollectionTypeSuite"]


class CollectionTypeSuite:
    """Checks one collection type against the contract of :mod:`lookalike.sdk`."""

    #: The class under test.
    collection_type: ClassVar[type[CollectionType]]
    #: A valid configuration.
    config: ClassVar[Mapping[str, Any]] = {}
    #: Configurations the type must refuse with InvalidConfigError.
    bad_configs: ClassVar[list[Mapping[str, Any]]] = [{"no_such_option_anywhere": 1}]
    #: Number of fake images in the round trip (at least 6).
    images: ClassVar[int] = 8
    #: Side of the fake images, in pixels.
    image_size: ClassVar[int] = 96
    #: Tolerance of batch-against-single and determinism checks.
    tolerance: ClassVar[float] = 1e-4
    #: Text query used when the type supports text.
    text_query: ClassVar[str] = "a red square"
    #: Whether the type must rank an image's own record first when searched by that image.
    finds_itself: ClassVar[bool] = True

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def instance(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectionType]:
        context = TypeContext(cache_dir=tmp_path_factory.mktemp("type-cache"), threads=1, batch_size=4)
        made = cls.collection_type(cls.collection_type.parse_config(cls.config), context)
        yield made
        made.close()

    @pytest.fixture(scope="class")
    @classmethod
    def pictures(cls) -> list[Image.Image]:
        return fake_images(cls.images, cls.image_size)

    @pytest.fixture(scope="class")
    @classmethod
    def vectors(cls, instance: CollectionType, pictures: list[Image.Image]) -> np.ndarray:
        return np.asarray(instance.embed_images([instance.preprocess(p) for p in pictures]))

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        registry = Registry(allow=None)
        registry.register(self.collection_type)
        with Engine(tmp_path / "data", registry=registry, threads=1, batch_size=4) as opened:
            yield opened

    # -- the class -------------------------------------------------------------------------

    def test_class_contract(self) -> None:
        self.collection_type.check_class()
        assert self.collection_type.description.strip(), "describe the type in one line (description)"
        assert self.collection_type.version.split(".")[0].isdigit(), "version must start with a number"

    def test_config_round_trip(self, instance: CollectionType) -> None:
        plain = self.collection_type.config_to_dict(instance.config)
        json.dumps(plain)  # the configuration is stored as JSON with the collection
        again = self.collection_type.parse_config(plain)
        assert self.collection_type.config_to_dict(again) == plain
        msgspec.json.schema(self.collection_type.Config)  # the server publishes the schema

    def test_bad_configs_are_refused(self) -> None:
        for bad in [*self.bad_configs, "not an object"]:
            with pytest.raises(InvalidConfigError):
                self.collection_type.parse_config(bad)  # type: ignore[arg-type]

    # -- vectors ---------------------------------------------------------------------------

    def _width(self, instance: CollectionType) -> int:
        return instance.dimension // 8 if instance.metric == "hamming" else instance.dimension

    def test_vectors_have_the_declared_shape(self, instance: CollectionType, vectors: np.ndarray) -> None:
        assert isinstance(instance.dimension, int) and instance.dimension > 0
        assert vectors.shape == (self.images, self._width(instance))
        if instance.metric == "hamming":
            assert instance.dimension % 8 == 0
            assert vectors.dtype == np.uint8
        else:
            assert vectors.dtype == np.float32
            assert np.isfinite(vectors).all()
            if instance.metric == "cos":
                assert (np.linalg.norm(vectors, axis=1) > 0).all()

    def test_deterministic(self, instance: CollectionType, pictures: list[Image.Image], vectors: np.ndarray) -> None:
        again = np.asarray(instance.embed_images([instance.preprocess(p) for p in pictures]))
        np.testing.assert_allclose(again.astype(np.float64), vectors.astype(np.float64), atol=self.tolerance)

    def test_batch_matches_single(
        self, instance: CollectionType, pictures: list[Image.Image], vectors: np.ndarray
    ) -> None:
        for row, picture in enumerate(pictures[:3]):
            single = np.asarray(instance.embed_images([instance.preprocess(picture)]))[0]
            np.testing.assert_allclose(single.astype(np.float64), vectors[row].astype(np.float64), atol=self.tolerance)

    def test_different_images_differ(self, vectors: np.ndarray) -> None:
        distinct = {bytes(np.round(row.astype(np.float64), 4).tobytes()) for row in vectors}
        assert len(distinct) >= len(vectors) - 1, "the type maps different images to the same vector"

    def test_describe_declares_its_fields(self, instance: CollectionType, pictures: list[Image.Image]) -> None:
        described = instance.describe(pictures[0])
        assert set(described) <= set(instance.derived_fields)
        json.dumps(described)

    def test_multi_vector_views(
        self, instance: CollectionType, pictures: list[Image.Image], vectors: np.ndarray
    ) -> None:
        if not isinstance(instance, SupportsMultiVector):
            pytest.skip("single vector per image")
        views = np.asarray(instance.embed_views([instance.preprocess(p) for p in pictures]))
        assert views.shape == (self.images, instance.vectors_per_image, self._width(instance))
        np.testing.assert_allclose(views[:, 0].astype(np.float64), vectors.astype(np.float64), atol=self.tolerance)

    def test_text_query(self, instance: CollectionType) -> None:
        if not isinstance(instance, SupportsTextQuery):
            pytest.skip("no text queries")
        out = np.asarray(instance.embed_text([self.text_query, "something else entirely"]))
        assert out.shape == (2, instance.dimension)
        assert out.dtype == np.float32 and np.isfinite(out).all()

    def test_color_query(self, instance: CollectionType) -> None:
        if not isinstance(instance, SupportsColorQuery):
            pytest.skip("no colour queries")
        red = np.asarray(instance.embed_colors(parse_colors([{"color": "#ff0000", "weight": 1.0}])))
        mixed = np.asarray(instance.embed_colors(parse_colors(["#ff0000", "#0000ff"])))
        assert red.shape == mixed.shape == (instance.dimension,)
        assert np.isfinite(red).all() and not np.allclose(red, mixed)

    # -- through the engine ----------------------------------------------------------------

    def test_round_trip_through_the_engine(self, engine: Engine, tmp_path: Path) -> None:
        name = self.collection_type.name
        collection = engine.create_collection(
            "conformance", type=name, config=dict(self.config), fields_to_index=["parity"]
        )
        records = fake_records(self.images, self.image_size)
        assert collection.add(records) == [r["_id"] for r in records]
        assert len(collection) == self.images
        stored = collection.get(["img-0"])[0]
        assert "_base64" not in stored  # the image itself is not stored
        assert set(stored) - {"_id", "parity", "seed"} <= set(self.collection_type.derived_fields)

        probe = {"_base64": records[3]["_base64"]}
        hits = collection.search(record=probe, limit=3)
        assert len(hits) == 3 and all(h["distance"] >= -1e-4 for h in hits)
        if self.finds_itself:
            assert hits[0]["_id"] == "img-3"
        by_id = collection.search(id="img-3", limit=self.images)
        assert {h["_id"] for h in by_id} == {r["_id"] for r in records}

        odd = collection.search(record=probe, limit=self.images, filter={"parity": "odd"})
        assert odd and all(h["parity"] == "odd" for h in odd)
        assert len(odd) == sum(1 for r in records if r["parity"] == "odd")

        kinds = query_kinds(self.collection_type)
        if "text" in kinds:
            assert len(collection.search(text=self.text_query, limit=2)) == 2
            assert len(collection.search(record=probe, text=self.text_query, text_weight=0.3, limit=2)) == 2
        else:
            with pytest.raises(UnsupportedError, match="supports"):
                collection.search(text=self.text_query)
        if "colors" in kinds:
            assert len(collection.search(colors=[{"color": "#dc2828", "weight": 1.0}], limit=2)) == 2
        else:
            with pytest.raises(UnsupportedError, match="supports"):
                collection.search(colors=[{"color": "#ff0000", "weight": 1.0}])

        result = collection.insert(
            [
                {"_id": "good", "_base64": image_base64(fake_image(100, self.image_size))},
                {"_id": "not-an-image", "_base64": "aGVsbG8gd29ybGQ="},
                {"_id": "no-image"},
            ]
        )
        assert result.ids == ["good"]
        assert [(e.position, e.id, e.code) for e in result.errors] == [
            (1, "not-an-image", "invalid_image"),
            (2, "no-image", "invalid_record"),
        ]
        assert len(collection) == self.images + 1

        before = [h["_id"] for h in collection.search(record=probe, limit=5)]
        assert collection.remove(["good"]) == 1
        path, registry = engine.path, engine.registry
        engine.close()
        with Engine(path, registry=registry, threads=1) as reopened:
            again = reopened.collection("conformance")
            assert len(again) == self.images
            after = [h["_id"] for h in again.search(record=probe, limit=5)]
            expected = [i for i in before if i != "good"]
            assert after[: len(expected)] == expected

    def test_entry_point(self) -> None:
        """A distribution that registers the type under ``lookalike.collection_types`` is found
        there (skipped for a type that is not installed as a distribution)."""
        from importlib import metadata

        points = [p for p in metadata.entry_points(group=ENTRY_POINT_GROUP) if p.name == self.collection_type.name]
        if not points:
            pytest.skip("not installed through an entry point")
        assert points[0].load() is self.collection_type
