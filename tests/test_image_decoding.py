"""Images in: base64, files, URLs; decoding every mode; per-image errors; the pixel cap."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.errors import ImageTooLargeError, InvalidImageError, InvalidRecordError
from lookalike.images import decode_base64, decode_image, encode_image, image_bytes, load_images, to_data_uri


def encoded(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encoded(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (20, 40)
    top = np.asarray(decoded)[2, 10]
    assert top[2] > 150 and top[0] < 100  # the blue band is now on top


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 0
    decoded = decode_image(encoded(image, "PNG", transparency=0))
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("image", "format", "expected"),
    [
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (Image.new("LA", (8, 8), (0, 0)), "PNG", (255, 255, 255)),
        (Image.new("LA", (8, 8), (0, 255)), "PNG", (0, 0, 0)),
        (Image.new("RGBA", (8, 8), (0, 0, 255, 255)), "PNG", (0, 0, 255)),
        (Image.new("1", (8, 8), 1), "PNG", (255, 255, 255)),
        (Image.new("L", (8, 8), 128), "PNG", (128, 128, 128)),
    ],
)
def test_modes_become_rgb(image: Image.Image, format: str, expected: tuple[int, int, int]) -> None:
    decoded = decode_image(encoded(image, format))
    assert decoded.mode == "RGB"
    assert np.allclose(decoded.getpixel((4, 4)), expected, atol=6)


def test_sixteen_bit_keeps_its_range() -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    decoded = np.asarray(decode_image(encoded(image, "PNG")))[..., 0]
    assert decoded[0, 0] == 0 and decoded[7, 7] == round(63000 * 255 / 65535)
    assert len(np.unique(decoded)) == 64  # not clipped into a few values


def test_float_images_are_scaled() -> None:
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    decoded = np.asarray(decode_image(encoded(Image.fromarray(values, "F"), "TIFF")))[..., 0]
    assert decoded.min() == 0 and decoded.max() == 255


def test_animations_give_their_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert np.allclose(decode_image(buffer.getvalue()).getpixel((5, 5)), (255, 0, 0), atol=4)


@pytest.mark.parametrize("cut", [10, 100, 400])
@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_images_are_invalid(format: str, cut: int) -> None:
    rng = np.random.default_rng(0)
    data = encoded(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), format)
    with pytest.raises(InvalidImageError):
        decode_image(data[:cut])


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"GIF89a"])
def test_non_images_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        decode_image(data)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; the pixel data is a tiny, wrong stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(
        b"IEND", b""
    )


def test_the_pixel_cap_stops_bombs_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError):
        decode_image(png_header(100_000, 100_000))
    with pytest.raises(ImageTooLargeError, match="9000x9000"):
        decode_image(png_header(9_000, 9_000), max_pixels=10_000_000)
    with pytest.raises(ImageTooLargeError, match="limit of 100"):
        decode_image(encoded(Image.new("RGB", (20, 20))), max_pixels=100)
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(encoded(Image.new("RGB", (20, 20))), max_bytes=10)


def test_large_jpegs_decode_at_a_reduced_scale() -> None:
    image = Image.new("RGB", (1600, 1200), (10, 200, 30))
    data = encoded(image, "JPEG")
    assert decode_image(data).size == (1600, 1200)
    reduced = decode_image(data, min_side=256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 1600
    assert np.allclose(reduced.getpixel((10, 10)), (10, 200, 30), atol=6)


def test_base64_variants() -> None:
    raw = encoded(Image.new("RGB", (5, 5), (1, 2, 3)))
    text = base64.b64encode(raw).decode()
    assert decode_base64(text) == raw
    assert decode_base64("data:image/png;base64," + text) == raw
    assert decode_base64("DATA:image/png;BASE64," + text) == raw
    assert decode_base64("\n".join(text[i : i + 20] for i in range(0, len(text), 20))) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ["", "   ", "!!!!", "data:image/png,abc", "data:image/png;base64,"]:
        with pytest.raises(InvalidImageError):
            decode_base64(bad)
    with pytest.raises(ImageTooLargeError):
        decode_base64(text, max_bytes=10)


def test_record_sources(tmp_path: Path) -> None:
    raw = encoded(Image.new("RGB", (5, 5)))
    path = tmp_path / "p.png"
    path.write_bytes(raw)
    asked: list[str] = []
    assert image_bytes({"_id": "x"}) is None
    assert image_bytes({"_file": str(path)}) == raw
    assert image_bytes({"_url": "http://h/p.png"}, fetch=lambda url: asked.append(url) or raw) == raw
    assert asked == ["http://h/p.png"]
    with pytest.raises(InvalidRecordError, match="one image source"):
        image_bytes({"_file": str(path), "_base64": "AAAA"})
    with pytest.raises(InvalidRecordError, match="fetcher"):
        image_bytes({"_url": "http://h/p.png"})
    with pytest.raises(InvalidRecordError, match="not accepted"):
        image_bytes({"_file": str(path)}, allow_files=False)
    with pytest.raises(InvalidRecordError, match="string"):
        image_bytes({"_base64": 42})
    with pytest.raises(InvalidImageError, match="cannot read"):
        image_bytes({"_file": str(tmp_path / "missing.png")})
    with pytest.raises(ImageTooLargeError):
        image_bytes({"_file": str(path)}, max_bytes=10)


def test_a_batch_returns_images_and_errors_in_order() -> None:
    good = base64.b64encode(encoded(Image.new("RGB", (6, 6), (9, 9, 9)))).decode()
    results = load_images([{"_base64": good}, {"_base64": "aGVsbG8="}, {"nothing": 1}, {"_base64": good}])
    assert isinstance(results[0], Image.Image) and isinstance(results[3], Image.Image)
    assert isinstance(results[1], InvalidImageError) and isinstance(results[2], InvalidRecordError)


def test_encoding_helpers_round_trip() -> None:
    image = Image.new("RGB", (12, 8), (200, 100, 50))
    assert decode_image(encode_image(image, "PNG")).getpixel((3, 3)) == (200, 100, 50)
    uri = to_data_uri(image, "PNG")
    assert uri.startswith("data:image/png;base64,")
    assert decode_image(decode_base64(uri)).size == (12, 8)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        decode_image(data)
    except InvalidImageError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=64))
def test_damaged_pngs_are_invalid_images(position: int, garbage: bytes) -> None:
    data = bytearray(encoded(Image.new("RGB", (30, 30), (5, 6, 7))))
    position = position % len(data)
    data[position : position + len(garbage)] = garbage
    try:
        decode_image(bytes(data))
    except InvalidImageError:
        pass
