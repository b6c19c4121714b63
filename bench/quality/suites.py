"""The measurements: one function per group of tables, each returning a report Section.

Everything goes through the public API of ``lookalike.Engine`` (collections of the built-in
types, records with ``_base64`` images, queries by ``record={"_base64": ...}``, ``text=``,
``colors=``, ``search_vectors``), except the bare-model throughput, which calls
``lookalike.sdk.models.image_model().run`` directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

import lookalike
from bench.quality import baselines, datasets, metrics
from bench.quality.report import Section, Table

__all__ = ["Context", "instance", "fashion", "matching", "colours", "text", "throughput", "IMAGE_TYPES"]

#: The collection types measured, in table order.
IMAGE_TYPES = ("generic", "products", "matching", "colors")
ADD_BATCH = 64


@dataclass
class Context:
    engine: lookalike.Engine
    seed: int
    quick: bool
    types: list[str]
    log: Callable[[str], None] = print
    _photos: dict[str, Image.Image] | None = field(default=None, repr=False)
    _serial: int = 0

    @property
    def photos(self) -> dict[str, Image.Image]:
        if self._photos is None:
            self._photos = datasets.photos()
        return self._photos

    def collection(self, prefix: str, type: str) -> lookalike.Collection:
        self._serial += 1
        return self.engine.create_collection(f"{prefix}-{type}-{self._serial}", type=type)

    def missing(self, wanted: Iterable[str]) -> list[str]:
        return [name for name in wanted if name not in self.types]


def add_all(collection: lookalike.Collection, records: Sequence[dict[str, Any]]) -> float:
    """Adds records in batches of ADD_BATCH; returns the seconds it took."""
    started = time.perf_counter()
    for start in range(0, len(records), ADD_BATCH):
        collection.add(records[start : start + ADD_BATCH])
    return time.perf_counter() - started


def _drop(ctx: Context, collection: lookalike.Collection) -> None:
    ctx.engine.drop_collection(collection.name)


def _photo_names(ctx: Context) -> str:
    return ", ".join(sorted(ctx.photos))


# -- 1. instance retrieval -------------------------------------------------------------------


def instance(ctx: Context) -> Section:
    per_photo = 6 if ctx.quick else 12
    k = min(10, per_photo - 1)
    views = datasets.instance_views(ctx.photos, per_photo, ctx.seed)
    source = {view.id: view.source for view in views}
    names = sorted(ctx.photos)
    section = Section(
        "Instance retrieval: augmented views of real photos",
        [
            f"{len(names)} photos ({_photo_names(ctx)}), {per_photo} seeded views each ({len(views)} images):",
            "rotation of -15..15 degrees (corners cropped), a crop keeping 60-90% of each side, a flip half of the",
            "time, brightness / contrast / saturation 0.7-1.3, longer side 128-320 px, JPEG quality 30-90.",
            "Each view queries all the others (leave-one-out; the type's collection holds every view, the query is",
            "the view's JPEG as `record={'_base64': ...}`, `exact=True`, the full ranking); relevant = a view of the",
            f"same photo ({per_photo - 1} per query). P@{k}: k = {k}"
            + (" (views - 1, fewer than 10)." if k < 10 else ".")
            + " `recall@1, default search`: the same query vectors through the default HNSW search (limit 11).",
        ],
    )
    table = section.table(
        Table(["method", "queries", "mAP", f"P@{k}", "recall@1", "recall@1, default search", "seconds"])
    )
    per_photo_ap: dict[str, dict[str, float]] = {}

    def record(method: str, rankings: list[np.ndarray], seconds: float, default: float | None = None) -> None:
        totals = [per_photo - 1] * len(rankings)
        summary = metrics.summarise(rankings, totals, k)
        table.add(method, summary.queries, summary.map, summary.precision, summary.recall_at_1, default, seconds)
        aps = [metrics.average_precision(r, per_photo - 1) for r in rankings]
        per_photo_ap[method] = {
            name: float(np.mean([ap for ap, view in zip(aps, views, strict=True) if view.source == name]))
            for name in names
        }
        ctx.log(f"  instance {method}: mAP {summary.map:.3f} P@{k} {summary.precision:.3f}")

    for type_ in [t for t in IMAGE_TYPES if t in ctx.types]:
        started = time.perf_counter()
        collection = ctx.collection("instance", type_)
        add_all(collection, [{"_id": v.id, "_base64": datasets.b64(v.data)} for v in views])
        rankings = []
        default_first = 0
        for view in views:
            query = collection.query_vector(record={"_base64": datasets.b64(view.data)})[0]
            hits = collection.search(query, limit=len(views), exact=True)
            ranked = [hit["_id"] for hit in hits if hit["_id"] != view.id]
            rankings.append(np.array([source[id_] == view.source for id_ in ranked], dtype=bool))
            quick_hits = [hit["_id"] for hit in collection.search(query, limit=11) if hit["_id"] != view.id]
            default_first += bool(quick_hits) and source[quick_hits[0]] == view.source
        record(type_, rankings, time.perf_counter() - started, default_first / len(views))
        _drop(ctx, collection)
    labels = np.array([v.source for v in views])
    for method, function in baselines.BASELINES.items():
        started = time.perf_counter()
        features = baselines.features([v.data for v in views], function)
        scores = baselines.cosine_scores(features, features)
        rankings = metrics.rankings_from_scores(scores, np.arange(len(views)), labels, labels)
        record(method, rankings, time.perf_counter() - started)
    if missing := ctx.missing(IMAGE_TYPES):
        section.note(f"Not measured (type not installed): {', '.join(missing)}.")
    methods = list(per_photo_ap)
    detail = Table(["photo", *(m.replace("baseline: ", "") for m in methods)])
    for name in names:
        detail.add(name, *(per_photo_ap[m][name] for m in methods))
    section.note("Average precision by photo:")
    section.table(detail)
    return section


# -- 2. Fashion-MNIST class retrieval --------------------------------------------------------


def _engine_rankings(
    collection: lookalike.Collection, query_ids: list[str], labels_of: dict[str, int], chunk: int = 250
) -> list[np.ndarray]:
    """Leave-one-out rankings of stored records queried by their own vectors (``search_vectors``,
    ``exact=True``, the whole collection), as relevance arrays (same label)."""
    size = len(collection)
    queries = np.stack([collection.get_vector(id_) for id_ in query_ids])
    probe = collection.search_vectors(queries[:1], limit=size, exact=True)
    key_ids = dict(zip((int(k) for k in probe.keys[0][: int(probe.counts[0])]), probe.ids[0], strict=True))
    keys = np.array(sorted(key_ids), dtype=np.uint64)
    key_labels = np.array([labels_of[key_ids[int(k)]] for k in keys])
    id_key = {id_: key for key, id_ in key_ids.items()}
    out = []
    for start in range(0, len(query_ids), chunk):
        found = collection.search_vectors(queries[start : start + chunk], limit=size, exact=True)
        for row, id_ in enumerate(query_ids[start : start + chunk]):
            row_keys = found.keys[row][: int(found.counts[row])]
            row_keys = row_keys[row_keys != id_key[id_]]
            out.append(key_labels[np.searchsorted(keys, row_keys)] == labels_of[id_])
    return out


def fashion(ctx: Context) -> Section:
    section = Section("Fashion-MNIST class retrieval")
    loaded = datasets.fashion_mnist("t10k")
    if loaded is None:
        section.note(
            f"skipped: install the Debian package dataset-fashion-mnist (no {datasets.FASHION_DIR}/t10k-*.gz here)."
        )
        return section
    images, labels = loaded
    if ctx.quick:
        database = datasets.stratified(labels, 200, ctx.seed)
        query_rows = datasets.stratified(labels[database], 50, ctx.seed + 1)  # positions in the database
    else:
        database = np.arange(len(labels))
        query_rows = np.arange(len(labels))
    db_labels = labels[database]
    q_labels = db_labels[query_rows]
    section.intro = [
        f"Test split, {len(database):,} images in the collection"
        + (" (a stratified subset, 200 per class)" if ctx.quick else " (all)")
        + f", {len(query_rows):,} queries"
        + (" (50 per class)" if ctx.quick else " (every image)")
        + ",",
        "leave-one-out, relevant = same class (about 10% of the collection). Images go in as 28 x 28 grey PNG;",
        "engine rankings: each record's stored vector (`get_vector`) through `search_vectors(..., exact=True)`",
        "over the whole collection.",
    ]
    methods: dict[str, list[np.ndarray]] = {}
    timings: dict[str, float] = {}
    ids = [f"f{row}" for row in database]
    labels_of = {id_: int(label) for id_, label in zip(ids, db_labels, strict=True)}
    pngs = [datasets.grey_png(images[row]) for row in database]
    for type_ in [t for t in ("generic", "products") if t in ctx.types]:
        collection = ctx.collection("fashion", type_)
        seconds = add_all(collection, [{"_id": i, "_base64": datasets.b64(p)} for i, p in zip(ids, pngs, strict=True)])
        ctx.log(f"  fashion {type_}: {len(ids)} added in {seconds:.0f} s")
        started = time.perf_counter()
        methods[type_] = _engine_rankings(collection, [ids[row] for row in query_rows], labels_of)
        timings[type_] = seconds + time.perf_counter() - started
        _drop(ctx, collection)
    for method, function in baselines.BASELINES.items():
        started = time.perf_counter()
        features = baselines.features(pngs, function)
        rankings: list[np.ndarray] = []
        for start in range(0, len(query_rows), 500):
            rows = query_rows[start : start + 500]
            scores = baselines.cosine_scores(features[rows], features)
            rankings += metrics.rankings_from_scores(scores, rows, db_labels, db_labels[rows])
        methods[method] = rankings
        timings[method] = time.perf_counter() - started
    totals = [int((db_labels == label).sum()) - 1 for label in q_labels]
    overall = section.table(Table(["method", "queries", "mAP", "P@10", "recall@1", "seconds"]))
    per_class: dict[str, list[metrics.Summary]] = {}
    for method, rankings in methods.items():
        summary = metrics.summarise(rankings, totals, 10)
        overall.add(method, summary.queries, summary.map, summary.precision, summary.recall_at_1, timings[method])
        ctx.log(f"  fashion {method}: mAP {summary.map:.3f} P@10 {summary.precision:.3f}")
        per_class[method] = [
            metrics.summarise(
                [r for r, lab in zip(rankings, q_labels, strict=True) if lab == c],
                [t for t, lab in zip(totals, q_labels, strict=True) if lab == c],
                10,
            )
            for c in range(len(datasets.FASHION_CLASSES))
        ]
    short = {m: m.replace("baseline: ", "") for m in methods}
    detail = Table(["class", *(f"{short[m]} mAP / P@10" for m in methods)])
    for c, name in enumerate(datasets.FASHION_CLASSES):
        detail.add(name, *(f"{per_class[m][c].map:.3f} / {per_class[m][c].precision:.3f}" for m in methods))
    section.note("By class (mAP / P@10):")
    section.table(detail)
    if missing := ctx.missing(("generic", "products")):
        section.note(f"Not measured (type not installed): {', '.join(missing)}.")
    return section


# -- 3. near-duplicate matching --------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    image: Image.Image


def _matching_items(ctx: Context) -> tuple[list[Item], list[Item], list[Item]]:
    """Originals (photos in the collection), distractors (in the collection, never edited) and
    held-out items (queried, edited or not, with no original in the collection)."""
    from lookalike.testing.fakes import fake_image

    rng = np.random.default_rng([ctx.seed, 3])
    names = sorted(ctx.photos)
    held = set(rng.choice(names, size=3 if ctx.quick else 4, replace=False).tolist())
    originals = [Item(name, "photo", ctx.photos[name]) for name in names if name not in held]
    held_out: list[Item] = []
    for name in sorted(held):
        photo = ctx.photos[name]
        held_out.append(Item(f"held-{name}", "held-out photo", photo))
        w, h = photo.width // 2, photo.height // 2
        for q, (x, y) in enumerate([(0, 0), (w, 0), (0, h), (w, h)]):
            held_out.append(Item(f"held-{name}-q{q}", "held-out photo quarter", photo.crop((x, y, x + w, y + h))))
    n_fakes, n_faces, n_fashion, n_held = (40, 50, 30, 8) if ctx.quick else (150, 180, 100, 20)
    distractors = [Item(f"fake-{s}", "fake picture", fake_image(s, 256)) for s in range(n_fakes)]
    held_seeds = range(10_000, 10_000 + n_held)
    held_out += [Item(f"held-fake-{s}", "held-out fake picture", fake_image(s, 256)) for s in held_seeds]
    faces = datasets.faces()
    order = rng.permutation(len(faces))
    distractors += [Item(f"lfw-{i}", "LFW crop", faces[i]) for i in order[:n_faces]]
    held_out += [Item(f"held-lfw-{i}", "held-out LFW crop", faces[i]) for i in order[n_faces : n_faces + n_held]]
    loaded = datasets.fashion_mnist("t10k")
    if loaded is not None:
        images, _labels = loaded
        candidates = rng.choice(len(images), size=2 * (n_fashion + n_held), replace=False)
        picked = candidates[datasets.distinct(images[candidates])][: n_fashion + n_held]

        def clothes(row: int) -> Image.Image:
            return Image.fromarray(images[row], "L").convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)

        distractors += [Item(f"fmnist-{r}", "Fashion-MNIST", clothes(r)) for r in picked[:n_fashion]]
        held_out += [Item(f"held-fmnist-{r}", "held-out Fashion-MNIST", clothes(r)) for r in picked[n_fashion:]]
    distractors += [Item(f"drawing-{name}", "drawing", image) for name, image in datasets.drawings().items()]
    return originals, distractors, held_out


#: Held-out kinds of tiny, aligned, upscaled images (faces and clothes), reported apart.
TINY_KINDS = ("held-out LFW crop", "held-out Fashion-MNIST")


@dataclass(frozen=True)
class DupStats:
    threshold: float
    precision: float
    recall: float
    true: int
    false: int


def _dup_stats(positives: list[float], negatives: list[float], threshold: float) -> DupStats:
    """``is_duplicate`` at ``threshold``: positives are the distances of edited copies to their
    original (inf when it was not in the top 10), negatives those of every other hit."""
    true = sum(d <= threshold for d in positives)
    false = sum(d <= threshold for d in negatives)
    precision = true / (true + false) if true + false else float("nan")
    return DupStats(threshold, precision, true / len(positives) if positives else float("nan"), true, false)


def _best_threshold(positives: list[float], negatives: list[float], precision: float) -> DupStats:
    """The largest threshold (among the observed distances) that keeps ``precision``."""
    best = _dup_stats(positives, negatives, 0.0)
    for candidate in sorted({d for d in positives + negatives if np.isfinite(d)}):
        stats = _dup_stats(positives, negatives, candidate)
        if stats.precision >= precision and stats.recall >= best.recall:
            best = stats
    return best


def matching(ctx: Context) -> Section:
    section = Section("Near-duplicate matching (`matching`)")
    if "matching" not in ctx.types:
        section.note("skipped: the matching type is not installed.")
        return section
    originals, distractors, held_out = _matching_items(ctx)
    edits = datasets.edits(datasets.logo_image())
    collection = ctx.collection("matching", "matching")
    threshold = float(getattr(collection.type, "duplicate_threshold", None) or 0.0)
    add_all(
        collection,
        [{"_id": it.id, "_base64": datasets.b64(datasets.encode(it.image, "PNG"))} for it in originals + distractors],
    )
    kind_of = {it.id: it.kind for it in originals + distractors}
    variants: list[tuple[str, datasets.Edit]] = [
        ("unedited", lambda image, _rng: datasets.encode(image, "JPEG", 90)),
        *edits.items(),
    ]
    section.intro = [
        f"Collection: {len(originals)} original photos and {len(distractors)} distractors"
        f" ({', '.join(sorted({it.kind for it in distractors}))}), as PNG; the LFW crops and Fashion-MNIST"
        " images are deduplicated (no two with a pixel correlation above 0.95).",
        f"Positive queries: each original edited by each transformation (JPEG q90 unless stated). Held-out"
        f" queries: {len(held_out)} items not in the collection ({', '.join(sorted({it.kind for it in held_out}))}),"
        f" each unedited and edited by every transformation: {len(held_out) * len(variants)} queries.",
        f"Search: `record={{'_base64': ...}}`, limit 10 (default HNSW search). The type's calibrated duplicate"
        f" threshold (`is_duplicate`): {threshold:.4f}. Duplicate precision/recall: positives = (edited copy, its"
        " original); negatives = every other hit in the top 10 of a positive query and every hit of a held-out"
        " query. Crops keep 90% / 80% of each side (19% / 36% of the area) centred or at a random place;"
        " overlays cover about 4% (text box) and 4-6% (logo) of the area.",
    ]
    table = section.table(
        Table(
            [
                "transformation",
                "queries",
                "recall@1",
                "recall@1, exact",
                "dup recall",
                "false dup hits",
                "median d(original)",
                "max d(original)",
                "min d(other)",
            ]
        )
    )
    positives: list[float] = []
    negatives: list[tuple[float, str]] = []  # (distance, kind of the query)
    flagged_positive_ok = 0
    failures: list[str] = []
    false_hits: list[str] = []
    ranks1 = exact_ranks1 = 0
    for edit_index, (edit_name, edit) in enumerate(edits.items()):
        first = exact_first = dups = fps = 0
        d_orig: list[float] = []
        d_other: list[float] = []
        for item_index, item in enumerate(originals):
            data = edit(item.image, np.random.default_rng([ctx.seed, 30, edit_index, item_index]))
            query = collection.query_vector(record={"_base64": datasets.b64(data)})[0]
            hits = collection.search(query, limit=10)
            first += bool(hits) and hits[0]["_id"] == item.id
            exact_hits = collection.search(query, limit=10, exact=True)
            exact_first += exact_hits[0]["_id"] == item.id
            d_orig += [h["distance"] for h in exact_hits if h["_id"] == item.id]
            own = [h for h in hits if h["_id"] == item.id]
            positives.append(own[0]["distance"] if own else float("inf"))
            if own and own[0]["is_duplicate"]:
                dups += 1
            else:
                rank = metrics.rank_of([h["_id"] for h in hits], item.id)
                distance = f"{own[0]['distance']:.3f}" if own else "-"
                failures.append(f"{edit_name}: {item.id} (rank {rank}, d {distance})")
            for hit in hits:
                if hit["_id"] != item.id:
                    d_other.append(hit["distance"])
                    negatives.append((hit["distance"], "photo"))
                    if hit["is_duplicate"]:
                        fps += 1
                        false_hits.append(f"{edit_name} of {item.id} -> {hit['_id']} (d {hit['distance']:.3f})")
        flagged_positive_ok += dups
        ranks1 += first
        exact_ranks1 += exact_first
        table.add(
            edit_name,
            len(originals),
            first / len(originals),
            exact_first / len(originals),
            dups / len(originals),
            fps,
            float(np.median(d_orig)) if d_orig else None,
            max(d_orig) if d_orig else None,
            min(d_other) if d_other else None,
        )
        ctx.log(f"  matching {edit_name}: recall@1 {first / len(originals):.3f} dup {dups}/{len(originals)} fp {fps}")
    held_table = Table(["held-out kind", "queries", "false dup hits", "queries with a false dup", "min distance"])
    by_kind: dict[str, list[float]] = {}
    for item_index, item in enumerate(held_out):
        for edit_index, (edit_name, edit) in enumerate(variants):
            data = edit(item.image, np.random.default_rng([ctx.seed, 31, edit_index, item_index]))
            hits = collection.search(record={"_base64": datasets.b64(data)}, limit=10)
            flagged = [h for h in hits if h["is_duplicate"]]
            stats = by_kind.setdefault(item.kind, [0, 0, 0, float("inf")])
            stats[0] += 1
            stats[1] += len(flagged)
            stats[2] += bool(flagged)
            stats[3] = min(stats[3], min((h["distance"] for h in hits), default=float("inf")))
            negatives += [(h["distance"], item.kind) for h in hits]
            false_hits += [
                f"{edit_name} of {item.id} -> {h['_id']} ({kind_of.get(h['_id'])}, d {h['distance']:.3f})"
                for h in flagged
            ]
    for kind, (queries, flagged, any_flagged, closest) in sorted(by_kind.items()):
        held_table.add(kind, int(queries), int(flagged), int(any_flagged), float(closest))
    section.note(
        f"Recall@1 over all {len(positives)} positive queries: {ranks1 / len(positives):.4f} with the default"
        f" search (what `is_duplicate` below is computed from), {exact_ranks1 / len(positives):.4f} with"
        " `exact=True` (the same query vectors). `rank None` below: the original was not in the default search's"
        " top 10 at all. d(original): distance of the copy to its original (exact search)."
    )
    all_negatives = [d for d, _ in negatives]
    photo_negatives = [d for d, kind in negatives if kind not in TINY_KINDS]
    summary = section.table(
        Table(["`is_duplicate` at", "negatives", "threshold", "precision", "recall", "true / false duplicate hits"])
    )
    for label, negs in (("all", all_negatives), ("without the LFW / Fashion-MNIST held-out queries", photo_negatives)):
        for name, stats in (
            ("calibrated threshold", _dup_stats(positives, negs, threshold)),
            ("largest threshold with precision >= 0.99 here", _best_threshold(positives, negs, 0.99)),
        ):
            summary.add(name, label, stats.threshold, stats.precision, stats.recall, f"{stats.true} / {stats.false}")
    assert flagged_positive_ok == _dup_stats(positives, [], threshold).true
    section.note("Held-out queries (no original in the collection):")
    section.table(held_table)
    if failures:
        section.note("Missed copies (not flagged as duplicates): " + "; ".join(failures) + ".")
    if false_hits:
        shown = false_hits[:20]
        more = f" (and {len(false_hits) - len(shown)} more)" if len(false_hits) > len(shown) else ""
        section.note("False duplicate hits: " + "; ".join(shown) + more + ".")
    _drop(ctx, collection)
    return section


# -- 4. colours ------------------------------------------------------------------------------


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    lab: np.ndarray = rgb2lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)
    return lab


def _lab_rgb(lab: np.ndarray) -> np.ndarray:
    from skimage.color import lab2rgb

    rgb: np.ndarray = lab2rgb(np.asarray(lab, dtype=np.float64).reshape(-1, 1, 3)).reshape(-1, 3)
    return np.clip(np.round(rgb * 255), 0, 255)


def photo_palette(image: Image.Image, k: int, seed: int) -> list[tuple[str, float]]:
    """Dominant colours of a photo, heaviest first: k-means (scikit-learn) in CIELAB of the pixels
    of a 96-pixel thumbnail; each colour's share of the pixels."""
    from sklearn.cluster import KMeans

    thumb = image.copy()
    thumb.thumbnail((96, 96), Image.Resampling.BOX)
    lab = _lab(np.asarray(thumb).reshape(-1, 3))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(lab)
    shares = np.bincount(model.labels_, minlength=k) / len(lab)
    order = np.argsort(-shares, kind="stable")
    rgb = _lab_rgb(model.cluster_centers_[order])
    return [(datasets.rgb_hex(rgb[i]), float(shares[o])) for i, o in enumerate(order)]


