"""A corpus of hostile inputs, built in memory (nothing binary is committed).

Images: decompression bombs (small files declaring huge dimensions, in every format that can
say so), truncated and corrupt files, unsupported types (SVG, PDF, HTML, a ZIP), empty and
one-byte files; and the inputs that are *valid* but nasty: a GIF of thousands of frames whose
later frames are garbage (only the first frame may be decoded), and polyglots (a PNG with a ZIP
appended, a GIF followed by HTML) that are images first.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image


def _png(size: tuple[int, int] = (16, 16), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(format: str, size: tuple[int, int] = (32, 32), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 90, 160)).save(buffer, format=format, **options)
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG whose header declares `width` x `height` (the CRC fixed up)."""
    data = bytearray(_png())
    # Signature (8), then the IHDR chunk: length (4), type (4), width, height, ...
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def jpeg_bomb(side: int = 65_500) -> bytes:
    """A JPEG whose frame header (SOF0) declares `side` x `side` pixels."""
    data = bytearray(_encoded("JPEG"))
    at = data.index(b"\xff\xc0")
    # marker (2), length (2), precision (1), height (2), width (2)
    data[at + 5 : at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def gif_bomb() -> bytes:
    """A GIF whose logical screen and first image declare 65,535 x 65,535 pixels."""
    data = bytearray(_encoded("GIF"))
    data[6:10] = struct.pack("<HH", 0xFFFF, 0xFFFF)
    at = data.index(b"\x2c")  # the image descriptor: separator, left, top, width, height
    data[at + 5 : at + 9] = struct.pack("<HH", 0xFFFF, 0xFFFF)
    return bytes(data)


def webp_bomb() -> bytes:
    """An extended WebP whose canvas (VP8X) declares 16,384 x 16,384 pixels around a tiny
    lossless image."""
    small = _encoded("WEBP", lossless=True)
    assert small[12:16] == b"VP8L"
    image_chunk = small[12:]
    side = 16_384 - 1
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + side.to_bytes(3, "little") + side.to_bytes(3, "little")
    body = b"WEBP" + vp8x + image_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def truncated(format: str) -> bytes:
    data = _encoded(format, size=(64, 64))
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data is garbage (its CRCs still say the chunk is intact)."""
    data = bytearray(_png((64, 64)))
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at + 4 + length] = bytes((i * 37) % 256 for i in range(length))
    crc = zlib.crc32(bytes(data[at : at + 4 + length])) & 0xFFFFFFFF
    data[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
    return bytes(data)


def corrupt_jpeg() -> bytes:
    """A JPEG whose Huffman tables are zeroed: no scan can be decoded."""
    data = bytearray(_encoded("JPEG", size=(64, 64)))
    at = data.index(b"\xff\xc4")
    length = struct.unpack(">H", data[at + 2 : at + 4])[0]
    data[at + 4 : at + 2 + length] = bytes(length - 2)
    return bytes(data)


def many_frames(frames: int = 3_000) -> bytes:
    """An animated GIF of `frames` frames after the first, all of them garbage: decoding only
    the first frame (as the engine does) reads it in no time; decoding them all would fail."""
    first = bytearray(_encoded("GIF", size=(8, 8)))
    assert first[-1:] == b"\x3b"  # the trailer
    descriptor = b"\x2c" + struct.pack("<HHHH", 0, 0, 8, 8) + b"\x00"
    garbage_frame = descriptor + b"\x02" + b"\xff" + bytes(255) + b"\x00"
    return bytes(first[:-1]) + garbage_frame * frames + b"\x3b"


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def png_with_zip() -> bytes:
    """A PNG followed by a ZIP archive: a valid PNG, and a valid ZIP (read from the end)."""
    return _png((24, 24), (10, 200, 10)) + zip_file()


def gif_with_html() -> bytes:
    """A GIF followed by an HTML page: an image that a sniffing browser might take for HTML."""
    return _encoded("GIF", size=(24, 24)) + HTML


#: name -> bytes that must be refused, each with the error codes it may get.
REFUSED: dict[str, tuple[bytes, frozenset[str]]] = {
    "png bomb": (png_bomb(), frozenset({"image_too_large"})),
    "jpeg bomb": (jpeg_bomb(), frozenset({"image_too_large"})),
    "gif bomb": (gif_bomb(), frozenset({"image_too_large"})),
    "webp bomb": (webp_bomb(), frozenset({"image_too_large"})),
    "truncated jpeg": (truncated("JPEG"), frozenset({"invalid_image"})),
    "truncated png": (truncated("PNG"), frozenset({"invalid_image"})),
    "truncated webp": (truncated("WEBP"), frozenset({"invalid_image"})),
    "corrupt png": (corrupt_png(), frozenset({"invalid_image"})),
    "corrupt jpeg": (corrupt_jpeg(), frozenset({"invalid_image"})),
    "svg": (SVG, frozenset({"invalid_image"})),
    "pdf": (PDF, frozenset({"invalid_image"})),
    "html": (HTML, frozenset({"invalid_image"})),
    "zip": (zip_file(), frozenset({"invalid_image"})),
    "empty": (b"", frozenset({"invalid_image", "invalid_record", "invalid_body"})),
    "one byte": (b"\xff", frozenset({"invalid_image"})),
}

#: name -> bytes that are images first and are accepted (see the module's docstring).
ACCEPTED: dict[str, bytes] = {
    "3000 garbage frames after the first": many_frames(),
    "png + zip": png_with_zip(),
    "gif + html": gif_with_html(),
}
