"""Images in: record fields to bytes, bytes to a decoded RGB picture.

Sources. A record carries its image in exactly one of ``_url`` (read by a fetch function the
caller provides: the server's safe fetcher, or one passed in-process), ``_base64`` (standard or
URL-safe alphabet, padding optional, whitespace ignored, a ``data:<mime>;base64,`` prefix allowed)
or ``_file`` (a local path, for in-process and CLI use; the server turns it off).

Formats. Only the formats in :data:`FORMATS` are opened (JPEG and MPO, PNG and APNG, GIF, WebP,
AVIF, HEIF when a plugin provides it, BMP, TIFF, ICO, PPM/PGM); Pillow's other parsers (EPS,
which runs Ghostscript, and rarely used formats) are never reached from untrusted bytes.

Decoding applies the EXIF orientation, turns every mode into 8-bit RGB (palette and alpha
composited on white, CMYK, 1-bit, 16-bit and float greyscale scaled to 0-255 rather than
clipped) and takes the first frame of animations.

Caps. Payloads over ``max_bytes`` (default :data:`MAX_BYTES`) are refused before they are
decoded or read, and images whose header announces more than ``max_pixels`` (default
:data:`MAX_PIXELS`) pixels are refused before any pixel is decoded. Both caps are per call:
this module reads and changes no Pillow or ``warnings`` global, so it is safe in threads.

Errors. Every failure is an :class:`InvalidImageError` (or its subclass
:class:`ImageTooLargeError`) for that image, or an :class:`InvalidRecordError` for a malformed
record; nothing else escapes. :func:`load_images` returns these errors in place of the image,
one result per record, so one bad record never fails a batch. A Pillow warning (for example
about corrupt EXIF metadata) is left to the process's warning filters; where those make it an
exception, it becomes the image's :class:`InvalidImageError`.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lookalike.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    InvalidRecordError,
    LookalikeError,
)

__all__ = [
    "MAX_PIXELS",
    "MAX_BYTES",
    "FORMATS",
    "decode_base64",
    "decode_image",
    "image_bytes",
    "load_images",
    "encode_image",
    "to_data_uri",
]

#: Images with more pixels (width x height, from the header) are refused.
MAX_PIXELS = 40_000_000
#: Encoded images with more bytes are refused.
MAX_BYTES = 32 * 2**20
#: Pillow formats that are opened; anything else is "not an image". HEIF needs a plugin
#: (pillow-heif) and is skipped when none is registered.
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "BMP", "TIFF", "ICO", "PPM")

#: Batches up to this size are decoded in the calling thread.
_SERIAL_BATCH = 3
_DEFAULT_THREADS = 4

_DATA_URI = re.compile(r"\s*data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def decode_base64(text: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a base64 payload, with or without a ``data:<mime>;base64,`` prefix;
    whitespace, the URL-safe alphabet and missing padding are tolerated. Payloads that would
    decode to more than `max_bytes` bytes raise :class:`ImageTooLargeError` before decoding."""
    if not isinstance(text, str):
        raise InvalidImageError(f"_base64 must be a string, got {type(text).__name__}")
    limit = 4 * ((max_bytes + 2) // 3)  # base64 characters of max_bytes bytes, padded
    if len(text) > 2 * limit + 1024:  # refuse before copying; whitespace cannot explain this much
        raise ImageTooLargeError(f"the base64 image is larger than the limit of {max_bytes} bytes")
    match = _DATA_URI.match(text)
    if match is not None:
        if "base64" not in (parameter.strip().lower() for parameter in match.group(2).split(";")):
            raise InvalidImageError("a data: URI must be base64-encoded (data:image/png;base64,...)")
        text = text[match.end() :]
    try:
        payload = text.encode("ascii")
    except UnicodeEncodeError as error:
        raise InvalidImageError(f"_base64 is not valid base64 (a non-ASCII character at {error.start})") from error
    try:  # canonical base64 within the cap, the common case: one pass in C
        if len(payload) > limit:
            raise binascii.Error("longer than the cap unless it holds whitespace")
        data = binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error:
        payload = b"".join(payload.split()).translate(_URLSAFE).rstrip(b"=")
        if not payload:
            raise InvalidImageError("_base64 is empty") from None
        if len(payload) > limit:
            raise ImageTooLargeError(f"the base64 image is larger than the limit of {max_bytes} bytes") from None
        try:
            data = binascii.a2b_base64(payload + b"=" * (-len(payload) % 4), strict_mode=True)
        except binascii.Error as error:
            raise InvalidImageError(f"_base64 is not valid base64 ({error})") from None
    if not data:
        raise InvalidImageError("_base64 is empty")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the base64 image has {len(data)} bytes, more than the limit of {max_bytes}")
    return data


def _open(data: bytes) -> ImageFile.ImageFile:
    """Identifies `data` among :data:`FORMATS` and reads its header (no pixels). This is
    :func:`PIL.Image.open` without its check against the global ``Image.MAX_IMAGE_PIXELS``: the
    caller applies its own cap, and no warning is emitted for a bomb that cap refuses."""
    fp = io.BytesIO(data)
    if not (hasattr(Image, "OPEN") and hasattr(Image, "preinit")):  # a Pillow without this registry
        known = set(Image.registered_extensions().values())
        return Image.open(fp, formats=[name for name in FORMATS if name in known])
    registry = Image.OPEN
    prefix = data[:16]
    Image.preinit()
    notes: list[str] = []
    for name in FORMATS:
        if name not in registry:
            Image.init()
            if name not in registry:
                continue  # no plugin for it (HEIF without pillow-heif)
        factory, accept = registry[name]
        verdict = True if accept is None else accept(prefix)
        if isinstance(verdict, str):  # "recognised, but support is not installed"
            notes.append(verdict)
            continue
        if not verdict:
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error) as error:  # as Image.open: try the next
            notes.append(f"not a valid {name} ({error})")
    detail = f": {'; '.join(notes)}" if notes else ""
    raise InvalidImageError(f"the data is not an image in a supported format ({', '.join(FORMATS)}){detail}")


