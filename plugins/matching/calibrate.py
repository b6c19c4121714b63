"""Calibrates the matching type's duplicate threshold on synthetic copies of real photos.

    .venv/bin/python plugins/matching/calibrate.py            # prints distributions and the table

Data: the scikit-image sample photos that ship with the package (no download), and synthetic
pictures from :mod:`lookalike.testing.fakes` (coloured shapes on coloured backgrounds: hard
negatives, since they look alike to a pooled CNN embedding). ``cat`` is left out (it is
``chelsea``), and so is the right image of the stereo pair.

Copies (each compared with its original's record, the distance of the closest of its views):
resize to 50%, JPEG quality 30, centre crops keeping 90% and 80% of each side, a 20% strip cut
from the bottom, a text box and a logo pasted on (about 5% of the area), a horizontal flip, and
a 3 degree rotation (cropped to 92% to drop the corners), and a 50% resize saved as JPEG
quality 75 (the usual re-upload). Also reported, but not calibrated on:
a crop keeping 80% of each side anchored at a corner (36% of the area gone, content shifted),
and a 40% downscale re-encoded at quality 50 and flipped.

Distinct: for every query (originals and copies), its distance to the closest record of another
image.

Rule: for each pair of weights on a 0.1 grid, the threshold minimises a smoothed error count,
``sum over copies of P(d + e > t) + 2 x sum over distinct of P(d + e <= t)`` with a Gaussian
jitter ``e`` of 0.02 (a false duplicate counts double): where the two distributions leave a gap
it lands in its middle, where they overlap it keeps away from the closest distinct images. The
defaults are the weights with the lowest smoothed cost.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

from lookalike.sdk import models
from lookalike.testing.fakes import fake_image
from lookalike_matching import DEFAULT_HASH_WEIGHT, DEFAULT_LAYOUT_WEIGHT
from lookalike_matching.features import VIEWS, features
from lookalike_matching.thresholds import STEP

FLIP = Image.Transpose.FLIP_LEFT_RIGHT
PHOTOS = [
    "astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
    "page", "text", "brick", "grass", "gravel", "retina", "coins", "moon", "horse", "logo", "colorwheel",
    "clock", "microaneurysms", "cell", "checkerboard", "shepp_logan_phantom",
]  # fmt: skip
FAKES = 24


def to_rgb(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = (255 * (array - low) / max(high - low, 1e-12)).astype(np.uint8)
    image = Image.fromarray(array)
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        return flat
    return image.convert("RGB")


def originals() -> dict[str, Image.Image]:
    out = {name: to_rgb(getattr(skdata, name)()) for name in PHOTOS}
    out["motorcycle"] = to_rgb(skdata.stereo_motorcycle()[0])
    out["blobs"] = to_rgb(skdata.binary_blobs(rng=1))
    for seed in range(FAKES):
        out[f"fake{seed}"] = fake_image(seed, 256)
    return out


# -- transformations ---------------------------------------------------------------------------


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        return opened.convert("RGB")


def crop(image: Image.Image, keep: float, anchor: str = "centre") -> Image.Image:
    width, height = image.size
    w, h = round(width * keep), round(height * keep)
    left, top = ((width - w) // 2, (height - h) // 2) if anchor == "centre" else (width - w, height - h)
    return image.crop((left, top, left + w, top + h))


def overlay(image: Image.Image) -> Image.Image:
    """A light text box in the bottom-right corner and a round logo in the top-left."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    box_w, box_h = int(width * 0.3), int(height * 0.12)
    draw.rectangle((width - box_w - 5, height - box_h - 5, width - 5, height - 5), fill=(250, 250, 250))
    font = ImageFont.load_default(size=max(8, box_h // 2))
    draw.text((width - box_w, height - box_h), "SAMPLE (c) 2024", fill=(200, 0, 0), font=font)
    side = int(width * 0.1)
    draw.ellipse((5, 5, 5 + side, 5 + side), fill=(0, 90, 200))
    return out


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg q30": lambda im: jpeg(im, 30),
    "crop 10% (centre)": lambda im: crop(im, 0.9),
    "crop 20% (centre)": lambda im: crop(im, 0.8),
    "crop 20% strip": lambda im: im.crop((0, 0, im.width, round(im.height * 0.8))),
    "overlay patch": overlay,
    "flip": lambda im: im.transpose(FLIP),
    "rotate 3deg": lambda im: crop(im.rotate(3, Image.Resampling.BICUBIC), 0.92),
    "resize 50% + jpeg q75": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), 75),
}
HARD: dict[str, Callable[[Image.Image], Image.Image]] = {
    "HARD crop 20% corner": lambda im: crop(im, 0.8, "corner"),
    "HARD 40%+q50+flip": lambda im: jpeg(im.resize((im.width * 2 // 5, im.height * 2 // 5)), 50).transpose(FLIP),
}


# -- components --------------------------------------------------------------------------------


@dataclass
class Components:
    """Similarity parts between queries (view 0) and records (every view)."""

    embedding_cos: np.ndarray  # [queries, records] (the views share the embedding)
    hamming: np.ndarray  # [queries, records, views]
    layout_cos: np.ndarray  # [queries, records, views]

    def distance(self, hash_weight: float, layout_weight: float) -> np.ndarray:
        """``[queries, records]``: 1 - the best view's cosine (the identity of features.py)."""
        embedding_weight = 1.0 - hash_weight - layout_weight
        cos = (
            embedding_weight * self.embedding_cos[:, :, None]
            + hash_weight * (1.0 - 2.0 * self.hamming / 64.0)
            + layout_weight * self.layout_cos
        )
        return np.asarray(1.0 - cos.max(axis=2))


def embed(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    found = [features(image) for image in images]
    pixels = np.stack([f.pixels for f in found])
    embeddings = models.image_model().run(pixels)[0]
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings, np.stack([f.bits for f in found]), np.stack([f.layouts for f in found])


def components(queries: list[Image.Image], records: list[Image.Image]) -> Components:
    q_emb, q_bits, q_layouts = embed(queries)
    r_emb, r_bits, r_layouts = embed(records)
    hamming = (q_bits[:, None, :1, :] != r_bits[None, :, :, :]).sum(axis=3)
    layout_cos = np.einsum("qd,rvd->qrv", q_layouts[:, 0], r_layouts)
    return Components(q_emb @ r_emb.T, hamming.astype(np.float64), layout_cos)


# -- threshold ---------------------------------------------------------------------------------


#: Scale of the smoothing of the error count (a copy at the threshold counts half an error).
SMOOTHING = 0.02
#: Weight of a false duplicate against a missed copy.
FALSE_COST = 2.0


@dataclass
class Choice:
    threshold: float
    cost: float  # smoothed
    copies_missed: int
    false_duplicates: int
    margin: float  # to the closest distinct distance


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return np.asarray(0.5 * (1.0 + np.vectorize(erf)(x / sqrt(2.0))))


def choose(copies: np.ndarray, distinct: np.ndarray) -> Choice:
    """The threshold minimising the smoothed error count: each copy costs ``P(d + e > t)`` and each
    distinct image ``FALSE_COST * P(d + e <= t)`` for a Gaussian jitter ``e`` of SMOOTHING, so the
    minimum sits away from the nearest distances of both kinds (a margin) where they allow it."""
    grid = np.arange(0.0, 1.0, 0.0005)
    cost = _normal_cdf((copies[None, :] - grid[:, None]) / SMOOTHING).sum(axis=1) + FALSE_COST * _normal_cdf(
        (grid[:, None] - distinct[None, :]) / SMOOTHING
    ).sum(axis=1)
    t = float(grid[int(np.argmin(cost))])
    return Choice(t, float(cost.min()), int(np.sum(copies > t)), int(np.sum(distinct <= t)), float(distinct.min() - t))


def summary(values: np.ndarray) -> str:
    q = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
    return f"min {q[0]:.3f}  p5 {q[1]:.3f}  median {q[2]:.3f}  p95 {q[3]:.3f}  max {q[4]:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.parse_args(argv)
    started = time.perf_counter()
    images = originals()
    names = list(images)
    transforms = {**TRANSFORMS, **HARD}
    queries = [(name, label, fn(images[name])) for name in names for label, fn in transforms.items()]
    # Originals as queries too: they supply the distinct distances of unedited images.
    queries += [(name, "original", images[name]) for name in names]
    parts = components([q for _, _, q in queries], [images[n] for n in names])
    index = {name: row for row, name in enumerate(names)}
    own_rows = np.array([index[name] for name, _, _ in queries])
    labels = np.array([label for _, label, _ in queries])
    calibrated = np.isin(labels, list(TRANSFORMS))
    rows = np.arange(len(queries))

    def split(hash_weight: float, layout_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        distance = parts.distance(hash_weight, layout_weight)
        own = distance[rows, own_rows]
        others = distance.copy()
        others[rows, own_rows] = np.inf
        return own, others.min(axis=1), others.argmin(axis=1)

    print(
        f"{len(names)} originals ({len(PHOTOS) + 2} photos, {FAKES} fakes), {len(queries)} queries, "
        f"{len(VIEWS)} views per record; embedded in {time.perf_counter() - started:.1f} s\n"
    )

    steps = round(1 / STEP)
    table: dict[tuple[int, int], Choice] = {}
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            own, nearest, _ = split(i * STEP, j * STEP)
            table[(i, j)] = choose(own[calibrated], nearest)

    def report(title: str, hash_weight: float, layout_weight: float) -> Choice:
        own, nearest, which = split(hash_weight, layout_weight)
        choice = choose(own[calibrated], nearest)
        print(
            f"== {title}: hash_weight {hash_weight:.1f}, layout_weight {layout_weight:.1f}, "
            f"embedding weight {1 - hash_weight - layout_weight:.1f}"
        )
        print("copies (distance to their original):")
        for label in transforms:
            mask = labels == label
            hit = np.mean(own[mask] <= choice.threshold)
            print(f"  {label:24s} {summary(own[mask])}   duplicate at threshold: {hit:6.1%}")
        print(f"  {'all calibrated copies':24s} {summary(own[calibrated])}")
        print(f"distinct (distance to the closest other image): {summary(nearest)}")
        closest = np.argsort(nearest)[:3]
        print(
            "  closest distinct pairs: "
            + ", ".join(f"{queries[q][0]}[{queries[q][1]}]~{names[which[q]]} {nearest[q]:.3f}" for q in closest)
        )
        hardest = np.argsort(-np.where(calibrated, own, -np.inf))[:3]
        print("  hardest copies: " + ", ".join(f"{queries[q][0]}[{queries[q][1]}] {own[q]:.3f}" for q in hardest))
        nearest_ok = np.mean(own[calibrated] < nearest[calibrated])
        print(f"nearest neighbour is the original for {nearest_ok:.1%} of the calibrated copies")
        print(
            f"threshold {choice.threshold:.4f} (margin {choice.margin:.4f} to the closest distinct image): "
            f"{choice.copies_missed} of {int(calibrated.sum())} copies missed, "
            f"{choice.false_duplicates} of {len(nearest)} distinct queries within it\n"
        )
        return choice

    report("the plain design (embedding + hash, no layout)", 0.3, 0.0)
    best_key = min(table, key=lambda k: table[k].cost)
    print(
        f"lowest cost on the grid: hash_weight {best_key[0] * STEP:.1f}, layout_weight {best_key[1] * STEP:.1f} "
        f"(cost {table[best_key].cost:.1f}); defaults in lookalike_matching: "
        f"{DEFAULT_HASH_WEIGHT}, {DEFAULT_LAYOUT_WEIGHT}\n"
    )
    chosen = report("defaults", DEFAULT_HASH_WEIGHT, DEFAULT_LAYOUT_WEIGHT)

    print("smoothed cost (missed + 2 x false) per grid point, rows hash_weight, columns layout_weight:")
    print("      " + " ".join(f"{j * STEP:5.1f}" for j in range(steps + 1)))
    for i in range(steps + 1):
        cells = [f"{table[(i, j)].cost:5.1f}" for j in range(steps + 1 - i)]
        print(f"  {i * STEP:.1f} " + " ".join(cells))
    print("\nTHRESHOLDS = {  # pasted into lookalike_matching/thresholds.py")
    for i in range(steps + 1):
        entries = [f"({i}, {j}): {table[(i, j)].threshold:.4f}" for j in range(steps + 1 - i)]
        for start in range(0, len(entries), 6):
            print(f"    {', '.join(entries[start : start + 6])},")
    print("}")
    print(f"\nDEFAULT_THRESHOLD = {chosen.threshold:.4f}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
