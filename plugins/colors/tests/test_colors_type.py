"""The colors type: CIELAB conversion, palettes, the Hellinger descriptor and colour queries."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.color import rgb2lab

from lookalike import Engine
from lookalike.errors import InvalidConfigError, InvalidInputError
from lookalike.sdk import TypeContext, parse_colors
from lookalike.sdk.registry import Registry
from lookalike.testing import CollectionTypeSuite, fake_images, image_base64
from lookalike_colors import ColorsConfig, ColorsType
from lookalike_colors.descriptor import descriptor, grid, hellinger, histogram
from lookalike_colors.lab import group_pixels, lab_to_hex, lab_to_srgb, srgb_to_lab
from lookalike_colors.palette import kmeans

RGB = tuple[int, int, int]
RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 160, 0)
BLUE: RGB = (0, 0, 255)
YELLOW: RGB = (250, 220, 0)


class TestColorsConformance(CollectionTypeSuite):
    collection_type = ColorsType
    bad_configs = [
        {"palette_size": 0},
        {"palette_size": 17},
        {"palette_size": "many"},
        {"palette_size": 2.5},
        {"palette_size": None},
        {"bins": 3},
        {"bins": 40},
        {"smoothing": 0},
        {"smoothing": "wide"},
        {"max_side": 4},
        {"max_side": [64]},
        {"colour_count": 5},
    ]


class TestColorsConformanceFine(CollectionTypeSuite):
    collection_type = ColorsType
    config = {"palette_size": 8, "bins": 11, "smoothing": 0.75, "max_side": 96}


def hex_of(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def make_type(**config: object) -> ColorsType:
    return ColorsType(ColorsType.parse_config(config), TypeContext(cache_dir=Path("/nonexistent")))


@pytest.fixture(scope="module")
def colors() -> ColorsType:
    return make_type()


def blocks(parts: Sequence[tuple[RGB, float]], size: int = 100, noise: int = 0, seed: int = 0) -> Image.Image:
    """Vertical stripes of the given colours and shares, with optional uniform noise."""
    pixels = np.zeros((size, size, 3), dtype=np.int16)
    start = 0
    for position, (rgb, share) in enumerate(parts):
        end = size if position == len(parts) - 1 else start + round(share * size)
        pixels[:, start:end] = rgb
        start = end
    if noise:
        pixels += np.random.default_rng(seed).integers(-noise, noise + 1, size=pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def embed(colors: ColorsType, images: Sequence[Image.Image]) -> np.ndarray:
    return colors.embed_images([colors.preprocess(image) for image in images])


def ranking(colors: ColorsType, query: object, named: dict[str, Image.Image]) -> list[str]:
    vector = colors.embed_colors(parse_colors(query))
    matrix = embed(colors, list(named.values()))
    distances = ((matrix - vector) ** 2).sum(axis=1)
    return [list(named)[i] for i in np.argsort(distances, kind="stable")]


# -- configuration ---------------------------------------------------------------------------


def test_defaults_and_dimension(colors: ColorsType) -> None:
    assert ColorsType.config_to_dict(colors.config) == {"palette_size": 5, "bins": 9, "smoothing": 0.5, "max_side": 64}
    assert isinstance(colors.config, ColorsConfig)
    assert colors.dimension == 294
    assert colors.metric == "l2sq"
    assert make_type(bins=11).dimension > colors.dimension


@pytest.mark.parametrize("bad", [{"palette_size": True}, {"bins": "9x"}, {"max_side": 100000}])
def test_more_bad_configs(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        ColorsType.parse_config(bad)


# -- CIELAB ----------------------------------------------------------------------------------


def test_lab_of_known_colours() -> None:
    white, red, black = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(white, [100.0, 0.0, 0.0], atol=0.1)
    np.testing.assert_allclose(red, [53.24, 80.09, 67.20], atol=0.01)
    np.testing.assert_allclose(black, [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(srgb_to_lab([1.0, 1.0, 1.0]), [100.0, 0.0, 0.0], atol=1e-9)


def test_lab_matches_skimage() -> None:
    rng = np.random.default_rng(7)
    floats = rng.random((5000, 3))
    np.testing.assert_allclose(srgb_to_lab(floats), rgb2lab(floats), atol=0.05)
    levels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(srgb_to_lab(levels), rgb2lab(levels), atol=0.05)
    np.testing.assert_allclose(srgb_to_lab(levels.astype(np.int64)), srgb_to_lab(levels))


def test_lab_round_trip_and_hex() -> None:
    rgb = np.random.default_rng(3).random((1000, 3))
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)
    assert lab_to_hex(srgb_to_lab(np.array([[255, 0, 0], [18, 52, 86]], dtype=np.uint8))) == ["#ff0000", "#123456"]


def test_grouped_pixels_keep_flat_colours_exact() -> None:
    pixels = np.array([[255, 0, 0]] * 30 + [[0, 0, 255]] * 10, dtype=np.uint8)
    lab, shares = group_pixels(pixels)
    order = np.argsort(-shares)
    np.testing.assert_allclose(shares[order], [0.75, 0.25])
    np.testing.assert_allclose(lab[order], srgb_to_lab(np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)))


# -- palettes --------------------------------------------------------------------------------


def delta_e(hex_colour: str, rgb: RGB) -> float:
    digits = hex_colour.lstrip("#")
    got = np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)
    return float(np.linalg.norm(srgb_to_lab(got) - srgb_to_lab(np.array(rgb, dtype=np.uint8))))


@pytest.mark.parametrize("noise", [0, 10])
def test_palette_of_two_colours(colors: ColorsType, noise: int) -> None:
    palette = colors.describe(blocks([(RED, 0.7), (BLUE, 0.3)], noise=noise))["_colors"]
    assert delta_e(palette[0]["color"], RED) < 3 and delta_e(palette[1]["color"], BLUE) < 3
    assert palette[0]["weight"] == pytest.approx(0.7, abs=0.03)
    assert palette[1]["weight"] == pytest.approx(0.3, abs=0.03)
    assert sum(entry["weight"] for entry in palette) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(palette[0]["lab"], srgb_to_lab(np.array(RED, dtype=np.uint8)), atol=1.5)


def test_palette_of_a_flat_image_is_one_colour(colors: ColorsType) -> None:
    palette = colors.describe(Image.new("RGB", (50, 30), (18, 52, 86)))["_colors"]
    assert palette == [{"color": "#123456", "weight": 1.0, "lab": palette[0]["lab"]}]


def test_palette_size_bounds_the_palette() -> None:
    image = fake_images(1, 128, start=4)[0]
    assert len(make_type(palette_size=1).describe(image)["_colors"]) == 1
    many = make_type(palette_size=16).describe(image)["_colors"]
    assert 1 < len(many) <= 16
    weights = [entry["weight"] for entry in many]
    assert weights == sorted(weights, reverse=True)


def test_kmeans_is_deterministic_and_weighted() -> None:
    points = np.random.default_rng(0).normal(size=(500, 3)) * 30
    first = kmeans(points, k=6)
    again = kmeans(points.copy(), k=6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    two = np.array([[50.0, 0.0, 0.0], [50.0, 60.0, 0.0]])
    centres, shares = kmeans(two, np.array([0.2, 0.8]), k=5)
    np.testing.assert_allclose(centres, two[::-1])
    np.testing.assert_allclose(shares, [0.8, 0.2])


# -- the descriptor --------------------------------------------------------------------------

colour_lists = st.lists(
    st.tuples(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
        st.floats(0.01, 10.0, allow_nan=False),
    ),
    min_size=1,
    max_size=8,
)


def hist_of(pairs: list[tuple[RGB, float]]) -> np.ndarray:
    rgb = np.array([c for c, _ in pairs], dtype=np.uint8)
    return histogram(grid(9, 0.5), srgb_to_lab(rgb), np.array([w for _, w in pairs]))


@settings(max_examples=150, deadline=None)
@given(colour_lists, colour_lists)
def test_descriptor_distance_is_sqrt2_hellinger(
    first: list[tuple[RGB, float]], second: list[tuple[RGB, float]]
) -> None:
    p, q = hist_of(first), hist_of(second)
    assert p.sum() == pytest.approx(1.0) and q.sum() == pytest.approx(1.0) and (p >= 0).all()
    dp, dq = descriptor(p), descriptor(q)
    assert float(np.linalg.norm(dp)) == pytest.approx(1.0, abs=1e-5)
    distance = float(np.linalg.norm(dp.astype(np.float64) - dq.astype(np.float64)))
    assert distance == pytest.approx(np.sqrt(2.0) * hellinger(p, q), abs=1e-4)
    assert 0.0 <= distance <= np.sqrt(2.0) + 1e-5


@settings(max_examples=50, deadline=None)
@given(colour_lists)
def test_colour_queries_match_the_histogram(pairs: list[tuple[RGB, float]]) -> None:
    colors = make_type()
    query = parse_colors([{"color": hex_of(rgb), "weight": w} for rgb, w in pairs])
    np.testing.assert_allclose(colors.embed_colors(query), descriptor(hist_of(pairs)), atol=1e-6)


def test_an_image_of_one_colour_equals_the_query_for_it(colors: ColorsType) -> None:
    image_vector = embed(colors, [Image.new("RGB", (40, 40), RED)])[0]
    query_vector = colors.embed_colors(parse_colors(["#ff0000"]))
    np.testing.assert_allclose(image_vector, query_vector, atol=1e-6)


def test_deterministic(colors: ColorsType) -> None:
    images = fake_images(4, 200)
    first = embed(colors, images)
    other = make_type()
    np.testing.assert_array_equal(first, embed(other, [image.copy() for image in images]))
    assert [colors.describe(i) for i in images] == [other.describe(i.copy()) for i in images]


def test_describe_then_preprocess_equals_preprocess_alone(colors: ColorsType) -> None:
    images = fake_images(3, 150, start=10)
    alone = [colors.preprocess(image) for image in images]
    for image, expected in zip(images, alone, strict=True):
        colors.describe(image)
        np.testing.assert_array_equal(colors.preprocess(image), expected)
    # an edited copy is a different image: no stale reuse
    image = images[0]
    colors.describe(image)
    edited = image.copy()
    edited.paste((0, 0, 0), (0, 0, 150, 150))
    assert not np.allclose(colors.preprocess(edited), alone[0])


def test_threads_agree_with_one_thread(colors: ColorsType) -> None:
    images = fake_images(12, 120)
    expected = [(colors.describe(i), colors.preprocess(i)) for i in images]
    got: dict[int, tuple[object, np.ndarray]] = {}

    def work(offset: int) -> None:
        for index in range(offset, len(images), 3):
            got[index] = (colors.describe(images[index]), colors.preprocess(images[index]))

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, (palette, vector) in enumerate(expected):
        assert got[index][0] == palette
        np.testing.assert_array_equal(got[index][1], vector)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_image_modes(colors: ColorsType, mode: str) -> None:
    image = fake_images(1, 64)[0].convert(mode)
    vector = embed(colors, [image])[0]
    assert vector.shape == (colors.dimension,) and np.isfinite(vector).all()
    assert colors.describe(image)["_colors"]


def test_tiny_and_long_images(colors: ColorsType) -> None:
    for size in [(1, 1), (1, 500), (900, 3)]:
        image = Image.new("RGB", size, YELLOW)
        np.testing.assert_allclose(embed(colors, [image])[0], colors.embed_colors(parse_colors(["#fadc00"])), atol=1e-6)


def test_bad_colour_queries(colors: ColorsType) -> None:
    with pytest.raises(InvalidInputError):
        colors.embed_colors([])
    with pytest.raises(InvalidInputError):
        colors.embed_colors([((300, 0, 0), 1.0)])
    with pytest.raises(InvalidInputError):
        colors.embed_colors([((255, 0, 0), -1.0)])
    with pytest.raises(InvalidInputError):
        colors.embed_colors([((255, 0), 1.0)])  # type: ignore[list-item]


# -- colour queries rank by colour and proportion --------------------------------------------


def four_colour_images() -> dict[str, Image.Image]:
    """Images each mostly one colour, with a little of the others and noise."""
    out = {}
    palette = {"red": RED, "green": GREEN, "blue": BLUE, "yellow": YELLOW}
    for seed, (name, main) in enumerate(palette.items()):
        others = [rgb for other, rgb in palette.items() if other != name]
        out[name] = blocks([(main, 0.7), (others[0], 0.1), (others[1], 0.1), (others[2], 0.1)], noise=12, seed=seed)
    return out


def test_a_red_query_ranks_the_red_image_first(colors: ColorsType) -> None:
    named = four_colour_images()
    assert ranking(colors, [{"color": "#ff0000", "weight": 1}], named)[0] == "red"
    for name, rgb in [("green", GREEN), ("blue", BLUE), ("yellow", YELLOW)]:
        assert ranking(colors, [hex_of(rgb)], named)[0] == name
    # a nearby shade still finds red
    assert ranking(colors, ["#d02020"], named)[0] == "red"


def test_mixtures_rank_by_proportion(colors: ColorsType) -> None:
    named = {
        "70/30": blocks([(RED, 0.7), (BLUE, 0.3)], noise=8),
        "30/70": blocks([(RED, 0.3), (BLUE, 0.7)], noise=8),
        "50/50": blocks([(RED, 0.5), (BLUE, 0.5)], noise=8),
        "green": blocks([(GREEN, 1.0)], noise=8),
    }
    query = [{"color": "#ff0000", "weight": 0.7}, {"color": "#0000ff", "weight": 0.3}]
    assert ranking(colors, query, named) == ["70/30", "50/50", "30/70", "green"]
    query = [{"color": "#ff0000", "weight": 0.3}, {"color": "#0000ff", "weight": 0.7}]
    assert ranking(colors, query, named) == ["30/70", "50/50", "70/30", "green"]


# -- through the engine ----------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    registry = Registry()
    registry.register(ColorsType)
    with Engine(tmp_path / "data", registry=registry, threads=2) as opened:
        yield opened


def test_search_by_colours_through_the_engine(engine: Engine) -> None:
    collection = engine.create_collection("swatches", type="colors")
    named = four_colour_images()
    collection.add([{"_id": name, "_base64": image_base64(image)} for name, image in named.items()])
    stored = collection.get(["red"])[0]
    palette = stored["_colors"]
    assert delta_e(palette[0]["color"], RED) < 5 and palette[0]["weight"] == pytest.approx(0.7, abs=0.05)
    assert set(palette[0]) == {"color", "weight", "lab"}
    hits = collection.search(colors=[{"color": "#ff0000", "weight": 1.0}], limit=4)
    assert hits[0]["_id"] == "red"
    hits = collection.search(colors=["#fadc00"], limit=1)
    assert hits[0]["_id"] == "yellow"
    assert collection.search(id="blue", limit=1)[0]["_id"] == "blue"