def _delta_e(hex_a: str, hex_b: str) -> float:
    lab = _lab(np.array([datasets.hex_rgb(hex_a), datasets.hex_rgb(hex_b)]))
    return float(np.linalg.norm(lab[0] - lab[1]))


def colours(ctx: Context) -> Section:
    section = Section("Colours (`colors`)")
    if "colors" not in ctx.types:
        section.note("skipped: the colors type is not installed.")
        return section
    generated = datasets.colour_images(30 if ctx.quick else 80, 20 if ctx.quick else 50, ctx.seed)
    photos = {f"photo-{name}": image for name, image in sorted(ctx.photos.items())}
    collection = ctx.collection("colours", "colors")
    records = [{"_id": c.id, "_base64": datasets.b64(c.data)} for c in generated]
    records += [{"_id": i, "_base64": datasets.b64(datasets.encode(im, "JPEG", 90))} for i, im in photos.items()]
    add_all(collection, records)
    size = len(collection)
    section.intro = [
        f"Collection: {len(generated)} generated images (14 solid colours, two- and three-colour layouts with"
        " distinct colour sets and proportions: bands, stripes, nested boxes, a disc; PNG) and"
        f" {len(photos)} real photos (JPEG q90). Generated images are queried by their exact colours and measured"
        " pixel shares; photos by their own dominant colours (k-means in CIELAB, scikit-learn, on a 96-px"
        " thumbnail; the top 3 renormalised, and all 5). Search: `colors=[...]`, the whole collection ranked."
        " Expected: the image itself first.",
    ]
    groups: dict[str, list[int]] = {}
    worst: dict[str, tuple[int, str]] = {}

    def query(group: str, expected: str, colours_: list[tuple[str, float]]) -> int:
        hits = collection.search(colors=[{"color": c, "weight": w} for c, w in colours_], limit=size)
        rank = metrics.rank_of([h["_id"] for h in hits], expected) or size + 1
        groups.setdefault(group, []).append(rank)
        if rank > worst.get(group, (0, ""))[0]:
            worst[group] = (rank, f"{expected} (first: {hits[0]['_id']})")
        return rank

    stored = {r["_id"]: r.get("_colors", []) for r in collection.get([c.id for c in generated] + list(photos))}
    palette_errors: list[float] = []
    palette_outliers: list[str] = []
    for image in generated:
        group = "solid" if image.id.startswith("solid") else f"{image.id[1]} colours"
        query(group, image.id, [(c, w) for c, w in image.colours if w >= 0.005])
        heaviest = stored[image.id][0]["color"] if stored.get(image.id) else None
        if heaviest is not None:  # ties (a 50/50 layout): the closest of the largest colours
            largest = [c for c, w in image.colours if w >= image.colours[0][1] - 0.02]
            palette_errors.append(min(_delta_e(heaviest, c) for c in largest))
            if palette_errors[-1] > 5:
                palette_outliers.append(
                    f"{image.id} ({image.description}): heaviest `_colors` {heaviest}"
                    f" ({stored[image.id][0]['weight']:.0%}), delta E {palette_errors[-1]:.1f}"
                )
    photo_table = Table(
        ["photo", "dominant (k-means)", "type's heaviest `_colors`", "delta E", "rank, 3 colours", "rank, 5 colours"]
    )
    for index, (id_, image) in enumerate(photos.items()):
        palette = photo_palette(image, 5, ctx.seed + index)
        top3 = palette[:3]
        rank3 = query("photos, top 3 colours", id_, top3)
        rank5 = query("photos, 5 colours", id_, palette)
        heaviest = stored[id_][0] if stored.get(id_) else None
        photo_table.add(
            id_.removeprefix("photo-"),
            f"{palette[0][0]} ({palette[0][1]:.0%})",
            f"{heaviest['color']} ({heaviest['weight']:.0%})" if heaviest else "-",
            _delta_e(heaviest["color"], palette[0][0]) if heaviest else None,
            rank3,
            rank5,
        )
    table = section.table(Table(["queries", "count", "expected first", "mean rank", "worst rank (image)"]))
    for group, ranks in groups.items():
        table.add(
            group,
            len(ranks),
            float(np.mean(np.array(ranks) == 1)),
            float(np.mean(ranks)),
            f"{worst[group][0]}: {worst[group][1]}",
        )
    if palette_errors:
        section.note(
            f"Palettes of the generated images: the type's heaviest `_colors` entry is within delta E (CIE76)"
            f" {max(palette_errors):.1f} of the largest colour drawn (of one of them within 2% of the largest"
            f" share; mean {np.mean(palette_errors):.2f}); over delta E 5: {len(palette_outliers)} of"
            f" {len(palette_errors)}" + (": " + "; ".join(palette_outliers) if palette_outliers else "") + "."
        )
    section.note("Photos (ranks among all images; delta E between my dominant colour and the type's heaviest):")
    section.table(photo_table)
    _drop(ctx, collection)
    return section


