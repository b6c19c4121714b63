"""Images in: record fields to bytes, bytes to a decoded RGB picture.

A record carries its image as ``_url`` (read by a fetch function the caller provides: the
server's safe fetcher, or the one passed in-process), ``_base64`` (a ``data:...;base64,`` prefix
allowed) or ``_file`` (a local path, for in-process and CLI use; the server turns it off).

Decoding applies the EXIF orientation, turns every mode (palette, CMYK, LA/RGBA composited on
white, 16-bit and float greyscale, 1-bit) into 8-bit RGB, takes the first frame of animations,
and refuses images whose header announces more than ``max_pixels`` pixels before any pixel is
decoded (decompression bombs). Every failure is an :class:`InvalidImageError` (or
:class:`ImageTooLargeError`) for that image, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.errors import ImageTooLargeError, InvalidImageError, InvalidRecordError, LookalikeError

__all__ = [
    "MAX_PIXELS",
    "MAX_BYTES",
    "decode_base64",
    "decode_image",
    "image_bytes",
    "load_images",
    "encode_image",
    "to_data_uri",
]

#: Images with more pixels are refused.
MAX_PIXELS = 40_000_000
#: Image payloads with more bytes are refused.
MAX_BYTES = 32 * 2**20

_DATA_URI = re.compile(r"^\s*data:([^;,]*)(;[^,]*)?,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_base64(text: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a base64 payload, with or without a ``data:<mime>;base64,`` prefix;
    whitespace, the URL-safe alphabet and missing padding are tolerated."""
    if not isinstance(text, str):
        raise InvalidImageError(f"_base64 must be a string, got {type(text).__name__}")
    match = _DATA_URI.match(text)
    if match is not None:
        if not (match.group(2) or "").lower().endswith("base64"):
            raise InvalidImageError("a data: URI must be base64-encoded (data:image/png;base64,...)")
        text = text[match.end() :]
    payload = _WHITESPACE.sub("", text)
    if not payload:
        raise InvalidImageError("_base64 is empty")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise ImageTooLargeError(f"the base64 image is larger than {max_bytes} bytes")
    payload = payload.replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImageError(f"_base64 is not valid base64 ({error})") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            raise InvalidImageError("the image holds no finite pixel values")
        low, high = float(finite.min()), float(finite.max())
        if mode.startswith("I;16"):
            low, high = 0.0, 65535.0
        elif mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        scale = 255.0 / (high - low) if high > low else 0.0
        scaled = np.clip((np.nan_to_num(array, nan=low) - low) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES, min_side: int | None = None
) -> Image.Image:
    """A fully loaded RGB image from encoded bytes (see the module's rules). With `min_side`, a
    JPEG may be decoded at a reduced scale (1/2, 1/4, 1/8) whose shorter side stays at least
    `min_side`: much faster for large photos that are resized down anyway."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImageError("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image has {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(bytes(data)))
            width, height = opened.size
            if width <= 0 or height <= 0:
                raise InvalidImageError(f"the image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"the image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            if getattr(opened, "is_animated", False):
                opened.seek(0)
            if min_side is not None and opened.format == "JPEG" and min(width, height) >= 2 * min_side:
                opened.draft("RGB", (min_side, min_side))
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(oriented if oriented is not None else opened)
            rgb.load()
            return rgb
    except LookalikeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"the image is too large to decode safely ({error})") from error
    except Image.DecompressionBombWarning as error:
        raise ImageTooLargeError(f"the image is too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        raise InvalidImageError("the data is not an image in a known format (JPEG, PNG, WebP, GIF, ...)") from error
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct_error()) as error:
        raise InvalidImageError(f"the image is damaged or truncated ({error})") from error
    except MemoryError as error:
        raise ImageTooLargeError("the image is too large to decode") from error


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def image_bytes(
    record: Mapping[str, Any],
    *,
    fetch: Callable[[str], bytes] | None = None,
    allow_files: bool = True,
    max_bytes: int = MAX_BYTES,
) -> bytes | None:
    """The encoded image of a record, from whichever of ``_url``, ``_base64``, ``_file`` it has
    (None when it has none)."""
    given = [name for name in ("_url", "_base64", "_file") if name in record]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidRecordError(f"a record takes one image source, got {' and '.join(given)}")
    source = given[0]
    value = record[source]
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(f"{source} must be a non-empty string")
    if source == "_base64":
        return decode_base64(value, max_bytes=max_bytes)
    if source == "_url":
        if fetch is None:
            raise InvalidRecordError("_url needs a fetcher: pass fetch= (a function from URL to bytes)")
        data = fetch(value)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"the image at {value} is larger than {max_bytes} bytes")
        return data
    if not allow_files:
        raise InvalidRecordError("_file is not accepted here (send _base64 or _url)")
    path = Path(value).expanduser()
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidImageError(f"_file {value!r} is not a file")
        if size > max_bytes:
            raise ImageTooLargeError(f"_file {value!r} has {size} bytes, more than the limit of {max_bytes}")
        return path.read_bytes()
    except OSError as error:
        raise InvalidImageError(f"cannot read _file {value!r}: {error.strerror or error}") from error


def load_images(
    records: Sequence[Mapping[str, Any]],
    *,
    fetch: Callable[[str], bytes] | None = None,
    allow_files: bool = True,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    threads: int | None = None,
) -> list[Image.Image | LookalikeError]:
    """Decodes a batch: one image or one error per record, in order."""

    def one(record: Mapping[str, Any]) -> Image.Image | LookalikeError:
        try:
            data = image_bytes(record, fetch=fetch, allow_files=allow_files, max_bytes=max_bytes)
            if data is None:
                raise InvalidRecordError("the record has no image (_url, _base64 or _file)")
            return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
        except LookalikeError as error:
            return error

    if len(records) <= 2 or threads == 1:
        return [one(record) for record in records]
    with ThreadPoolExecutor(max_workers=threads or 2) as pool:
        return list(pool.map(one, records))


def encode_image(image: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    """Encoded bytes of a picture (RGB for JPEG)."""
    buffer = io.BytesIO()
    if format.upper() in ("JPEG", "JPG"):
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=format)
    return buffer.getvalue()


def to_data_uri(image: Image.Image, format: str = "JPEG", quality: int = 90) -> str:
    """A ``data:image/...;base64,`` URI of a picture."""
    mime = "image/jpeg" if format.upper() in ("JPEG", "JPG") else f"image/{format.lower()}"
    return f"data:{mime};base64,{base64.b64encode(encode_image(image, format, quality)).decode('ascii')}"
