"""lookalike.images: record sources, base64, decoding every mode, the caps, per-record errors.

Every input is generated here with Pillow or numpy (no network, no fixture files).
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, features

from lookalike.errors import ImageTooLargeError, InvalidImageError, InvalidInputError, InvalidRecordError
from lookalike.images import (
    MAX_BYTES,
    MAX_PIXELS,
    decode_base64,
    decode_image,
    encode_image,
    image_bytes,
    load_images,
    to_data_uri,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encoded(image: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def close(actual: Any, expected: Any, atol: int = 6) -> bool:
    return bool(np.allclose(np.asarray(actual, dtype=int), np.asarray(expected, dtype=int), atol=atol))


def noise(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height`; its pixel data is a tiny, wrong stream."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- EXIF orientation -------------------------------------------------------------------------


def test_exif_orientation_6_swaps_sides_and_rotates_pixels() -> None:
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (0, 0, 10, 20))  # a blue band on the left
    decoded = decode_image(encoded(image, "JPEG", exif=exif_with_orientation(6), quality=95))
    assert decoded.size == (20, 40)  # 6: rotate 90 degrees clockwise to display
    assert close(decoded.getpixel((10, 2)), BLUE, atol=40)  # the left band is now on top
    assert close(decoded.getpixel((10, 37)), RED, atol=40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    image = Image.fromarray(np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5)
    data = encoded(image, "PNG", exif=exif_with_orientation(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert np.array_equal(pixels(decode_image(data)), pixels(expected))


def test_orientation_from_big_endian_exif_tiff_tags_and_xmp() -> None:
    image = Image.new("RGB", (30, 10), RED)
    big_endian = b"Exif\x00\x00MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHHI", 0x0112, 3, 1, 8, 0, 0)
    assert decode_image(encoded(image, "JPEG", exif=big_endian)).size == (10, 30)
    assert decode_image(encoded(image, "TIFF", tiffinfo={0x0112: 6})).size == (10, 30)
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    assert decode_image(encoded(image, "PNG", pnginfo=info)).size == (10, 30)


def test_invalid_orientation_values_are_ignored() -> None:
    image = Image.new("RGB", (30, 10), RED)
    for value in (0, 9, 300):
        assert decode_image(encoded(image, "PNG", exif=exif_with_orientation(value))).size == (30, 10)


def corrupt_exif(orientation: int) -> bytes:
    """EXIF whose IFD0 announces 3 entries but holds one (the orientation): truncated."""
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 3) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)


def test_corrupt_exif_in_a_png_is_read_without_any_warning() -> None:
    image = Image.new("RGB", (30, 10), RED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(encoded(image, "PNG", exif=corrupt_exif(6))).size == (10, 30)


def test_corrupt_exif_in_a_jpeg_follows_the_warning_filters() -> None:
    """Pillow warns while opening such a JPEG; the image decodes unless warnings are errors,
    and then it is an InvalidImageError naming the warning, never a raw UserWarning."""
    data = encoded(Image.new("RGB", (30, 10), RED), "JPEG", exif=corrupt_exif(6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert decode_image(data).size == (10, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidImageError, match="UserWarning: Corrupt EXIF"):
            decode_image(data)


# --- modes --------------------------------------------------------------------------------


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.paste(1, (4, 0, 8, 8))
    decoded = decode_image(encoded(image, "PNG", transparency=0))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == WHITE and decoded.getpixel((6, 6)) == GREEN


def test_palette_with_partial_alpha_is_blended_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] + [0] * 765)
    decoded = decode_image(encoded(image, "PNG", transparency=bytes([128])))  # half-transparent black
    assert close(decoded.getpixel((1, 1)), (127, 127, 127), atol=2)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert decoded.mode == "RGB" and close(decoded.getpixel((4, 4)), RED)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("LA", (8, 8), (0, 0)), WHITE),  # transparent black: white, not black
        (Image.new("LA", (8, 8), (0, 255)), (0, 0, 0)),
        (Image.new("LA", (8, 8), (0, 128)), (127, 127, 127)),
        (Image.new("RGBA", (8, 8), (0, 0, 0, 0)), WHITE),
        (Image.new("RGBA", (8, 8), (0, 0, 255, 255)), BLUE),
    ],
)
def test_alpha_is_composited_on_white(image: Image.Image, expected: tuple[int, int, int]) -> None:
    decoded = decode_image(encoded(image, "PNG"))
    assert decoded.mode == "RGB" and close(decoded.getpixel((4, 4)), expected, atol=1)


@pytest.mark.parametrize(("mode", "colour", "key"), [("L", 0, 0), ("RGB", BLUE, BLUE)])
def test_a_transparent_colour_becomes_white(mode: str, colour: Any, key: Any) -> None:
    image = Image.new(mode, (8, 8), colour)
    image.paste(200 if mode == "L" else RED, (4, 0, 8, 8))
    decoded = decode_image(encoded(image, "PNG", transparency=key))
    assert decoded.getpixel((1, 1)) == WHITE
    assert decoded.getpixel((6, 6)) == ((200, 200, 200) if mode == "L" else RED)


@pytest.mark.parametrize(("value", "expected"), [(1, WHITE), (0, (0, 0, 0))])
def test_one_bit_images(value: int, expected: tuple[int, int, int]) -> None:
    decoded = decode_image(encoded(Image.new("1", (8, 8), value), "PNG"))
    assert decoded.mode == "RGB" and decoded.getpixel((4, 4)) == expected


def test_sixteen_bit_png_keeps_its_range() -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)
    image = Image.fromarray(ramp)
    data = encoded(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    decoded = pixels(decode_image(data))[..., 0]
    # Scaled over 0-65535, not clipped at 255.
    assert np.array_equal(decoded, np.rint(ramp.astype(np.float64) * 255 / 65535))
    assert len(np.unique(decoded)) == 64


def test_sixteen_bit_ppm_opened_as_mode_i_is_scaled_the_same_way() -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    data = encoded(Image.fromarray(ramp), "PPM")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert np.array_equal(pixels(decode_image(data))[..., 0], np.rint(ramp.astype(np.float64) * 255 / 65535))


def test_thirty_two_bit_integers_outside_sixteen_bits_are_stretched() -> None:
    values = np.linspace(-100_000, 100_000, 64).astype(np.int32).reshape(8, 8)
    decoded = pixels(decode_image(encoded(Image.fromarray(values), "TIFF")))[..., 0]
    assert decoded.min() == 0 and decoded.max() == 255 and np.all(np.diff(decoded.ravel()) >= 0)


def test_float_tiff_in_unit_range_is_scaled() -> None:
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    data = encoded(Image.fromarray(values, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    decoded = pixels(decode_image(data))[..., 0]
    assert np.array_equal(decoded, np.rint(values * 255))


def test_float_tiff_outside_unit_range_and_with_nan() -> None:
    values = np.linspace(-5, 500, 64, dtype=np.float32).reshape(8, 8)
    values[0, 1] = np.nan
    decoded = pixels(decode_image(encoded(Image.fromarray(values, "F"), "TIFF")))[..., 0]
    assert decoded[0, 0] == 0 and decoded[7, 7] == 255 and decoded[0, 1] == 0
    all_nan = np.full((4, 4), np.nan, dtype=np.float32)
    with pytest.raises(InvalidImageError, match="no finite"):
        decode_image(encoded(Image.fromarray(all_nan, "F"), "TIFF"))


def animation(format: str, **options: Any) -> bytes:
    frames = [Image.new("RGB", (10, 10), colour) for colour in (RED, GREEN, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=format, save_all=True, append_images=frames[1:], duration=50, loop=0, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "format",
    [
        "GIF",
        "PNG",  # APNG
        pytest.param("WEBP", marks=pytest.mark.skipif(not features.check("webp"), reason="no WebP support")),
    ],
)
def test_animations_give_their_first_frame(format: str) -> None:
    data = animation(format, **({"lossless": True} if format == "WEBP" else {}))
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    decoded = decode_image(data)
    assert decoded.mode == "RGB" and close(decoded.getpixel((5, 5)), RED, atol=4)


def test_the_result_is_a_plain_loaded_image() -> None:
    for data in (encoded(noise(), "JPEG"), encoded(noise(), "PNG"), animation("GIF")):
        decoded = decode_image(data)
        assert decoded.mode == "RGB" and not isinstance(decoded, ImageFile.ImageFile)
        assert decoded.getpixel((0, 0)) is not None


def test_large_jpegs_decode_at_a_reduced_scale() -> None:
    data = encoded(Image.new("RGB", (1600, 1200), (10, 200, 30)), "JPEG")
    assert decode_image(data).size == (1600, 1200)
    reduced = decode_image(data, min_side=256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 1600
    assert close(reduced.getpixel((10, 10)), (10, 200, 30))


# --- base64 -------------------------------------------------------------------------------


def test_base64_variants() -> None:
    raw = encoded(Image.new("RGB", (5, 5), (1, 2, 3)))
    text = b64(raw)
    assert decode_base64(text) == raw
    assert decode_base64("data:image/png;base64," + text) == raw
    assert decode_base64("  DATA:image/PNG;BASE64," + text) == raw
    assert decode_base64("data:image/png;charset=utf-8;base64," + text) == raw
    assert decode_base64("\n".join(text[i : i + 20] for i in range(0, len(text), 20)) + "\r\n") == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode()) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert decode_base64(text.rstrip("=")) == raw


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("  \n ", "empty"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png,iVBORw0KGgo=", "base64-encoded"),
        ("!!!!", "not valid base64"),
        ("QUJD\u00e9", "not valid base64"),
        ("A", "not valid base64"),
        ("QQ==QQ==", "not valid base64"),
    ],
)
def test_invalid_base64_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(InvalidImageError, match=problem):
        decode_base64(text)


def test_base64_over_the_cap_is_refused_before_decoding() -> None:
    assert decode_base64(b64(b"x" * 12), max_bytes=12) == b"x" * 12
    with pytest.raises(ImageTooLargeError):
        decode_base64(b64(b"x" * 13), max_bytes=12)
    with pytest.raises(ImageTooLargeError):
        decode_base64("!" * 200, max_bytes=12)  # refused on size, not parsed
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        decode_base64("A" * (3 * MAX_BYTES))
    assert time.perf_counter() - started < 1.0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.booleans(), st.booleans(), st.integers(1, 80))
def test_base64_round_trips_in_every_spelling(data: bytes, urlsafe: bool, unpadded: bool, width: int) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if unpadded:
        text = text.rstrip("=")
    text = "\n".join(text[i : i + width] for i in range(0, len(text), width))
    if data:
        assert decode_base64(text) == data
        assert decode_base64("data:image/png;base64," + text) == data


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100))
def test_arbitrary_text_is_base64_or_an_invalid_image(text: str) -> None:
    try:
        assert isinstance(decode_base64(text), bytes)
    except InvalidImageError:
        pass


# --- bad bytes and caps --------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.01, 0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_images_are_invalid(format: str, cut: float) -> None:
    data = encoded(noise(), format)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data[: max(1, int(len(data) * cut))])
    assert type(caught.value) is InvalidImageError


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"hello world, this is not an image", "not an image"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not"),
        (b"GIF89a", "not"),
        (b"\xff\xd8\xff", "not"),
    ],
)
def test_non_images_name_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidImageError, match=problem):
        decode_image(data)


def test_non_bytes_input_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImageError, match="must be bytes"):
        decode_image("not bytes")  # type: ignore[arg-type]
    assert decode_image(bytearray(encoded(noise(4, 4)))).size == (4, 4)
    assert decode_image(memoryview(encoded(noise(4, 4)))).size == (4, 4)


@pytest.mark.parametrize("format", ["TGA", "PCX", "SGI", "EPS"])
def test_formats_outside_the_allowlist_are_refused(format: str) -> None:
    if format == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    else:
        data = encoded(noise(8, 8), format)
        assert Image.open(io.BytesIO(data)).format == format  # Pillow itself would read it
    with pytest.raises(InvalidImageError, match="supported format"):
        decode_image(data)


@pytest.mark.parametrize("size", [(0, 10), (10, 0)])
def test_zero_size_images_are_invalid(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(png_claiming(*size))
    assert type(caught.value) is InvalidImageError


def test_the_pixel_cap_stops_bombs_from_the_header() -> None:
    started = time.perf_counter()
    claimed = f"100000x100000 = 10000000000 pixels, more than the limit of {MAX_PIXELS}"
    with pytest.raises(ImageTooLargeError, match=claimed):
        decode_image(png_claiming(100_000, 100_000))
    # Above Pillow's own warning threshold (~89.5M pixels): our check answers first, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError, match="10000x9000"):
            decode_image(png_claiming(10_000, 9_000))
    with pytest.raises(ImageTooLargeError, match="9000x9000"):
        decode_image(png_claiming(9_000, 9_000), max_pixels=10_000_000)
    assert time.perf_counter() - started < 1.0  # nothing was allocated or decoded


def test_the_caps_apply_per_call() -> None:
    data = encoded(Image.new("RGB", (20, 20)))
    with pytest.raises(ImageTooLargeError, match="limit of 100"):
        decode_image(data, max_pixels=100)
    assert decode_image(data, max_pixels=400).size == (20, 20)
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(data, max_bytes=10)
    assert decode_image(data, max_bytes=len(data)).size == (20, 20)


def test_a_gif_frame_larger_than_its_screen_is_capped() -> None:
    data = bytearray(encoded(Image.new("P", (4, 4)), "GIF"))
    descriptor = data.index(b"\x2c")  # image descriptor: x, y, width, height
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 60_000, 60_000)
    with pytest.raises(ImageTooLargeError):
        decode_image(bytes(data))


def test_pillow_and_warning_globals_are_left_alone() -> None:
    before_filters, before_cap = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    good = {"_base64": b64(encoded(noise(32, 32), "JPEG"))}
    results = load_images([good, {"_base64": b64(png_claiming(100_000, 100_000))}] * 8, threads=4)
    assert [type(result).__name__ for result in results[:2]] == ["Image", "ImageTooLargeError"]
    assert warnings.filters == before_filters and Image.MAX_IMAGE_PIXELS == before_cap


# --- records ------------------------------------------------------------------------------


def test_records_without_an_image_give_none() -> None:
    assert image_bytes({"_id": "x", "colour": "red"}) is None


def test_base64_and_file_sources(tmp_path: Path) -> None:
    raw = encoded(noise(5, 5))
    path = tmp_path / "p.png"
    path.write_bytes(raw)
    assert image_bytes({"_base64": "data:image/png;base64," + b64(raw)}) == raw
    assert image_bytes({"_file": str(path)}) == raw


def test_url_goes_through_the_fetcher() -> None:
    raw = encoded(noise(5, 5))
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        return raw

    assert image_bytes({"_url": "https://example.test/p.png"}, fetch=fetch) == raw
    assert asked == ["https://example.test/p.png"]
    with pytest.raises(InvalidRecordError, match="needs a fetcher"):
        image_bytes({"_url": "https://example.test/p.png"})
    with pytest.raises(ImageTooLargeError):
        image_bytes({"_url": "https://example.test/p.png"}, fetch=fetch, max_bytes=10)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (ConnectionError("connection refused"), "connection refused"),
        (RuntimeError("fetcher bug"), "fetcher bug"),
    ],
)
def test_a_failing_fetcher_is_this_records_invalid_image(failure: Exception, message: str) -> None:
    def fetch(url: str) -> bytes:
        raise failure

    with pytest.raises(InvalidImageError, match=message):
        image_bytes({"_url": "https://example.test/p.png"}, fetch=fetch)
    with pytest.raises(InvalidImageError, match="not bytes"):
        image_bytes({"_url": "https://example.test/p.png"}, fetch=lambda url: url)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"_file": "a.png", "_base64": "AAAA"}, "one image source, got _base64 and _file"),
        ({"_url": "http://h/a.png", "_base64": "AAAA"}, "one image source"),
        ({"_base64": 42}, "_base64 must be a string, got int"),
        ({"_url": None}, "_url must be a string, got NoneType"),
        ({"_file": ["a.png"]}, "_file must be a string, got list"),
        ({"_base64": "  "}, "_base64 is empty"),
    ],
)
def test_malformed_records(record: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRecordError, match=problem):
        image_bytes(record, fetch=lambda url: b"")


def test_a_record_must_be_a_mapping() -> None:
    with pytest.raises(InvalidRecordError, match="mapping"):
        image_bytes("_url")  # type: ignore[arg-type]


def test_files_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(encoded(noise(5, 5)))
    with pytest.raises(InvalidRecordError, match="_file is not accepted"):
        image_bytes({"_file": str(path)}, allow_files=False)
    with pytest.raises(InvalidRecordError, match="_file is not accepted"):
        image_bytes({"_file": str(tmp_path / "missing.png")}, allow_files=False)  # no probing of the disk


def test_unreadable_files_are_invalid_images(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="cannot read _file"):
        image_bytes({"_file": str(tmp_path / "missing.png")})
    with pytest.raises(InvalidImageError, match="not a regular file"):
        image_bytes({"_file": str(tmp_path)})
    with pytest.raises(InvalidImageError, match="cannot read _file"):
        image_bytes({"_file": "bad\x00name.png"})


def test_a_file_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as file:
        file.truncate(MAX_BYTES + 1)  # sparse: nothing is written, and nothing must be read
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=f"{MAX_BYTES + 1} bytes"):
        image_bytes({"_file": str(path)})
    assert time.perf_counter() - started < 0.5
    small = tmp_path / "small.png"
    small.write_bytes(encoded(noise(5, 5)))
    with pytest.raises(ImageTooLargeError):
        image_bytes({"_file": str(small)}, max_bytes=10)


# --- batches ------------------------------------------------------------------------------


def mixed_batch(tmp_path: Path) -> tuple[list[Any], Callable[[str], bytes], list[Callable[[Any], bool]]]:
    """Twelve records (good, bad, malformed) with a fetcher, and a check for each result."""
    colours = [(10 * i, 255 - 10 * i, 7) for i in range(6)]
    path = tmp_path / "f.png"
    path.write_bytes(encoded(Image.new("RGB", (6, 6), colours[1])))
    fetched = encoded(Image.new("RGB", (6, 6), colours[2]))

    def is_colour(colour: tuple[int, int, int]) -> Callable[[Any], bool]:
        return lambda result: isinstance(result, Image.Image) and close(result.getpixel((3, 3)), colour, atol=0)

    def is_error(kind: type[Exception]) -> Callable[[Any], bool]:
        return lambda result: type(result) is kind

    records: list[Any] = [
        {"_base64": b64(encoded(Image.new("RGB", (6, 6), colours[0])))},
        {"_file": str(path)},
        {"_url": "https://example.test/2.png"},
        {"_base64": b64(b"not an image")},
        {"_id": "no image"},
        {"_base64": "data:image/png;base64," + b64(encoded(Image.new("RGB", (6, 6), colours[3])))},
        {"_base64": b64(png_claiming(100_000, 100_000))},
        {"_url": "https://example.test/2.png", "_file": str(path)},
        "not a record",
        {"_base64": b64(encoded(Image.new("RGB", (6, 6), colours[4])))},
        {"_url": "https://example.test/missing.png"},
        {"_base64": b64(encoded(noise(), "JPEG")[:200])},
    ]
    checks = [
        is_colour(colours[0]),
        is_colour(colours[1]),
        is_colour(colours[2]),
        is_error(InvalidImageError),
        is_error(InvalidRecordError),
        is_colour(colours[3]),
        is_error(ImageTooLargeError),
        is_error(InvalidRecordError),
        is_error(InvalidRecordError),
        is_colour(colours[4]),
        is_error(InvalidImageError),
        is_error(InvalidImageError),
    ]

    def fetch(url: str) -> bytes:
        if url.endswith("missing.png"):
            raise FileNotFoundError(url)
        return fetched

    return records, fetch, checks


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_a_mixed_batch_returns_images_and_errors_in_order(tmp_path: Path, threads: int | None) -> None:
    records, fetch, checks = mixed_batch(tmp_path)
    results = load_images(records, fetch=fetch, threads=threads)
    assert len(results) == len(records)
    for index, (result, check) in enumerate(zip(results, checks, strict=True)):
        assert check(result), (index, result)


def test_a_batch_uses_threads_only_when_large_enough() -> None:
    seen: set[str] = set()

    def fetch(url: str) -> bytes:
        seen.add(threading.current_thread().name)
        time.sleep(0.01)
        return encoded(noise(8, 8))

    load_images([{"_url": "u"}] * 3, fetch=fetch)
    assert seen == {threading.current_thread().name}
    seen.clear()
    load_images([{"_url": "u"}] * 16, fetch=fetch, threads=4)
    assert len(seen) > 1 and all(name.startswith("lookalike-decode") for name in seen)


def test_batch_options_are_passed_on(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(encoded(Image.new("RGB", (20, 20))))
    assert isinstance(load_images([{"_file": str(path)}], allow_files=False)[0], InvalidRecordError)
    assert isinstance(load_images([{"_file": str(path)}], max_pixels=100)[0], ImageTooLargeError)
    assert isinstance(load_images([{"_file": str(path)}], max_bytes=10)[0], ImageTooLargeError)
    assert load_images([]) == []


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_refused(threads: Any) -> None:
    with pytest.raises(InvalidInputError, match="threads"):
        load_images([], threads=threads)


# --- helpers ------------------------------------------------------------------------------


def test_encoding_helpers_round_trip() -> None:
    image = Image.new("RGB", (12, 8), (200, 100, 50))
    assert decode_image(encode_image(image, "PNG")).getpixel((3, 3)) == (200, 100, 50)
    assert close(decode_image(encode_image(image)).getpixel((3, 3)), (200, 100, 50))
    assert encode_image(image, "jpg")[:3] == b"\xff\xd8\xff"
    assert len(encode_image(noise(), quality=30)) < len(encode_image(noise(), quality=95))
    assert encode_image(Image.new("RGBA", (4, 4)), "JPEG")[:3] == b"\xff\xd8\xff"  # alpha dropped for JPEG
    uri = to_data_uri(image, "PNG")
    assert uri.startswith("data:image/png;base64,")
    assert to_data_uri(image).startswith("data:image/jpeg;base64,")
    assert decode_image(decode_base64(uri)).size == (12, 8)


# --- fuzzing ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_raise_only_invalid_image(data: bytes) -> None:
    try:
        decode_image(data)
    except InvalidImageError:
        pass


SEEDS = {format: encoded(noise(24, 16), format) for format in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 10_000), st.binary(min_size=1, max_size=16))
def test_damaged_files_raise_only_invalid_image(format: str, position: int, garbage: bytes) -> None:
    data = bytearray(SEEDS[format])
    position %= len(data)
    data[position : position + len(garbage)] = garbage
    try:
        decoded = decode_image(bytes(data), max_pixels=1_000_000)
    except InvalidImageError:
        return
    assert decoded.mode == "RGB" and decoded.size[0] * decoded.size[1] <= 1_000_000