def _tiff_orientation(data: bytes) -> int | None:
    """The Orientation tag of IFD0 in TIFF-structured EXIF bytes; None where absent or unreadable."""
    if data.startswith(b"Exif"):
        data = data[6:]
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return None
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack_from(order + "H", data, 2)[0] != 42:
        return None
    offset = struct.unpack_from(order + "I", data, 4)[0]
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, offset)
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(data) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag == _ORIENTATION_TAG:
            if kind == 3:  # SHORT
                return int(struct.unpack_from(order + "H", data, entry + 8)[0])
            if kind == 4:  # LONG
                return int(struct.unpack_from(order + "I", data, entry + 8)[0])
            return None
    return None


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8, 1 when absent or invalid), from the same places
    :meth:`PIL.Image.Image.getexif` looks, but read directly: no Pillow EXIF parse, so corrupt
    metadata elsewhere in the block neither warns nor fails."""
    info = image.info
    found: int | None = None
    exif = info.get("exif")
    if exif is None and isinstance(info.get("Raw profile type exif"), str):
        try:
            exif = bytes.fromhex("".join(info["Raw profile type exif"].split("\n")[3:]))
        except ValueError:
            exif = None
    if isinstance(exif, bytes | bytearray):
        found = _tiff_orientation(bytes(exif))
    elif (tags := getattr(image, "tag_v2", None)) is not None:  # a TIFF: its first IFD, read when opened
        value = tags.get(_ORIENTATION_TAG)
        found = value if isinstance(value, int) else None
    if found is None:
        xmp = info.get("XML:com.adobe.xmp") or info.get("xmp")
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "replace")
        if isinstance(xmp, bytes) and (match := _XMP_ORIENTATION.search(xmp)) is not None:
            found = int(match.group(1))
    return found if found is not None and 1 <= found <= 8 else 1


def _on_white(image: Image.Image) -> Image.Image:
    """An image with an alpha channel composited onto opaque white."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale scaled (not clipped) to 8-bit RGB: 16-bit data
    over 0-65535, floats in [0, 1] over 0-1, anything else over its own finite range."""
    array = np.asarray(image)
    mode = image.mode
    if mode.startswith("I;16") or (mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535):
        scaled = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    else:
        values = array.astype(np.float32)
        finite = np.isfinite(values)
        if not finite.any():
            raise InvalidImageError("the image holds no finite pixel values")
        low, high = float(values[finite].min()), float(values[finite].max())
        if mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        scale = 255.0 / (high - low) if high > low else 0.0
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
        scaled = np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)
    grey = Image.fromarray(scaled)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int | float) and not isinstance(transparency, bool):
        alpha = Image.fromarray(np.where(array == transparency, 0, 255).astype(np.uint8))
        return _on_white(Image.merge("LA", (grey, alpha)))
    return grey.convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB, transparency composited on white."""
    mode = image.mode
    if mode in _HIGH_BIT_MODES:
        return _high_bit_to_rgb(image)
    if mode == "P":
        palette_alpha = image.palette is not None and image.palette.mode == "RGBA"
        if "transparency" in image.info or palette_alpha:
            return _on_white(image.convert("RGBA"))
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _on_white(image)
    if mode in ("1", "L", "RGB") and "transparency" in image.info:
        return _on_white(image.convert("RGBA"))  # a transparent colour (PNG tRNS)
    if mode == "RGB":
        return image
    return image.convert("RGB")


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    min_side: int | None = None,
) -> Image.Image:
    """A fully loaded RGB image from encoded bytes (see the module's rules); raises only
    :class:`InvalidImageError` and :class:`ImageTooLargeError`. With `min_side`, a JPEG may be
    decoded at a reduced scale (1/2, 1/4, 1/8) whose sides stay at least `min_side`: much faster
    for large photos that are resized down anyway."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise InvalidImageError("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image has {len(data)} bytes, more than the limit of {max_bytes}")
    opened: ImageFile.ImageFile | None = None
    try:
        opened = _open(data)
        width, height = opened.size
        if width <= 0 or height <= 0:
            raise InvalidImageError(f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"the image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
            )
        # Animations are opened at their first frame; nothing after it is read.
        if min_side is not None and min_side > 0 and opened.format == "JPEG" and min(width, height) >= 2 * min_side:
            opened.draft("RGB", (min_side, min_side))
        opened.load()
        rgb = _to_rgb(opened)
        method = _TRANSPOSE.get(_orientation(opened))
        if method is not None:
            rgb = rgb.transpose(method)
        if rgb is opened:  # a plain copy, which holds neither the file nor the encoded bytes
            rgb = opened.copy()
        rgb.load()
        return rgb
    except LookalikeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own global check inside some plugins (GIF frames, TIFF tiles); the warning
        # arrives as an exception only where the warning filters make it one.
        raise ImageTooLargeError(f"the image is too large to decode safely ({error})") from error
    except MemoryError as error:
        raise ImageTooLargeError("the image is too large to decode (out of memory)") from error
    except UnidentifiedImageError as error:
        raise InvalidImageError(f"the data is not an image in a supported format ({error})") from error
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error) as error:
        raise InvalidImageError(f"the image is damaged or truncated ({error})") from error
    except Warning as error:  # a Pillow warning that the process's filters turned into an error
        raise InvalidImageError(f"the image is damaged ({type(error).__name__}: {error})") from error
    except Exception as error:  # a decoder failing in a way Pillow does not document
        raise InvalidImageError(f"the image could not be decoded ({type(error).__name__}: {error})") from error
    finally:
        if opened is not None:
            opened.close()


def _fetch(url: str, fetch: Callable[[str], bytes], max_bytes: int) -> bytes:
    try:
        data = fetch(url)
    except LookalikeError:
        raise
    except Exception as error:  # the caller's function: any failure is this record's error
        raise InvalidImageError(f"could not fetch _url {url!r} ({type(error).__name__}: {error})") from error
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError(f"the fetcher returned {type(data).__name__} for {url!r}, not bytes")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image at {url!r} has {len(data)} bytes, more than the limit of {max_bytes}")
    return bytes(data)


def _read_file(value: str, max_bytes: int) -> bytes:
    try:
        path = Path(value).expanduser()
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InvalidImageError(f"_file {value!r} is not a regular file")
        if info.st_size > max_bytes:
            raise ImageTooLargeError(f"_file {value!r} has {info.st_size} bytes, more than the limit of {max_bytes}")
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # the file may have grown since stat
    except LookalikeError:
        raise
    except OSError as error:
        raise InvalidImageError(f"cannot read _file {value!r}: {error.strerror or error}") from error
    except (ValueError, RuntimeError) as error:  # an embedded NUL; "~user" that does not exist
        raise InvalidImageError(f"cannot read _file {value!r}: {error}") from error
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"_file {value!r} has more than the limit of {max_bytes} bytes")
    return data


def image_bytes(
    record: Mapping[str, Any],
    *,
    fetch: Callable[[str], bytes] | None = None,
    allow_files: bool = True,
    max_bytes: int = MAX_BYTES,
) -> bytes | None:
    """The encoded image of a record, from whichever one of ``_url``, ``_base64``, ``_file`` it
    has; None when it has none. A failure of `fetch` becomes :class:`InvalidImageError`."""
    if not isinstance(record, Mapping):
        raise InvalidRecordError(f"a record must be a mapping (JSON object), got {type(record).__name__}")
    given = [name for name in ("_url", "_base64", "_file") if name in record]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidRecordError(f"a record takes one image source, got {' and '.join(given)}")
    source = given[0]
    value = record[source]
    if not isinstance(value, str):
        raise InvalidRecordError(f"{source} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRecordError(f"{source} is empty")
    if source == "_base64":
        return decode_base64(value, max_bytes=max_bytes)
    if source == "_url":
        if fetch is None:
            raise InvalidRecordError("_url needs a fetcher: pass fetch= (a function from URL to bytes)")
        return _fetch(value, fetch, max_bytes)
    if not allow_files:
        raise InvalidRecordError("_file is not accepted here (send _base64 or _url)")
    return _read_file(value, max_bytes)


def load_images(
    records: Sequence[Mapping[str, Any]],
    *,
    fetch: Callable[[str], bytes] | None = None,
    allow_files: bool = True,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    threads: int | None = None,
) -> list[Image.Image | LookalikeError]:
    """One decoded image or one error per record, in order; never raises for a bad record (a
    record without an image is an :class:`InvalidRecordError`). Batches of more than a few
    records are decoded in a pool of `threads` threads (default: up to 4, at most one per CPU;
    Pillow decodes without the GIL; more help when `fetch` waits on the network), so `fetch`
    must be safe to call from several threads."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
    batch = list(records)

    def one(record: Mapping[str, Any]) -> Image.Image | LookalikeError:
        try:
            data = image_bytes(record, fetch=fetch, allow_files=allow_files, max_bytes=max_bytes)
            if data is None:
                raise InvalidRecordError("the record has no image (_url, _base64 or _file)")
            return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
        except LookalikeError as error:
            return error

    workers = min(threads or min(_DEFAULT_THREADS, os.cpu_count() or 1), len(batch))
    if len(batch) <= _SERIAL_BATCH or workers <= 1:
        return [one(record) for record in batch]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        return list(pool.map(one, batch))


def encode_image(image: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    """Encoded bytes of a picture; JPEG (the default) converts to RGB first, and `quality`
    applies to JPEG and WebP."""
    buffer = io.BytesIO()
    name = "JPEG" if format.upper() in ("JPEG", "JPG") else format.upper()
    if name == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    elif name == "WEBP":
        image.save(buffer, format="WEBP", quality=quality)
    else:
        image.save(buffer, format=name)
    return buffer.getvalue()


def to_data_uri(image: Image.Image, format: str = "JPEG", quality: int = 90) -> str:
    """A ``data:image/...;base64,`` URI of a picture (see :func:`encode_image`)."""
    name = format.lower()
    mime = "image/jpeg" if name in ("jpeg", "jpg") else f"image/{name}"
    return f"data:{mime};base64,{base64.b64encode(encode_image(image, format, quality)).decode('ascii')}"
