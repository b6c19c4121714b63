"""`lookalike demo [DATA_DIR]` (or `python -m lookalike.demo`): builds demo collections of real
photos and runs example queries in-process.

The photos are the ones that ship with scikit-image and scikit-learn (a cat, a coffee cup, a
rocket, an astronaut, a Chinese palace, a flower, ...), each with a few edited copies (crop,
mirror, smaller, recompressed), so every query has something to find. Everything runs offline:
the models come from PyPI packages and are converted once into the model cache.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.engine import Collection, Engine
from lookalike.errors import LookalikeError
from lookalike.images import to_data_uri

__all__ = ["photos", "demo_records", "build", "main"]

PHOTOS = {
    "astronaut": ("skimage", "people"),
    "chelsea": ("skimage", "animals"),
    "coffee": ("skimage", "food"),
    "rocket": ("skimage", "things"),
    "camera": ("skimage", "people"),
    "coins": ("skimage", "things"),
    "hubble_deep_field": ("skimage", "space"),
    "immunohistochemistry": ("skimage", "science"),
    "china.jpg": ("sklearn", "places"),
    "flower.jpg": ("sklearn", "plants"),
}


def photos() -> Iterator[tuple[str, str, Image.Image]]:
    """(name, category, picture) for the demo photos that are installed (scikit-image and
    scikit-learn ship them; none is downloaded)."""
    skdata: Any
    try:
        from skimage import data as skdata
    except ImportError:
        skdata = None
    for name, (source, category) in PHOTOS.items():
        if source != "skimage" or skdata is None:
            continue
        loader = getattr(skdata, name, None)
        if loader is None:
            continue
        try:
            array = np.asarray(loader())
        except Exception:  # a photo that would need a download: skip it
            continue
        image = Image.fromarray(array if array.dtype == np.uint8 else (array * 255).astype(np.uint8))
        yield name, category, image.convert("RGB")
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return
    bunch = load_sample_images()
    for filename, array in zip(bunch.filenames, bunch.images, strict=True):
        name = Path(filename).name
        if name in PHOTOS:
            yield name.removesuffix(".jpg"), PHOTOS[name][1], Image.fromarray(array).convert("RGB")


def _edits(image: Image.Image) -> Iterator[tuple[str, Image.Image]]:
    width, height = image.size
    yield "original", image
    yield "cropped", image.crop((width // 8, height // 8, width - width // 10, height - height // 12))
    yield "mirrored", ImageOps.mirror(image).resize((width // 2, height // 2))
    yield "warmer", ImageEnhance.Color(image).enhance(1.4).rotate(4, fillcolor=(255, 255, 255))


def demo_records() -> list[dict[str, Any]]:
    """Records of the demo photos and their edited copies, as `_base64` data URIs."""
    records: list[dict[str, Any]] = []
    for name, category, image in photos():
        for edit, picture in _edits(image):
            records.append(
                {
                    "_id": f"{name}-{edit}",
                    "_base64": to_data_uri(picture, "JPEG", 88),
                    "photo": name,
                    "edit": edit,
                    "category": category,
                    "product_id": name,
                }
            )
    return records


def _show(title: str, collection: Collection, **query: Any) -> None:
    started = time.perf_counter()
    hits = collection.search(fields=["category", "edit"], **query)
    took = (time.perf_counter() - started) * 1000
    print(f"\n{collection.name}: {title} ({took:.1f} ms)")
    for hit in hits:
        extra = f"  duplicate: {hit['is_duplicate']}" if "is_duplicate" in hit else ""
        print(f"  {hit['_id']:<28} distance {hit['distance']:.4f}  {hit.get('category', '')}{extra}")


PLANS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "photos",
        "generic",
        {"fields_to_index": ["category", "edit"], "product_id_field": "product_id", "store_images": True},
    ),
    ("products", "products", {"fields_to_index": ["category"], "store_images": True}),
    ("colors", "colors", {"store_images": True}),
    ("duplicates", "matching", {"store_images": True}),
]


def build_collections(engine: Engine, records: list[dict[str, Any]] | None = None, *, quiet: bool = False) -> list[str]:
    """(Re)creates the demo collections (one per installed built-in type) from the demo photos;
    returns their names."""
    records = demo_records() if records is None else records
    if not records:
        raise SystemExit("the demo photos come with scikit-image and scikit-learn (pip install both)")
    available = set(engine.registry.names())
    built: list[str] = []
    for name, type_name, options in PLANS:
        if type_name not in available:
            if not quiet:
                print(f"(skipping {name}: collection type {type_name!r} is not installed)")
            continue
        if name in engine.list_collections():
            engine.drop_collection(name)
        started = time.perf_counter()
        collection = engine.create_collection(name, type=type_name, **options)
        result = collection.insert(records)
        built.append(name)
        if not quiet:
            for error in result.errors:
                print(f"  skipped {error.id}: {error.message}")
            print(f"{name} ({type_name}): {len(collection)} photos indexed in {time.perf_counter() - started:.1f} s")
    return built


def build(path: Path) -> None:
    """Creates (or recreates) the demo collections in `path` and runs example queries."""
    records = demo_records()
    with Engine(path) as engine:
        build_collections(engine, records)

        cat = next(r for r in records if r["_id"] == "chelsea-cropped")
        if "photos" in engine.list_collections():
            photos_col = engine.collection("photos")
            _show("like the cropped cat photo", photos_col, record={"_base64": cat["_base64"]}, limit=4)
            _show("text 'a cup of coffee'", photos_col, text="a cup of coffee", limit=3)
            _show("text 'a rocket', originals only", photos_col, text="a rocket", filter={"edit": "original"}, limit=3)
            _show("like the cat, one hit per photo", photos_col, id="chelsea-original", limit=3, group_by="product_id")
        if "colors" in engine.list_collections():
            blue_white = [{"color": "#1f4fb4", "weight": 0.7}, {"color": "#ffffff", "weight": 0.3}]
            _show("mostly blue with some white", engine.collection("colors"), colors=blue_white, limit=3)
        if "duplicates" in engine.list_collections():
            duplicates = engine.collection("duplicates")
            _show("copies of the rocket photo", duplicates, id="rocket-original", limit=5)
            groups = duplicates.near_duplicates()
            print(f"\nduplicates: {len(groups)} groups of near-duplicates, e.g. {groups[0] if groups else []}")
    print(f"\nThe collections are in {path}; open them with lookalike.Engine({str(path)!r}).")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        build(Path(args[0] if args else "./data"))
    except LookalikeError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
