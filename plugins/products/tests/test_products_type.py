"""The products type: background trimming, square padding, embeddings and the conformance suite."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data as skdata

from lookalike import Engine
from lookalike.errors import InvalidConfigError
from lookalike.sdk import TypeContext, models
from lookalike.sdk.registry import Registry
from lookalike.testing import CollectionTypeSuite, image_base64
from lookalike_products import ProductsConfig, ProductsType
from lookalike_products.trim import find_box, pad_to_square, trim_and_pad

WHITE = (255, 255, 255)
RGB = tuple[int, int, int]

# The suite's class-scoped fixtures are instance methods, which pytest 9 deprecates (and the
# root configuration turns warnings into errors); until lookalike.testing changes, ignore that one.


class TestProductsConformance(CollectionTypeSuite):
    collection_type = ProductsType
    config = {"tolerance": 30, "margin": 0.05}
    bad_configs = [
        {"tolerance": 256},
        {"tolerance": -1},
        {"tolerance": "high"},
        {"margin": 0.9},
        {"margin": -0.1},
        {"trim": "sometimes"},
        {"crop": True},
    ]


# -- synthetic product shots -----------------------------------------------------------------


def product(width: int, height: int, seed: int = 0) -> Image.Image:
    """A bottle-like object filling ``width`` x ``height`` exactly (its bounding box)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    body = (30, 110, 190)
    neck = max(2, width // 4)
    draw.rectangle((width // 2 - neck // 2, 0, width // 2 + neck // 2, height // 4), fill=(20, 20, 20))
    draw.rounded_rectangle((0, height // 5, width - 1, height - 1), radius=max(1, width // 8), fill=body)
    draw.rectangle((width // 8, height // 2, width - width // 8, height // 2 + height // 6), fill=(240, 200, 40))
    pixels = np.asarray(image, dtype=np.int16)
    inside = (pixels != 255).any(axis=2)
    noise = rng.integers(-10, 11, size=pixels.shape)
    pixels = np.where(inside[..., None], np.clip(pixels + noise, 0, 240), pixels)
    # Full-size rectangles at the extremes, so the bounding box is exactly the image.
    out = Image.fromarray(pixels.astype(np.uint8), "RGB")
    ImageDraw.Draw(out).rectangle((0, height - 3, width - 1, height - 1), fill=body)
    return out


def shot(
    canvas: tuple[int, int], obj: Image.Image, at: tuple[int, int], background: RGB = WHITE, mask_white: bool = True
) -> Image.Image:
    """``obj`` pasted at ``at`` on a uniform canvas (its white pixels become the background)."""
    image = Image.new("RGB", canvas, background)
    if mask_white:
        mask = Image.fromarray(((np.asarray(obj) != 255).any(axis=2) * 255).astype(np.uint8), "L")
        image.paste(obj, at, mask)
    else:
        image.paste(obj, at)
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        return opened.convert("RGB")


def assert_box_near(found: tuple[int, int, int, int], expected: tuple[int, int, int, int], slack: int) -> None:
    assert all(abs(a - b) <= slack for a, b in zip(found, expected, strict=True)), (found, expected)


def box_of(image: Image.Image, tolerance: int = 24) -> tuple[int, int, int, int]:
    box = find_box(image, tolerance).box
    return box.left, box.top, box.right, box.bottom


# -- trimming ----------------------------------------------------------------------------------


def test_trim_finds_the_object_on_white() -> None:
    image = shot((640, 480), product(180, 320), (120, 80))
    found = find_box(image)
    assert found.uniform and found.background == WHITE
    assert_box_near(box_of(image), (120, 80, 300, 400), slack=2)


def test_trim_finds_the_object_on_a_coloured_background_through_jpeg_noise() -> None:
    background = (196, 222, 240)
    image = jpeg(shot((800, 600), product(240, 300, seed=1), (430, 210), background), quality=40)
    found = find_box(image)
    assert found.uniform
    assert all(abs(a - b) <= 3 for a, b in zip(found.background, background, strict=True))
    assert_box_near(box_of(image), (430, 210, 670, 510), slack=6)


def test_trim_ignores_a_thin_frame() -> None:
    image = shot((600, 600), product(200, 260, seed=2), (50, 300))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 599, 599), outline=(60, 60, 60), width=4)
    image = jpeg(image, quality=60)
    assert_box_near(box_of(image), (50, 300, 250, 560), slack=6)


def test_trim_of_a_large_image_is_mapped_back_to_full_resolution() -> None:
    image = shot((2400, 1600), product(600, 900, seed=3), (1500, 300))
    assert_box_near(box_of(image), (1500, 300, 2100, 1200), slack=6)


def test_trim_never_trims_to_nothing() -> None:
    blank = Image.new("RGB", (300, 200), (240, 240, 240))
    assert box_of(blank) == (0, 0, 300, 200)
    out = trim_and_pad(blank)
    assert out.size == (300, 300)
    speck = blank.copy()
    speck.putpixel((150, 100), (0, 0, 0))
    box = find_box(speck).box
    assert box.width >= 2 and box.height >= 2  # one dark pixel: a tiny box, never an empty one
    assert trim_and_pad(speck).size[0] >= 2


def test_a_photo_without_a_uniform_background_is_not_trimmed() -> None:
    photo = Image.fromarray(skdata.astronaut())
    found = find_box(photo)
    assert not found.uniform
    assert box_of(photo) == (0, 0, 512, 512)
    assert trim_and_pad(photo).size == (512, 512)
    wide = Image.fromarray(skdata.coffee())  # 600 x 400: padded, not cropped
    out = trim_and_pad(wide)
    assert out.size == (600, 600)
    assert np.array_equal(np.asarray(out)[100:500], np.asarray(wide))


def test_padding_keeps_the_aspect_and_centres_a_wide_object() -> None:
    wide = product(400, 100, seed=4)
    image = shot((900, 700), wide, (20, 40))
    out = trim_and_pad(image, margin=0.05)
    side = out.size[0]
    assert out.size == (side, side)
    assert abs(side - (400 + 2 * 20)) <= 4  # the box's longer side plus the margin on both sides
    pixels = np.asarray(out).astype(np.int16)
    foreground = np.abs(pixels - 255).max(axis=2) > 24
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    # The object keeps its 4:1 aspect, sits in the middle, with white bands above and below.
    assert abs((cols[-1] + 1 - cols[0]) / (rows[-1] + 1 - rows[0]) - 4.0) < 0.05
    assert abs((rows[0] + rows[-1] + 1) / 2 - side / 2) <= 1
    assert abs((cols[0] + cols[-1] + 1) / 2 - side / 2) <= 1
    assert (pixels[: rows[0]] == 255).all() and (pixels[rows[-1] + 1 :] == 255).all()
    assert rows[0] > side // 3


def test_trim_off_only_pads() -> None:
    image = shot((400, 200), product(60, 80, seed=5), (10, 10))
    out = trim_and_pad(image, trim=False)
    assert out.size == (400, 400)
    assert np.array_equal(np.asarray(out)[100:300], np.asarray(image))


def test_margin_and_pad_are_in_background_colour() -> None:
    background = (120, 40, 40)
    image = shot((500, 500), product(100, 200, seed=6), (0, 150), background)  # touches the left edge
    out = np.asarray(trim_and_pad(image, margin=0.1)).astype(np.int16)
    assert out.shape[:2] == (240, 240)
    # The margin reaches past the image's left edge: it is background there, not black.
    assert (out[:, :5] == background).all() and (out[:5] == background).all()


# -- configuration -----------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    config = ProductsType.parse_config(None)
    assert config == ProductsConfig(trim=True, tolerance=24, margin=0.04)
    assert ProductsType.parse_config({"trim": False}).trim is False
    for bad in ({"tolerance": 300}, {"margin": 1.0}, {"margins": 0.1}):
        with pytest.raises(InvalidConfigError):
            ProductsType.parse_config(bad)
    assert ProductsType.default_product_id_field == "product_id"


# -- embeddings --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def products_type(tmp_path_factory: pytest.TempPathFactory) -> ProductsType:
    context = TypeContext(cache_dir=tmp_path_factory.mktemp("products-cache"), threads=2)
    return ProductsType(ProductsType.parse_config({}), context)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_trimming_makes_framing_irrelevant(products_type: ProductsType) -> None:
    """The same product small in a corner and large in the centre of a white canvas: the products
    embeddings are much closer than the generic (centre-crop) embeddings of the same two shots."""
    cat = Image.fromarray(skdata.chelsea()).crop((100, 20, 340, 260))  # a 240 x 240 "product"
    small = shot((800, 800), cat.resize((160, 160)), (24, 30), mask_white=False)
    large = shot((800, 800), cat.resize((600, 600)), (100, 100), mask_white=False)
    ours = products_type.embed_images([products_type.preprocess(small), products_type.preprocess(large)])
    assert ours.shape == (2, 1280) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    generic = models.image_model().run(models.pixel_values([small, large], crop=True))[0]
    trimmed = cosine(ours[0], ours[1])
    centre_crop = cosine(generic[0], generic[1])
    assert trimmed > 0.9
    assert 1 - trimmed < 0.5 * (1 - centre_crop), (trimmed, centre_crop)


def test_the_product_is_found_whatever_its_framing(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(ProductsType)
    cat = Image.fromarray(skdata.chelsea()).crop((100, 20, 340, 260))
    coffee = Image.fromarray(skdata.coffee()).crop((150, 20, 450, 320))
    rocket = Image.fromarray(skdata.rocket()).crop((250, 40, 450, 420))
    with Engine(tmp_path, registry=registry) as engine:
        col = engine.create_collection("shop", type="products")
        assert col.config.product_id_field == "product_id"
        col.add(
            [
                {
                    "_id": f"{name}-hero",
                    "_base64": image_base64(shot((700, 700), obj, (40, 40), mask_white=False)),
                    "product_id": name,
                }
                for name, obj in {"cat": cat, "coffee": coffee, "rocket": rocket}.items()
            ]
        )
        for name, obj in {"cat": cat, "coffee": coffee, "rocket": rocket}.items():
            small = obj.resize((obj.width // 3, obj.height // 3))
            query = jpeg(shot((900, 600), small, (700, 380), (248, 248, 248), mask_white=False), quality=70)
            hits = col.search(record={"_base64": image_base64(query, "JPEG")}, limit=3)
            assert hits[0]["product_id"] == name, hits


def test_padding_pixels_are_not_cropped_away(products_type: ProductsType) -> None:
    """A tall product is not cut by a centre crop: the model's input keeps its top and bottom."""
    tall = shot((300, 300), product(60, 280, seed=7), (120, 10))
    pixels = products_type.preprocess(tall)
    assert pixels.shape == (3, 224, 224)
    square = pad_to_square(Image.new("RGB", (10, 40), (1, 2, 3)), (9, 9, 9))
    assert square.size == (40, 40)
    # Top and bottom rows of the input hold the product (dark), not just background.
    assert (pixels[:, 14, :] < 0.8).any() and (pixels[:, 210, :] < 0.8).any()
