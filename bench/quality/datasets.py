"""Test images, all offline: photos shipped in scikit-image and scikit-learn, seeded augmented
views and edited copies of them, Fashion-MNIST (Debian package ``dataset-fashion-mnist``),
distractors (synthetic pictures, faces, upscaled clothes) and generated colour layouts.

Every function is deterministic for a given seed.
"""

from __future__ import annotations

import base64
import gzip
import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

FLIP = Image.Transpose.FLIP_LEFT_RIGHT

# -- encoding --------------------------------------------------------------------------------


def encode(image: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def to_rgb(array: np.ndarray) -> Image.Image:
    """An 8-bit RGB image from a scikit-image array (grey, bool, float or RGBA)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = np.round(255 * (array - low) / max(high - low, 1e-12)).astype(np.uint8)
    image = Image.fromarray(array)
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        return flat
    return image.convert("RGB")


# -- photos ----------------------------------------------------------------------------------

#: scikit-image images that are photographs and ship inside the package (no pooch download).
#: Left out: ``cat`` (the same picture as ``chelsea``), the right image of the stereo pair (a
#: near-copy of the left), drawings and renderings (logo, colorwheel, horse, checkerboard,
#: shepp_logan_phantom), the tiny ``microaneurysms`` and ``lfw_subset``.
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field", "immunohistochemistry", "retina",
    "rocket", "moon", "page", "text", "clock", "brick", "grass", "gravel", "cell",
)  # fmt: skip
#: Non-photographic scikit-image pictures (distractors only).
SKIMAGE_DRAWINGS = ("logo", "colorwheel", "horse", "checkerboard", "shepp_logan_phantom")


def _skimage(name: str) -> Image.Image | None:
    from skimage import data as skdata

    try:
        if name == "motorcycle":
            return to_rgb(skdata.stereo_motorcycle()[0])
        return to_rgb(getattr(skdata, name)())
    except Exception:  # noqa: BLE001 - a file that needs a download (pooch) or is missing: skip it
        return None


def photos() -> dict[str, Image.Image]:
    """The real photos available offline, by name: scikit-image's and scikit-learn's."""
    out: dict[str, Image.Image] = {}
    for name in (*SKIMAGE_PHOTOS, "motorcycle"):
        image = _skimage(name)
        if image is not None:
            out[name] = image
    try:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        for filename, array in zip(sample.filenames, sample.images, strict=True):
            out[Path(filename).stem] = to_rgb(array)
    except Exception:  # noqa: BLE001 - scikit-learn without its sample images
        pass
    return out


def drawings() -> dict[str, Image.Image]:
    out = {}
    for name in SKIMAGE_DRAWINGS:
        image = _skimage(name)
        if image is not None:
            out[name] = image
    return out


def distinct(arrays: np.ndarray, limit: float = 0.95) -> list[int]:
    """Indices of the arrays to keep so that no two kept ones have a pixel correlation above
    ``limit`` (the later of a pair goes)."""
    flat = arrays.reshape(len(arrays), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    kept: list[int] = []
    for index in range(len(flat)):
        if not kept or float(np.max(flat[kept] @ flat[index])) <= limit:
            kept.append(index)
    return kept


def faces() -> list[Image.Image]:
    """scikit-image's ``lfw_subset`` (100 face crops and 100 crops of other photos, 25 x 25 grey),
    without near-copies (:func:`distinct`), upscaled to 100 pixels."""
    from skimage import data as skdata

    try:
        stack = skdata.lfw_subset()
    except Exception:  # noqa: BLE001
        return []
    return [to_rgb(stack[i]).resize((100, 100), Image.Resampling.BICUBIC) for i in distinct(stack)]


# -- augmentation (instance retrieval) -------------------------------------------------------


def inscribed_scale(width: int, height: int, degrees: float) -> float:
    """Share of each side of the largest same-aspect box inside an image rotated by ``degrees``."""
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    return min(width / (width * c + height * s), height / (width * s + height * c))


def rotate_cropped(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated, then cropped to the centred box without the filled corners."""
    rotated = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    keep = inscribed_scale(image.width, image.height, degrees)
    return centre_crop(rotated, keep)


def centre_crop(image: Image.Image, keep: float) -> Image.Image:
    w, h = max(1, round(image.width * keep)), max(1, round(image.height * keep))
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def random_crop(image: Image.Image, keep_w: float, keep_h: float, rng: np.random.Generator) -> Image.Image:
    w, h = max(1, round(image.width * keep_w)), max(1, round(image.height * keep_h))
    left = int(rng.integers(0, image.width - w + 1))
    top = int(rng.integers(0, image.height - h + 1))
    return image.crop((left, top, left + w, top + h))


def augmented_view(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """One random view of a photo, as JPEG bytes: rotation of -15..15 degrees (corners cropped
    away), a crop keeping 60-90% of each side, a horizontal flip half of the time, brightness,
    contrast and saturation jitter of 0.7-1.3, the longer side scaled to 128-320 pixels, JPEG
    quality 30-90."""
    image = rotate_cropped(photo, float(rng.uniform(-15, 15)))
    image = random_crop(image, float(rng.uniform(0.6, 0.9)), float(rng.uniform(0.6, 0.9)), rng)
    if rng.random() < 0.5:
        image = image.transpose(FLIP)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.7, 1.3)))
    side = int(rng.integers(128, 321))
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    return encode(image, "JPEG", int(rng.integers(30, 91)))


