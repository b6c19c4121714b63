"""The matching type: pHash, colour layout, the cosine identity, thresholds and near-duplicates."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

from lookalike import Engine
from lookalike.errors import InvalidConfigError
from lookalike.sdk import TypeContext
from lookalike.sdk.registry import Registry
from lookalike.testing import CollectionTypeSuite, fake_image, image_base64
from lookalike_matching import (
    DEFAULT_HASH_WEIGHT,
    DEFAULT_LAYOUT_WEIGHT,
    DEFAULT_THRESHOLD,
    PRECISION_SCALE,
    MatchingConfig,
    MatchingType,
)
from lookalike_matching.features import VECTOR_DIM, VIEWS, assemble, features, similarity
from lookalike_matching.layout import FLOOR, LAYOUT_DIM, cells, layout, layout_of_cells, mirror_cells
from lookalike_matching.phash import dct_matrix, hamming, pack, phash, phash_pair
from lookalike_matching.thresholds import STEP, THRESHOLDS, threshold_for

FLIP = Image.Transpose.FLIP_LEFT_RIGHT

# The suite's class-scoped fixtures are instance methods, which pytest 9 deprecates (and the
# root configuration turns warnings into errors); until lookalike.testing changes, ignore that one.


class TestMatchingConformance(CollectionTypeSuite):
    collection_type = MatchingType
    config = {"hash_weight": 0.2, "layout_weight": 0.2}
    bad_configs = [
        {"hash_weight": 1.5},
        {"hash_weight": -0.1},
        {"layout_weight": "much"},
        {"hash_weight": 0.7, "layout_weight": 0.5},
        {"threshold": 0},
        {"threshold": 3.0},
        {"threshold": "low"},
        {"weights": [0.1, 0.2]},
    ]


# -- images ------------------------------------------------------------------------------------


def photos() -> dict[str, Image.Image]:
    return {
        "astronaut": Image.fromarray(skdata.astronaut()),
        "chelsea": Image.fromarray(skdata.chelsea()),
        "coffee": Image.fromarray(skdata.coffee()),
        "rocket": Image.fromarray(skdata.rocket()),
        "camera": Image.fromarray(skdata.camera()).convert("RGB"),
        "motorcycle": Image.fromarray(skdata.stereo_motorcycle()[0]),
    }


def others() -> dict[str, Image.Image]:
    """Photos that are not in the collections below."""
    return {
        "hubble": Image.fromarray(skdata.hubble_deep_field()),
        "coins": Image.fromarray(skdata.coins()).convert("RGB"),
        "clock": Image.fromarray(skdata.clock()).convert("RGB"),
        "immunohistochemistry": Image.fromarray(skdata.immunohistochemistry()),
        "colorwheel": Image.fromarray(skdata.colorwheel()),
    }


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        return opened.convert("RGB")


def crop(image: Image.Image, keep: float) -> Image.Image:
    width, height = image.size
    w, h = round(width * keep), round(height * keep)
    left, top = (width - w) // 2, (height - h) // 2
    return image.crop((left, top, left + w, top + h))


def overlay(image: Image.Image) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    box_w, box_h = int(width * 0.3), int(height * 0.12)
    draw.rectangle((width - box_w - 5, height - box_h - 5, width - 5, height - 5), fill=(250, 250, 250))
    draw.text((width - box_w, height - box_h), "SAMPLE (c)", fill=(200, 0, 0), font=ImageFont.load_default(size=16))
    draw.ellipse((5, 5, 5 + width // 10, 5 + width // 10), fill=(0, 90, 200))
    return out


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg": lambda im: jpeg(im, 30),
    "crop10": lambda im: crop(im, 0.9),
    "crop20": lambda im: crop(im, 0.8),
    "overlay": overlay,
    "flip": lambda im: im.transpose(FLIP),
    "rotate": lambda im: crop(im.rotate(3, Image.Resampling.BICUBIC), 0.92),
}


# -- pHash -------------------------------------------------------------------------------------


def test_dct_matrix_is_orthonormal_and_a_dct() -> None:
    matrix = dct_matrix(32)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(32), atol=1e-12)
    signal = np.random.default_rng(0).standard_normal(32)
    n = np.arange(32)
    direct = np.array([np.sum(signal * np.cos(np.pi * (2 * n + 1) * k / 64)) for k in range(32)])
    direct *= np.sqrt(2 / 32)
    direct[0] /= np.sqrt(2)
    np.testing.assert_allclose(matrix @ signal, direct, atol=1e-12)


def test_phash_of_the_same_image_is_the_same() -> None:
    for image in photos().values():
        first = phash(image)
        assert first.shape == (64,) and first.dtype == bool
        assert np.array_equal(first, phash(image.copy()))
        assert len(pack(first)) == 16


def test_phash_barely_changes_under_jpeg_and_resizing() -> None:
    for image in photos().values():
        original = phash(image)
        assert hamming(original, phash(jpeg(image, 30))) <= 6
        assert hamming(original, phash(image.resize((image.width // 2, image.height // 2)))) <= 4
        assert hamming(original, phash(image.resize((image.width * 3 // 2, image.height * 3 // 2)))) <= 4


def test_phash_of_different_images_differ() -> None:
    hashes = [phash(image) for image in [*photos().values(), *others().values()]]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) >= 16
    assert np.median(distances) >= 26


def test_mirror_hash_from_the_dct_is_the_hash_of_the_mirror() -> None:
    for image in photos().values():
        _, mirrored = phash_pair(image)
        assert hamming(mirrored, phash(image.transpose(FLIP))) <= 1


# -- colour layout -----------------------------------------------------------------------------


def test_layout_is_a_unit_vector_that_ignores_brightness_shifts() -> None:
    image = Image.fromarray(skdata.coffee())
    vector = layout(image)
    assert vector.shape == (LAYOUT_DIM,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-12
    brighter = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + 20, 0, 255).astype(np.uint8))
    assert float(vector @ layout(brighter)) > 0.98
    assert float(vector @ layout(image.transpose(FLIP))) < 0.9
    np.testing.assert_allclose(layout_of_cells(mirror_cells(cells(image))), layout(image.transpose(FLIP)), atol=0.02)


def test_layout_of_a_uniform_image_is_the_constant_direction() -> None:
    grey = layout(Image.new("RGB", (50, 40), (90, 90, 90)))
    np.testing.assert_allclose(grey, np.full(LAYOUT_DIM, 1 / np.sqrt(LAYOUT_DIM)), atol=1e-12)
    # Orthogonal to structure: a uniform image and a photo share only the small floor.
    assert float(grey @ layout(Image.fromarray(skdata.astronaut()))) < 2 * FLOOR / 100


# -- the cosine identity -----------------------------------------------------------------------


def test_the_cosine_of_assembled_vectors_is_the_weighted_sum_of_its_parts() -> None:
    rng = np.random.default_rng(1)
    n, views = 5, 4
    embeddings = np.abs(rng.standard_normal((n, 1280))) * 3
    bits = rng.random((n, views, 64)) < 0.5
    layouts = rng.standard_normal((n, views, LAYOUT_DIM))
    layouts /= np.linalg.norm(layouts, axis=2, keepdims=True)
    for hash_weight, layout_weight in [(0.3, 0.0), (0.1, 0.2), (0.0, 0.0), (0.5, 0.5), (0.25, 0.6)]:
        vectors = assemble(embeddings, bits, layouts, hash_weight, layout_weight).astype(np.float64)
        assert vectors.shape == (n, views, VECTOR_DIM)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=2), 1.0, atol=1e-6)
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        for a in range(n):
            for b in range(n):
                for view in range(views):
                    expected = similarity(
                        float(unit[a] @ unit[b]),
                        int(np.count_nonzero(bits[a, 0] != bits[b, view])),
                        float(layouts[a, 0] @ layouts[b, view]),
                        hash_weight,
                        layout_weight,
                    )
                    assert abs(float(vectors[a, 0] @ vectors[b, view]) - float(expected)) < 1e-6


@pytest.fixture(scope="module")
def matching_type(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatchingType]:
    context = TypeContext(cache_dir=tmp_path_factory.mktemp("matching-cache"), threads=2)
    made = MatchingType(MatchingType.parse_config({}), context)
    yield made
    made.close()


def test_the_identity_holds_for_real_images(matching_type: MatchingType) -> None:
    image = photos()["chelsea"]
    copy = jpeg(image.transpose(FLIP), 40)
    stored = matching_type.embed_views([matching_type.preprocess(image)])[0].astype(np.float64)
    query = matching_type.embed_images([matching_type.preprocess(copy)])[0].astype(np.float64)
    assert stored.shape == (len(VIEWS), VECTOR_DIM)
    a, b = features(image), features(copy)
    from lookalike.sdk import models

    raw = models.image_model(2).run(np.stack([a.pixels, b.pixels]))[0]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    for view in range(len(VIEWS)):
        expected = similarity(
            float(unit[0] @ unit[1]),
            hamming(b.bits[0], a.bits[view]),
            float(b.layouts[0] @ a.layouts[view]),
            DEFAULT_HASH_WEIGHT,
            DEFAULT_LAYOUT_WEIGHT,
        )
        assert abs(float(query @ stored[view]) - float(expected)) < 1e-5
    # The flipped copy is closest to the mirror view.
    assert int(np.argmax(stored @ query)) in (1, 3)


# -- configuration and thresholds --------------------------------------------------------------


def test_the_default_threshold_is_the_calibrated_one() -> None:
    assert MatchingType.duplicate_threshold == DEFAULT_THRESHOLD
    scaled = threshold_for(DEFAULT_HASH_WEIGHT, DEFAULT_LAYOUT_WEIGHT) * PRECISION_SCALE
    assert scaled == pytest.approx(DEFAULT_THRESHOLD, abs=1e-4)
    assert MatchingType.parse_config({}) == MatchingConfig(DEFAULT_HASH_WEIGHT, DEFAULT_LAYOUT_WEIGHT, None)


def test_the_threshold_table_covers_every_valid_pair_of_weights() -> None:
    steps = round(1 / STEP)
    assert set(THRESHOLDS) == {(i, j) for i in range(steps + 1) for j in range(steps + 1 - i)}
    for (i, j), value in THRESHOLDS.items():
        assert threshold_for(i * STEP, j * STEP) == pytest.approx(value)
    for hash_weight in np.linspace(0, 1, 23):
        for layout_weight in np.linspace(0, 1 - hash_weight, 7):
            value = threshold_for(float(hash_weight), float(layout_weight))
            assert 0.05 < value < 0.6
    # Linear between grid points.
    middle = threshold_for(0.15, 0.2)
    assert middle == pytest.approx((THRESHOLDS[(1, 2)] + THRESHOLDS[(2, 2)]) / 2)


def test_the_instance_threshold_follows_the_configuration(tmp_path: Path) -> None:
    context = TypeContext(cache_dir=tmp_path)
    plain = MatchingType(MatchingType.parse_config({"hash_weight": 0.3, "layout_weight": 0.0}), context)
    assert plain.duplicate_threshold == pytest.approx(THRESHOLDS[(3, 0)] * PRECISION_SCALE)
    fixed = MatchingType(MatchingType.parse_config({"threshold": 0.05}), context)
    assert fixed.duplicate_threshold == 0.05
    assert MatchingType.duplicate_threshold == DEFAULT_THRESHOLD  # the class keeps the default
    with pytest.raises(InvalidConfigError, match="at most 1"):
        MatchingType.parse_config({"hash_weight": 0.6, "layout_weight": 0.6})


# -- through the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    registry = Registry()
    registry.register(MatchingType)
    with Engine(tmp_path_factory.mktemp("matching"), registry=registry) as opened:
        col = opened.create_collection("m", type="matching")
        col.add([{"_id": name, "_base64": image_base64(image)} for name, image in photos().items()])
        yield opened


#: Edits that the precision-first threshold must still flag (heavier ones rank first, below).
FLAGGED = ("resize", "jpeg", "crop10", "flip")


def test_each_copy_finds_its_original_as_a_duplicate(engine: Engine) -> None:
    col = engine.collection("m")
    flagged = 0
    for name, image in photos().items():
        for edit, apply in EDITS.items():
            hits = col.search(record={"_base64": image_base64(apply(image))}, limit=2)
            assert hits[0]["_id"] == name, (name, edit, hits)
            assert hits[1]["is_duplicate"] is False, (name, edit, hits[1])
            if edit in FLAGGED:
                assert hits[0]["is_duplicate"] is True, (name, edit, hits[0]["distance"])
            flagged += hits[0]["is_duplicate"]
    assert flagged >= 0.75 * len(photos()) * len(EDITS)


def test_distinct_images_are_not_duplicates(engine: Engine) -> None:
    col = engine.collection("m")
    for name, image in others().items():
        hits = col.search(record={"_base64": image_base64(image)}, limit=3)
        assert not any(hit["is_duplicate"] for hit in hits), (name, hits)
    for seed in range(4):
        hits = col.search(record={"_base64": image_base64(fake_image(seed, 200))}, limit=1)
        assert hits[0]["is_duplicate"] is False


def test_near_duplicates_groups_the_copies(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(MatchingType)
    pictures = photos()
    records = [{"_id": name, "_base64": image_base64(image)} for name, image in pictures.items()]
    records += [{"_id": name, "_base64": image_base64(image)} for name, image in others().items()]
    copies = {
        "astronaut": ["jpeg", "flip", "crop10"],
        "coffee": ["resize", "overlay"],
        "rocket": ["rotate"],
    }
    for name, edits in copies.items():
        for edit in edits:
            records.append({"_id": f"{name}~{edit}", "_base64": image_base64(EDITS[edit](pictures[name]))})
    with Engine(tmp_path, registry=registry) as engine:
        col = engine.create_collection("dups", type="matching")
        col.add(records)
        groups = col.near_duplicates()
    assert groups == [
        ["astronaut", "astronaut~crop10", "astronaut~flip", "astronaut~jpeg"],
        ["coffee", "coffee~overlay", "coffee~resize"],
        ["rocket", "rocket~rotate"],
    ]


def test_a_stricter_threshold_in_the_configuration_reaches_the_hits(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(MatchingType)
    image = photos()["chelsea"]
    with Engine(tmp_path, registry=registry) as engine:
        col = engine.create_collection("strict", type="matching", config={"threshold": 0.001})
        col.add([{"_id": "chelsea", "_base64": image_base64(image)}])
        same = col.search(record={"_base64": image_base64(image)}, limit=1)[0]
        edited = col.search(record={"_base64": image_base64(jpeg(image, 30), "JPEG")}, limit=1)[0]
    assert same["is_duplicate"] is True
    assert edited["is_duplicate"] is False and edited["distance"] > 0.001