# -- 5. text ---------------------------------------------------------------------------------

TEXT_QUERIES: list[tuple[str, str]] = [
    ("a cat", "chelsea"), ("a tabby cat", "chelsea"), ("a cup of coffee", "coffee"), ("espresso", "coffee"),
    ("a rocket", "rocket"), ("a space shuttle", "rocket"), ("an astronaut", "astronaut"), ("a horse", "horse"),
    ("flowers", "flower"), ("a daisy", "flower"), ("a Chinese temple", "china"), ("a palace", "china"),
    ("coins", "coins"), ("a motorcycle", "motorcycle"), ("a motor scooter", "motorcycle"),
    ("a man with a camera", "camera"), ("a tripod", "camera"), ("the moon", "moon"),
    ("galaxies in deep space", "hubble_deep_field"), ("a retina", "retina"), ("a brick wall", "brick"),
    ("grass", "grass"), ("gravel", "gravel"), ("a page of a book", "page"), ("a wall clock", "clock"),
    ("cells under a microscope", "cell"), ("stained tissue", "immunohistochemistry"), ("text", "text"),
]  # fmt: skip


def text(ctx: Context) -> Section:
    section = Section("Text queries (`generic`, offline concept bridge)")
    if "generic" not in ctx.types:
        section.note("skipped: the generic type is not installed.")
        return section
    images = dict(ctx.photos)
    horse = datasets.drawings().get("horse")
    if horse is not None:
        images["horse"] = horse
    collection = ctx.collection("text", "generic")
    add_all(
        collection,
        [{"_id": n, "_base64": datasets.b64(datasets.encode(im, "JPEG", 90))} for n, im in sorted(images.items())],
    )
    size = len(collection)
    section.intro = [
        f"A `generic` collection of the {len(images)} images of the instance suite (the photos, JPEG q90"
        + (", plus scikit-image's horse silhouette, a drawing, for 'a horse')" if horse is not None else ")")
        + ". `search(text=...)` ranks the whole collection; rank 1 = the expected image first. The offline bridge"
        " maps text onto the 1,000 ImageNet classes, nothing else (README).",
    ]
    table = section.table(Table(["query", "expected", "rank", "first hit", "distance of first"], align_left=2))
    ranks = []
    for query, expected in TEXT_QUERIES:
        if expected not in images:
            continue
        hits = collection.search(text=query, limit=size)
        rank = metrics.rank_of([h["_id"] for h in hits], expected)
        ranks.append(rank or size + 1)
        table.add(query, expected, rank, hits[0]["_id"], hits[0]["distance"])
    ranks_array = np.array(ranks, dtype=float)
    section.note(
        f"Expected image first for {int((ranks_array == 1).sum())} of {len(ranks)} queries, in the top 3 for"
        f" {int((ranks_array <= 3).sum())}; mean reciprocal rank {float(np.mean(1 / ranks_array)):.3f}"
        f" (chance: {float(np.mean(1 / np.arange(1, size + 1))):.3f})."
    )
    _drop(ctx, collection)
    return section