@dataclass(frozen=True)
class View:
    id: str
    source: str
    data: bytes


def instance_views(sources: dict[str, Image.Image], per_photo: int, seed: int) -> list[View]:
    """``per_photo`` augmented views of each photo (ids ``<photo>-v<k>``)."""
    out = []
    for index, (name, photo) in enumerate(sorted(sources.items())):
        rng = np.random.default_rng([seed, index])
        out.extend(View(f"{name}-v{k}", name, augmented_view(photo, rng)) for k in range(per_photo))
    return out


# -- Fashion-MNIST ---------------------------------------------------------------------------


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        raw = stream.read()
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split: str = "t10k") -> tuple[np.ndarray, np.ndarray] | None:
    """Images ``[n, 28, 28]`` uint8 and labels ``[n]``, or None when the files are absent."""
    images, labels = FASHION_DIR / f"{split}-images-idx3-ubyte.gz", FASHION_DIR / f"{split}-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        return None
    return _idx(images), _idx(labels)


def stratified(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random items of each class."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def grey_png(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array, "L"), "PNG")


# -- edited copies (matching) ----------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def text_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A white box with black text, 30% of the width and 12% of the height (about 4% of the
    area), at a random place."""
    out = image.copy()
    w, h = max(8, round(image.width * 0.3)), max(8, round(image.height * 0.12))
    x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
    draw = ImageDraw.Draw(out)
    draw.rectangle((x, y, x + w, y + h), fill=(255, 255, 255))
    draw.text((x + 4, y + 2), "© lookalike 2026", fill=(0, 0, 0), font=_font(max(8, h * 2 // 3)))
    return out


def logo_overlay(image: Image.Image, logo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A square logo, 25% of the shorter side (about 4-6% of the area), in a random corner."""
    out = image.copy()
    side = max(8, round(min(image.size) * 0.25))
    patch = logo.resize((side, side), Image.Resampling.LANCZOS)
    margin = max(1, side // 10)
    corner = int(rng.integers(0, 4))
    x = margin if corner % 2 == 0 else image.width - side - margin
    y = margin if corner < 2 else image.height - side - margin
    out.paste(patch, (x, y))
    return out


def logo_image() -> Image.Image:
    from skimage import data as skdata

    try:
        return to_rgb(skdata.logo())
    except Exception:  # noqa: BLE001
        from lookalike.testing.fakes import fake_image

        return fake_image(9999, 128)


Edit = Callable[[Image.Image, np.random.Generator], bytes]


def edits(logo: Image.Image) -> dict[str, Edit]:
    """The edited copies of the matching suite, by name: each returns JPEG bytes (quality 90
    unless the edit is the JPEG re-encoding itself)."""

    def jpeg(image: Image.Image) -> bytes:
        return encode(image, "JPEG", 90)

    def half(image: Image.Image, _rng: np.random.Generator) -> bytes:
        size = (max(1, image.width // 2), max(1, image.height // 2))
        return jpeg(image.resize(size, Image.Resampling.LANCZOS))

    def crop(keep: float, centred: bool) -> Edit:
        def edit(image: Image.Image, rng: np.random.Generator) -> bytes:
            return jpeg(centre_crop(image, keep) if centred else random_crop(image, keep, keep, rng))

        return edit

    def rotate_filled(image: Image.Image, _rng: np.random.Generator) -> bytes:
        return jpeg(image.rotate(5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0)))

    return {
        "resize 0.5": half,
        "JPEG q30": lambda image, _rng: encode(image, "JPEG", 30),
        "crop 10% (centred)": crop(0.9, True),
        "crop 10% (random place)": crop(0.9, False),
        "crop 20% (centred)": crop(0.8, True),
        "crop 20% (random place)": crop(0.8, False),
        "text overlay": lambda image, rng: jpeg(text_overlay(image, rng)),
        "logo overlay": lambda image, rng: jpeg(logo_overlay(image, logo, rng)),
        "horizontal flip": lambda image, _rng: jpeg(image.transpose(FLIP)),
        "rotate 5 deg (black corners)": rotate_filled,
        "rotate 5 deg + crop corners": lambda image, _rng: jpeg(rotate_cropped(image, 5)),
    }


# -- colours ---------------------------------------------------------------------------------

PALETTE = {
    "red": "#d62728", "orange": "#ff7f0e", "yellow": "#f5d000", "green": "#2ca02c", "teal": "#17becf",
    "blue": "#1f4fb4", "navy": "#14215a", "purple": "#7b3fa0", "pink": "#f09abe", "brown": "#8c564b",
    "black": "#111111", "white": "#f5f5f5", "grey": "#808080", "beige": "#e8d8b0",
}  # fmt: skip


def hex_rgb(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def rgb_hex(rgb: tuple[int, int, int] | np.ndarray) -> str:
    r, g, b = (int(round(float(v))) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class ColourImage:
    id: str
    description: str
    data: bytes
    #: The colours and their measured pixel shares, heaviest first.
    colours: list[tuple[str, float]]


def _layout(names: list[str], shares: list[float], style: str, size: tuple[int, int]) -> Image.Image:
    """Colours ``names`` covering about ``shares`` of a ``size`` image in a layout ``style``."""
    width, height = size
    image = Image.new("RGB", size, hex_rgb(PALETTE[names[0]]))
    draw = ImageDraw.Draw(image)
    if style == "bands":  # vertical bands, left to right
        x = 0.0
        for name, share in zip(names, shares, strict=True):
            draw.rectangle((round(x), 0, round(x + share * width) - 1, height - 1), fill=hex_rgb(PALETTE[name]))
            x += share * width
    elif style == "stripes":  # four repeats of horizontal stripes
        y = 0.0
        for _ in range(4):
            for name, share in zip(names, shares, strict=True):
                step = share * height / 4
                draw.rectangle((0, round(y), width - 1, round(y + step) - 1), fill=hex_rgb(PALETTE[name]))
                y += step
    elif style == "nested":  # concentric centred boxes, the first colour outside
        remaining = 1.0
        for index in range(1, len(names)):
            remaining -= shares[index - 1]
            scale = math.sqrt(max(remaining, 0.0))
            w, h = width * scale, height * scale
            box = ((width - w) / 2, (height - h) / 2, (width + w) / 2 - 1, (height + h) / 2 - 1)
            draw.rectangle(tuple(round(v) for v in box), fill=hex_rgb(PALETTE[names[index]]))
    elif style == "disc":  # a centred disc of the second colour (two colours)
        radius = math.sqrt(shares[1] * width * height / math.pi)
        cx, cy = width / 2, height / 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=hex_rgb(PALETTE[names[1]]))
    else:
        raise ValueError(style)
    return image


def _measured(image: Image.Image) -> list[tuple[str, float]]:
    pixels = np.asarray(image).reshape(-1, 3)
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(rgb_hex(values[i]), float(counts[i]) / len(pixels)) for i in order]


def colour_images(two: int, three: int, seed: int) -> list[ColourImage]:
    """Solid images of every palette colour, ``two`` two-colour and ``three`` three-colour
    layouts (bands, stripes, nested boxes, a disc) with distinct colour sets and proportions,
    as PNG; their colours are the measured pixel shares."""
    rng = np.random.default_rng(seed)
    names = list(PALETTE)
    out = []
    for name in names:
        image = Image.new("RGB", (240, 180), hex_rgb(PALETTE[name]))
        out.append(ColourImage(f"solid-{name}", f"solid {name}", encode(image, "PNG"), _measured(image)))
    seen: set[tuple[tuple[str, float], ...]] = set()
    plans = [(2, two, ((0.5, 0.5), (0.6, 0.4), (0.75, 0.25), (0.9, 0.1)), ("bands", "stripes", "disc", "nested"))]
    plans.append(
        (
            3,
            three,
            ((0.5, 0.3, 0.2), (0.6, 0.25, 0.15), (0.4, 0.35, 0.25), (0.7, 0.2, 0.1)),
            ("bands", "stripes", "nested"),
        )
    )
    for count_colours, wanted, proportions, styles in plans:
        made = 0
        while made < wanted:
            chosen = [names[i] for i in rng.choice(len(names), size=count_colours, replace=False)]
            shares = list(proportions[int(rng.integers(len(proportions)))])
            key = tuple(sorted(zip(chosen, shares, strict=True)))
            if key in seen:
                continue
            seen.add(key)
            style = styles[int(rng.integers(len(styles)))]
            if style == "disc":
                shares = [shares[0], shares[1]]
            size = (int(rng.integers(200, 321)), int(rng.integers(160, 241)))
            image = _layout(chosen, shares, style, size)
            label = " / ".join(f"{n} {s:.0%}" for n, s in zip(chosen, shares, strict=True))
            out.append(
                ColourImage(f"c{count_colours}-{made}", f"{label} ({style})", encode(image, "PNG"), _measured(image))
            )
            made += 1
    return out
