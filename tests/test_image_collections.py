"""Image collection types through the engine: ingestion, query kinds, several views per image,
per-record errors, stored images, near-duplicates, reopening."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine
from lookalike.errors import (
    DuplicateIdError,
    InvalidImageError,
    InvalidInputError,
    InvalidRecordError,
    PluginError,
    RecordNotFoundError,
    UnsupportedError,
)
from lookalike.sdk.registry import Registry
from lookalike.testing import fake_image, image_base64
from tests.plugin_fixtures import MeanColour, Mirrored


def solid(rgb: tuple[int, int, int], size: int = 32) -> str:
    return image_base64(Image.new("RGB", (size, size), rgb))


def half(left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (32, 32), left)
    image.paste(Image.new("RGB", (16, 32), right), (16, 0))
    return image


@pytest.fixture
def registry() -> Registry:
    made = Registry()
    made.register(MeanColour)
    made.register(Mirrored)
    return made


@pytest.fixture
def engine(tmp_path: Path, registry: Registry) -> Iterator[Engine]:
    with Engine(tmp_path / "data", registry=registry, threads=1) as opened:
        yield opened


def test_image_records_are_embedded_described_and_not_stored(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour", config={"grid": 2})
    assert (col.config.ndim, col.config.metric) == (12, "cos")
    col.add([{"_id": "r", "_base64": solid((255, 0, 0)), "shop": "a", "_mean": "ignored"}])
    record = col.get(["r"])[0]
    assert record == {"_id": "r", "shop": "a", "_mean": [255.0, 0.0, 0.0]}
    with pytest.raises(UnsupportedError, match="store_images"):
        col.get_image("r")


def test_every_query_kind(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour")
    names = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
    col.add([{"_id": n, "_base64": solid(rgb)} for n, rgb in names.items()])
    assert col.query_kinds == ["vector", "id", "image", "text", "image+text", "colors"]
    assert col.search(record={"_base64": solid((250, 5, 5))}, limit=1)[0]["_id"] == "red"
    assert col.search(record={"_base64": "data:image/png;base64," + solid((0, 0, 250))}, limit=1)[0]["_id"] == "blue"
    assert col.search(record={"_id": "green"}, limit=1)[0]["_id"] == "green"
    assert col.search(text="something green", limit=1)[0]["_id"] == "green"
    assert col.search(colors=[{"color": "#ffff00", "weight": 1}], limit=1)[0]["_id"] == "yellow"
    assert col.search(colors=["#f00"], limit=1)[0]["_id"] == "red"
    # image + text: the weight moves the answer from the image to the text
    probe = {"_base64": solid((255, 0, 0))}
    assert col.search(record=probe, text="blue", text_weight=0.0, limit=1)[0]["_id"] == "red"
    assert col.search(record=probe, text="blue", text_weight=1.0, limit=1)[0]["_id"] == "blue"
    with pytest.raises(InvalidInputError, match="text_weight"):
        col.search(record=probe, text="blue", text_weight=1.5)
    with pytest.raises(InvalidInputError, match="one query"):
        col.search(id="red", text="blue")
    with pytest.raises(InvalidInputError, match="exactly one of"):
        col.search(record={"_id": "red", "_base64": solid((1, 2, 3))})
    with pytest.raises(InvalidInputError, match="hex colour"):
        col.search(colors=[{"color": "red"}])
    with pytest.raises(InvalidImageError):
        col.search(record={"_base64": "bm90IGFuIGltYWdl"})


def test_a_type_names_the_query_kinds_it_supports(engine: Engine) -> None:
    col = engine.create_collection("v", ndim=4)
    col.add([{"_id": "a", "_vector": [1, 0, 0, 0]}])
    with pytest.raises(UnsupportedError, match="cannot be searched by text; it supports: vector, id"):
        col.search(text="red")
    with pytest.raises(UnsupportedError, match="colors"):
        col.search(colors=["#ff0000"])
    with pytest.raises(UnsupportedError, match="image"):
        col.search(record={"_base64": solid((1, 2, 3))})
    with pytest.raises(UnsupportedError, match="image collection type"):
        col.add([{"_id": "b", "_base64": solid((1, 2, 3))}])


def test_insert_reports_bad_records_and_writes_the_good(engine: Engine, tmp_path: Path) -> None:
    col = engine.create_collection("c", type="meancolour")
    buffer = io.BytesIO()
    fake_image(1).save(buffer, format="JPEG")
    truncated = base64.b64encode(buffer.getvalue()[:200]).decode()
    picture = tmp_path / "picture.png"
    fake_image(2).save(picture)
    result = col.insert(
        [
            {"_id": "ok", "_base64": solid((1, 2, 3))},
            {"_id": "truncated", "_base64": truncated},
            {"_id": "garbage", "_base64": "!!!not base64!!!"},
            {"_id": "ok", "_base64": solid((1, 2, 3))},
            {"_id": 7, "_base64": solid((1, 2, 3))},
            {"_id": "two", "_base64": solid((1, 2, 3)), "_file": str(picture)},
            {"_id": "file", "_file": str(picture)},
            {"_id": "missing-file", "_file": str(tmp_path / "nope.png")},
            {"_id": "url", "_url": "http://example.invalid/x.png"},
            "not a record",
        ]
    )
    assert result.ids == ["ok", "file"]
    assert [(e.position, e.id, e.code) for e in result.errors] == [
        (1, "truncated", "invalid_image"),
        (2, "garbage", "invalid_image"),
        (3, "ok", "duplicate_id"),
        (4, None, "invalid_record"),
        (5, "two", "invalid_record"),
        (7, "missing-file", "invalid_image"),
        (8, "url", "invalid_record"),
        (9, None, "invalid_record"),
    ]
    assert sorted(r["_id"] for r in col) == ["file", "ok"]


def test_add_is_all_or_nothing(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour")
    with pytest.raises(InvalidImageError, match="record 1"):
        col.add([{"_id": "a", "_base64": solid((1, 2, 3))}, {"_id": "b", "_base64": "aGVsbG8="}])
    with pytest.raises(DuplicateIdError):
        col.add([{"_id": "a", "_base64": solid((1, 2, 3))}, {"_id": "a", "_base64": solid((1, 2, 3))}])
    assert len(col) == 0


def test_urls_are_read_through_the_fetcher(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour")
    served = {"http://img/red.png": base64.b64decode(solid((255, 0, 0)))}
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        return served[url]

    col.add([{"_id": "red", "_url": "http://img/red.png"}], fetch=fetch)
    assert asked == ["http://img/red.png"]
    assert col.get(["red"])[0]["_url"] == "http://img/red.png"  # the URL is metadata, the image is not kept
    assert col.search(record={"_url": "http://img/red.png"}, fetch=fetch, limit=1)[0]["_id"] == "red"


def test_local_files_can_be_refused(tmp_path: Path, registry: Registry) -> None:
    picture = tmp_path / "p.png"
    fake_image(3).save(picture)
    with Engine(tmp_path / "data", registry=registry, allow_files=False) as engine:
        col = engine.create_collection("c", type="meancolour")
        result = col.insert([{"_id": "f", "_file": str(picture)}])
        assert result.ids == [] and result.errors[0].code == "invalid_record"


def test_store_images_keeps_the_original_bytes(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour", store_images=True)
    payload = solid((9, 8, 7))
    col.add([{"_id": "a", "_base64": payload}])
    assert col.get_image("a") == base64.b64decode(payload)
    col.remove(["a"])
    with pytest.raises(RecordNotFoundError):
        col.get_image("a")


def test_records_may_bring_their_own_vector(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour")
    col.add([{"_id": "v", "_vector": [1.0] * 12, "_url": "http://x/y.png"}])
    assert col.search(vector=[1.0] * 12, limit=1)[0]["_id"] == "v"
    with pytest.raises(InvalidRecordError, match="either an image or a _vector"):
        col.add([{"_id": "w", "_vector": [1.0] * 12, "_base64": solid((1, 1, 1))}])


def test_near_duplicates_groups_linked_records(engine: Engine) -> None:
    col = engine.create_collection("c", type="meancolour")
    col.add(
        [
            {"_id": "red1", "_base64": solid((250, 0, 0))},
            {"_id": "red2", "_base64": solid((252, 2, 0))},
            {"_id": "red3", "_base64": solid((248, 1, 3))},
            {"_id": "blue1", "_base64": solid((0, 0, 250))},
            {"_id": "blue2", "_base64": solid((0, 3, 251))},
            {"_id": "green", "_base64": solid((0, 250, 0))},
        ]
    )
    assert col.near_duplicates(threshold=0.001) == [["red1", "red2", "red3"], ["blue1", "blue2"]]
    with pytest.raises(InvalidInputError, match="threshold"):
        col.near_duplicates()


# -- several vectors per image ----------------------------------------------------------------


def brute_force(col: Any, query: np.ndarray, keys_to_views: dict[str, np.ndarray]) -> list[tuple[str, float]]:
    q = query / np.linalg.norm(query)
    scored = []
    for id_, views in keys_to_views.items():
        unit = views / np.linalg.norm(views, axis=1, keepdims=True)
        scored.append((id_, float(np.min(1 - unit @ q))))
    return sorted(scored, key=lambda item: (item[1], item[0]))


def test_several_views_per_image_count_as_one_hit(engine: Engine) -> None:
    col = engine.create_collection("m", type="mirrored", fields_to_index=["side"], product_id_field="product")
    assert col.config.views == 2
    rng = np.random.default_rng(5)
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(60)]
    records = []
    for i, (a, b) in enumerate(zip(colours[:30], colours[30:], strict=True)):
        records.append(
            {
                "_id": f"r{i}",
                "_base64": image_base64(half(a, b)),  # type: ignore[arg-type]
                "side": "even" if i % 2 == 0 else "odd",
                "product": f"p{i // 3}",
            }
        )
    col.add(records)
    assert len(col) == 30 and col.count() == 30 and col.count({"side": "odd"}) == 15
    # A mirrored copy finds its original at distance ~0 through the second view.
    mirrored = half(colours[30 + 4], colours[4])  # type: ignore[arg-type]
    hit = col.search(record={"_base64": image_base64(mirrored)}, limit=1)[0]
    assert hit["_id"] == "r4" and hit["distance"] < 1e-4

    instance = col.type
    assert isinstance(instance, Mirrored)
    views = {
        r["_id"]: np.asarray(instance.embed_views([instance.preprocess(half(a, b))]))[0]  # type: ignore[arg-type]
        for r, a, b in zip(records, colours[:30], colours[30:], strict=True)
    }
    query = views["r7"][0] + 0.3
    expected = brute_force(col, query, views)
    seen: list[str] = []
    for offset in range(0, 30, 7):
        page = col.search(vector=query, limit=7, offset=offset, exact=True)
        seen += [h["_id"] for h in page]
        for hit, (_id, distance) in zip(page, expected[offset : offset + 7], strict=True):
            assert hit["distance"] == pytest.approx(distance, abs=1e-4)
    assert sorted(seen) == sorted(views) and len(seen) == len(set(seen))

    odd = col.search(vector=query, limit=30, filter={"side": "odd"})
    assert [h["_id"] for h in odd] == [i for i, _ in expected if int(i[1:]) % 2 == 1]

    batch = col.search_vectors(np.stack([query, views["r2"][1]]), limit=5)
    assert batch.ids[0] == [i for i, _ in expected[:5]]
    assert batch.ids[1][0] == "r2" and len(set(batch.ids[1])) == 5

    grouped = col.search(vector=query, limit=3, group_by="product", group_size=2, exact=True)
    best_groups: list[str] = []
    for id_, _ in expected:
        group = f"p{int(id_[1:]) // 3}"
        if group not in best_groups:
            best_groups.append(group)
    assert list(dict.fromkeys(h["_group"] for h in grouped)) == best_groups[:3]
    for group in best_groups[:3]:
        members = [h["_id"] for h in grouped if h["_group"] == group]
        assert members == [i for i, _ in expected if f"p{int(i[1:]) // 3}" == group][:2]

    assert col.remove(filter={"side": "even"}) == 15
    assert len(col) == 15
    assert all(h["side"] == "odd" for h in col.search(vector=query, limit=30))
    np.testing.assert_allclose(col.get_vector("r1"), views["r1"][0] / np.linalg.norm(views["r1"][0]), atol=1e-5)


def test_views_survive_reopening(tmp_path: Path, registry: Registry) -> None:
    with Engine(tmp_path / "data", registry=registry) as engine:
        col = engine.create_collection("m", type="mirrored")
        col.add([{"_id": f"r{i}", "_base64": image_base64(fake_image(i))} for i in range(12)])
        before = col.search(id="r3", limit=12)
        col.snapshot()
        col.add([{"_id": "late", "_base64": image_base64(fake_image(40))}])
        col.remove(["r5"])
    with Engine(tmp_path / "data", registry=registry) as engine:
        col = engine.collection("m")
        assert len(col) == 12
        after = col.search(id="r3", limit=12)
        assert [h["_id"] for h in after if h["_id"] != "late"] == [h["_id"] for h in before if h["_id"] != "r5"]


def test_reopening_needs_the_type(tmp_path: Path, registry: Registry) -> None:
    with Engine(tmp_path / "data", registry=registry) as engine:
        engine.create_collection("c", type="meancolour")
    with Engine(tmp_path / "data", registry=Registry()) as engine:
        with pytest.raises(UnsupportedError, match="unknown collection type 'meancolour'"):
            engine.collection("c")

    class Newer(MeanColour):
        version = "2.0"

    newer = Registry()
    newer.register(Newer)
    with Engine(tmp_path / "data", registry=newer) as engine:
        with pytest.raises(PluginError, match="version 1.0.*2.0"):
            engine.collection("c")


def test_type_settings_are_checked_at_creation(engine: Engine) -> None:
    from lookalike.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="meancolour"):
        engine.create_collection("c", type="meancolour", config={"grid": "two"})
    with pytest.raises(InvalidConfigError):
        engine.create_collection("c", type="meancolour", config={"colour": True})
    with pytest.raises(InvalidInputError, match="12-d"):
        engine.create_collection("c", type="meancolour", ndim=3)
    with pytest.raises(UnsupportedError, match="available"):
        engine.create_collection("c", type="nope")
    assert engine.list_collections() == []
    types = engine.collection_types()
    assert types["meancolour"]["query_kinds"] == ["vector", "id", "image", "text", "image+text", "colors"]
    assert "grid" in str(types["meancolour"]["config"])