# -- 6. ingest throughput --------------------------------------------------------------------


def throughput_images(photos: dict[str, Image.Image], count: int, seed: int) -> list[bytes]:
    """``count`` JPEGs (quality 85) of random crops of the photos (50-100% of each side), the
    longer side scaled to 480-640 pixels."""
    rng = np.random.default_rng([seed, 6])
    names = sorted(photos)
    out = []
    for index in range(count):
        photo = photos[names[index % len(names)]]
        image = datasets.random_crop(photo, float(rng.uniform(0.5, 1)), float(rng.uniform(0.5, 1)), rng)
        scale = int(rng.integers(480, 641)) / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
        )
        out.append(datasets.encode(image, "JPEG", 85))
    return out


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as stream:
            return stream.read().split()[0]
    except OSError:
        return "?"


def _prepare_rate(type_: Any, jpegs: Sequence[bytes]) -> float:
    """Images per second of the engine's per-image work before the model, on this thread."""
    from lookalike import images

    started = time.perf_counter()
    for data in jpegs:
        image = images.decode_image(data, min_side=type_.input_side)
        type_.describe(image)
        type_.preprocess(image)
    return len(jpegs) / (time.perf_counter() - started)


def throughput(ctx: Context) -> Section:
    from lookalike.sdk import models

    count = 256 if ctx.quick else 512
    rounds = 2 if ctx.quick else 3
    jpegs = throughput_images(ctx.photos, count, ctx.seed)
    section = Section("Ingest throughput")
    model = models.image_model()
    pixels = models.pixel_values([datasets.decode(data) for data in jpegs])
    model.run(pixels[:32])  # warm-up: loads the model
    types = [t for t in IMAGE_TYPES if t in ctx.types]
    records = [{"_id": f"t{i}", "_base64": datasets.b64(data)} for i, data in enumerate(jpegs)]
    prepare: dict[str, float] = {}
    for type_ in types:  # warm-up: the type's instance, its model and the decoding threads
        warm = ctx.collection("warm", type_)
        add_all(warm, records[:ADD_BATCH])
        if warm.type is not None:
            prepare[type_] = _prepare_rate(warm.type, jpegs)
        _drop(ctx, warm)
    best: dict[str, float] = {}
    load = _loadavg()
    cores = int(os.environ.get("LOOKALIKE_MODEL_THREADS") or len(os.sched_getaffinity(0)))
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, count, 32):
            model.run(pixels[start : start + 32])
        rate = count / (time.perf_counter() - started)
        best["bare"] = max(best.get("bare", 0.0), rate)
        for type_ in types:
            collection = ctx.collection("ingest", type_)
            rate = count / add_all(collection, records)
            best[type_] = max(best.get(type_, 0.0), rate)
            _drop(ctx, collection)
    section.intro = [
        f"The same {count} JPEGs (quality 85, longer side 480-640 px, crops of the photos;"
        f" {sum(map(len, jpegs)) / count / 1024:.0f} KiB on average)."
        " Bare model: pixel tensors prepared beforehand, `image_model().run` on batches of 32"
        " (EfficientNet-Lite0 only). End to end: records with `_base64` through `collection.add` in batches of"
        f" {ADD_BATCH} into a new collection (base64 + JPEG decode, preprocessing, the model, index insert, SQLite"
        f" commit). Best of {rounds} round{'s' if rounds > 1 else ''}, after a warm-up; default inference threads."
        f" Load average (1 min) before / after: {load} / {_loadavg()}; other work on the machine skews these.",
        "Diagnostic columns: `decode + preprocess`: what the engine does per image before the model (its JPEG"
        " decoder `lookalike.images.decode_image` at the type's `input_side`, then the type's `describe` and"
        " `preprocess`), timed on one thread; `CPU ceiling`: the rate if the model kept all"
        f" {cores} cores as busy as in the bare run and the per-image work filled the rest perfectly,"
        " cores / (cores / bare + 1 / decode-rate) (no model: cores x decode-rate).",
    ]
    table = section.table(
        Table(["pipeline", "images/s", "vs bare model", "decode + preprocess, 1 thread (img/s)", "CPU ceiling (img/s)"])
    )
    table.add("bare model (EfficientNet-Lite0, batches of 32)", best["bare"], 1.0, None, None)
    notes = {
        "generic": "decode + resize/centre crop + model",
        "products": "decode at >= 512 px + background trim + pad + model",
        "matching": "decode + model + pHash and colour layout of 4 views",
        "colors": "decode + 64-px thumbnail + CIELAB histogram + k-means palette; no model",
    }
    for type_ in types:
        rate = prepare.get(type_)
        if rate is None:
            ceiling = None
        elif type_ == "colors":
            ceiling = cores * rate
        else:
            ceiling = cores / (cores / best["bare"] + 1 / rate)
        table.add(
            f"`{type_}` end to end ({notes[type_]})",
            best[type_],
            best[type_] / best["bare"] if type_ != "colors" else None,
            rate,
            ceiling,
        )
        ctx.log(f"  throughput {type_}: {best[type_]:.1f} img/s ({best[type_] / best['bare']:.0%} of bare)")
    return section
