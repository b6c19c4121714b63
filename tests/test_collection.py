"""The in-process API: records in and out, search, pagination, grouping, errors."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lookalike
from lookalike.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DimensionMismatchError,
    DuplicateIdError,
    InvalidInputError,
    InvalidRecordError,
    InvalidVectorError,
    RecordNotFoundError,
    UnsupportedError,
)

from .conftest import clustered, exact_neighbours


def records_for(vectors: np.ndarray, **extra: Any) -> list[dict[str, Any]]:
    return [{"_id": f"id{i}", "_vector": v.tolist(), **extra} for i, v in enumerate(vectors)]


def test_readme_example(engine: lookalike.Engine) -> None:
    col = engine.create_collection(
        "photos",
        type="vectors",
        ndim=4,
        metric="cos",
        fields_to_index=["category", "price"],
        product_id_field="product_id",
    )
    col.add(
        [
            {"_id": "a1", "_vector": [1, 0, 0, 0], "category": "kitchen", "price": 10, "product_id": "p1"},
            {"_id": "a2", "_vector": [0.9, 0.1, 0, 0], "category": "bath", "price": 60, "product_id": "p1"},
            {"_id": "a3", "_vector": [0, 1, 0, 0], "category": "bath", "price": 20, "product_id": "p2"},
        ]
    )
    hits = col.search(
        vector=[1, 0, 0, 0], limit=10, filter={"category": {"$in": ["kitchen", "bath"]}, "price": {"$lt": 50}}
    )
    assert [h["_id"] for h in hits] == ["a1", "a3"]
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-6)
    assert hits[0]["category"] == "kitchen"
    grouped = col.search(id="a1", limit=10, group_by="product_id", group_size=2)
    assert [(h["_id"], h["_group"]) for h in grouped] == [("a1", "p1"), ("a2", "p1"), ("a3", "p2")]
    assert col.get(["a1", "missing"]) == [{"_id": "a1", "category": "kitchen", "price": 10, "product_id": "p1"}]
    assert col.update([{"_id": "a1", "category": "bath"}]) == 1
    assert col.get(["a1"])[0]["category"] == "bath"
    assert col.count({"category": "bath"}) == 3
    assert col.remove(["a1"]) == 1
    assert len(col) == 2
    assert engine.collection("photos") is col
    assert engine.list_collections() == ["photos"]
    engine.drop_collection("photos")
    assert engine.list_collections() == []


@pytest.mark.parametrize("precision", ["f32", "f16", "i8"])
def test_search_recall_against_exact(engine: lookalike.Engine, precision: str) -> None:
    base = clustered(3000, 32, seed=1)
    queries = clustered(50, 32, seed=2)
    col = engine.create_collection("c", ndim=32, precision=precision)  # type: ignore[arg-type]
    col.add_vectors([str(i) for i in range(len(base))], base)
    result = col.search_vectors(queries, limit=10, ef=128)
    found = 0
    for row, query in enumerate(queries):
        truth = set(exact_neighbours(base, query, 10))
        found += len(truth & {int(k) for k in result.keys[row]})
    # Tight clusters make this data hard for any HNSW (the usearch package alone gets ~0.93 at
    # ef=64); the check is that quantized graphs plus exact re-ranking keep recall high.
    assert found / (10 * len(queries)) >= 0.9
    # Distances are exact (re-ranked with f32) even when the graph stores i8 or f16.
    best = exact_neighbours(base, queries[0], 1)[0]
    if int(result.keys[0][0]) == best:
        expected = 1.0 - float(base[best] @ (queries[0] / np.linalg.norm(queries[0])))
        assert float(result.distances[0][0]) == pytest.approx(expected, abs=1e-5)
    assert result.ids[0][0] == str(int(result.keys[0][0]))


@pytest.mark.parametrize("metric", ["ip", "l2sq"])
def test_other_metrics(engine: lookalike.Engine, metric: str) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((500, 8)).astype(np.float32)
    col = engine.create_collection("m", ndim=8, metric=metric)  # type: ignore[arg-type]
    col.add_vectors([str(i) for i in range(500)], base)
    query = rng.standard_normal(8).astype(np.float32)
    hits = col.search(query, limit=5, exact=True)
    if metric == "ip":
        truth = np.argsort(-(base @ query), kind="stable")[:5]
        expected = 1.0 - float(base[truth[0]] @ query)
    else:
        truth = np.argsort(((base - query) ** 2).sum(1), kind="stable")[:5]
        expected = float(((base[truth[0]] - query) ** 2).sum())
    assert [h["_id"] for h in hits] == [str(i) for i in truth]
    assert hits[0]["distance"] == pytest.approx(expected, rel=1e-4)


def test_binary_hamming(engine: lookalike.Engine) -> None:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, (300, 64))
    col = engine.create_collection("hashes", ndim=64, metric="hamming", precision="binary")
    col.add([{"_id": str(i), "_vector": b.tolist()} for i, b in enumerate(bits)])
    query = bits[17].copy()
    query[:3] ^= 1
    hits = col.search(query.tolist(), limit=3)
    assert hits[0]["_id"] == "17"
    assert hits[0]["distance"] == 3.0
    packed = np.packbits(bits.astype(np.uint8), axis=1)
    col.add_vectors(["p0"], packed[:1])
    assert col.search(id="p0", limit=2)[0]["distance"] == 0.0


def test_pagination_never_repeats_or_skips(engine: lookalike.Engine) -> None:
    base = clustered(2000, 16, seed=5)
    col = engine.create_collection("pages", ndim=16, expansion_search=128)
    col.add_vectors([str(i) for i in range(2000)], base)
    query = base[3]
    for exact in (True, False):
        whole = [h["_id"] for h in col.search(query, limit=100, exact=exact)]
        paged: list[str] = []
        for offset in range(0, 100, 7):
            paged += [h["_id"] for h in col.search(query, limit=7, offset=offset, exact=exact)]
        assert paged[:100] == whole
        assert len(set(whole)) == 100


def test_filtered_search_returns_limit_when_enough_match(engine: lookalike.Engine) -> None:
    n = 5000
    base = clustered(n, 16, seed=6)
    col = engine.create_collection("sel", ndim=16, fields_to_index=["bucket"], exact_threshold=50)
    col.add_vectors([str(i) for i in range(n)], base, [{"bucket": i % 1000} for i in range(n)])
    for bound in (1, 3, 10, 100, 500):  # 0.1% .. 50% selectivity, graph and exact plans
        spec = {"bucket": {"$lt": bound}}
        matching = [i for i in range(n) if i % 1000 < bound]
        found = wanted = 0
        for query in base[:: n // 20]:
            hits = col.search(query, limit=10, filter=spec)
            assert len(hits) == min(10, len(matching))
            assert all(int(h["_id"]) % 1000 < bound for h in hits)
            truth = exact_neighbours(base[matching], query, 10)
            found += len({str(matching[i]) for i in truth} & {h["_id"] for h in hits})
            wanted += min(10, len(matching))
        assert found / wanted >= 0.9, (bound, found / wanted)
    stats = col.stats()
    assert stats["searches_exact"] > 0 and stats["searches_filtered_graph"] > 0


def test_grouping_matches_reference(engine: lookalike.Engine) -> None:
    n = 600
    rng = np.random.default_rng(8)
    base = clustered(n, 16, seed=8)
    products = [f"p{int(rng.integers(0, 80))}" for _ in range(n)]
    col = engine.create_collection("g", ndim=16, product_id_field="product_id", fields_to_index=["product_id"])
    col.add([{"_id": str(i), "_vector": base[i].tolist(), "product_id": products[i]} for i in range(n)])
    query = base[10]
    order = exact_neighbours(base, query, n)
    groups: dict[str, list[str]] = defaultdict(list)
    ranked_groups: list[str] = []
    for i in order:
        if products[i] not in groups:
            ranked_groups.append(products[i])
        if len(groups[products[i]]) < 3:
            groups[products[i]].append(str(i))
    seen: list[str] = []
    for offset in (0, 5, 10):
        hits = col.search(query, limit=5, offset=offset, group_by="product_id", group_size=3, exact=True)
        expected = [rid for g in ranked_groups[offset : offset + 5] for rid in groups[g]]
        assert [h["_id"] for h in hits] == expected
        seen += [h["_group"] for h in hits]
    assert len(dict.fromkeys(seen)) == 15
    approx = col.search(query, limit=5, group_by="product_id", group_size=3)
    assert [h["_group"] for h in approx][:1] == [ranked_groups[0]]
    with pytest.raises(UnsupportedError):
        col.search(query, limit=5, group_by="color")


def test_records_without_group_form_their_own(engine: lookalike.Engine) -> None:
    col = engine.create_collection("g2", ndim=2, product_id_field="sku")
    col.add(
        [
            {"_id": "a", "_vector": [1, 0]},
            {"_id": "b", "_vector": [1, 0.01]},
            {"_id": "c", "_vector": [1, 0.02], "sku": 5},
        ]
    )
    hits = col.search([1, 0], limit=3, group_by="sku", group_size=2)
    assert [(h["_id"], h["_group"]) for h in hits] == [("a", "a"), ("b", "b"), ("c", 5)]


def test_bad_input_raises_and_writes_nothing(engine: lookalike.Engine) -> None:
    col = engine.create_collection("bad", ndim=3)
    col.add([{"_id": "ok", "_vector": [1, 2, 3]}])
    cases: list[tuple[list[Any], type[Exception]]] = [
        ([{"_id": "x", "_vector": [1, 2]}], DimensionMismatchError),
        ([{"_id": "x", "_vector": [1, float("nan"), 3]}], InvalidVectorError),
        ([{"_id": "x", "_vector": [1, float("inf"), 3]}], InvalidVectorError),
        ([{"_id": "x", "_vector": [0, 0, 0]}], InvalidVectorError),
        ([{"_id": "x", "_vector": ["a", 2, 3]}], InvalidVectorError),
        ([{"_id": 5, "_vector": [1, 2, 3]}], InvalidRecordError),
        ([{"_id": "", "_vector": [1, 2, 3]}], InvalidRecordError),
        ([{"_vector": [1, 2, 3]}], InvalidRecordError),
        ([{"_id": "x"}], InvalidRecordError),
        ([{"_id": "x", "_vector": [1, 2, 3], "_secret": 1}], InvalidRecordError),
        ([{"_id": "x", "_vector": [1, 2, 3], "v": float("nan")}], InvalidRecordError),
        ([{"_id": "x", "_vector": [1, 2, 3], "v": {1, 2}}], InvalidRecordError),
        ([{"_id": "x", "_vector": [1, 2, 3], "_base64": "AAAA"}], UnsupportedError),
        ([{"_id": "x", "_vector": [1, 2, 3]}, {"_id": "x", "_vector": [1, 2, 3]}], DuplicateIdError),
        ([{"_id": "y", "_vector": [1, 2, 3]}, {"_id": "z", "_vector": [1, 2]}], DimensionMismatchError),
        (["not a record"], InvalidRecordError),
    ]
    for batch, error in cases:
        with pytest.raises(error):
            col.add(batch)
        assert len(col) == 1
        assert [r["_id"] for r in col] == ["ok"]
    with pytest.raises(DimensionMismatchError):
        col.search([1, 2], limit=1)
    with pytest.raises(InvalidVectorError):
        col.search([1, float("nan"), 2], limit=1)
    with pytest.raises(InvalidInputError):
        col.search([1, 2, 3], limit=0)
    with pytest.raises(InvalidInputError):
        col.search([1, 2, 3], id="ok")
    with pytest.raises(RecordNotFoundError):
        col.search(id="nope")
    with pytest.raises(RecordNotFoundError):
        col.update([{"_id": "ok", "a": 1}, {"_id": "nope", "a": 1}])
    assert col.get(["ok"]) == [{"_id": "ok"}]
    with pytest.raises(DimensionMismatchError):
        col.add_vectors(["q"], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(CollectionNotFoundError):
        engine.collection("nope")
    with pytest.raises(CollectionExistsError):
        engine.create_collection("bad", ndim=3)
    with pytest.raises(InvalidInputError):
        engine.create_collection("../escape", ndim=3)
    with pytest.raises(UnsupportedError):
        engine.create_collection("u", ndim=3, type="nope")
    with pytest.raises(UnsupportedError):
        engine.create_collection("u", ndim=3, metric="l2sq", precision="i8")
    with pytest.raises(InvalidInputError):
        engine.create_collection("u", ndim=3, metric="nope")  # type: ignore[arg-type]
    assert engine.list_collections() == ["bad"]


def test_add_replaces_same_id_and_update_changes_vector(engine: lookalike.Engine) -> None:
    col = engine.create_collection("r", ndim=2, fields_to_index=["color"])
    col.add([{"_id": "a", "_vector": [1, 0], "color": "red"}, {"_id": "b", "_vector": [0, 1], "color": "blue"}])
    col.add([{"_id": "a", "_vector": [0, 1], "color": "green"}])
    assert len(col) == 2
    assert col.count({"color": "red"}) == 0
    assert col.count({"color": "green"}) == 1
    assert {h["_id"] for h in col.search([0, 1], limit=2)} == {"a", "b"}
    assert col.search([0, 1], limit=2)[1]["distance"] == pytest.approx(0.0, abs=1e-6)
    col.update([{"_id": "b", "_vector": [1, 0]}])
    assert col.search([1, 0], limit=1)[0]["_id"] == "b"
    assert col.get(["b"]) == [{"_id": "b", "color": "blue"}]


def test_remove_by_filter_and_key_reuse(engine: lookalike.Engine) -> None:
    col = engine.create_collection("rm", ndim=4, fields_to_index=["n"])
    base = clustered(200, 4, seed=9)
    col.add_vectors([str(i) for i in range(200)], base, [{"n": i} for i in range(200)])
    assert col.remove(filter={"n": {"$gte": 100}}) == 100
    assert col.count({"n": {"$gte": 100}}) == 0
    # Freed keys are reused; the new records must not inherit the old field values.
    col.add_vectors([f"new{i}" for i in range(50)], base[:50], [{"n": -1} for _ in range(50)])
    assert col.count({"n": -1}) == 50
    assert col.count({"n": {"$gte": 100}}) == 0
    assert len(col) == 150
    assert col.remove(["0", "0", "unknown"]) == 1
    assert col.search(base[0], limit=1, exact=True)[0]["_id"] == "new0"


def test_records_paging(engine: lookalike.Engine) -> None:
    col = engine.create_collection("p", ndim=2)
    col.add([{"_id": f"r{i}", "_vector": [1, i], "even": i % 2 == 0} for i in range(25)])
    seen: list[str] = []
    cursor = None
    while True:
        page = col.records(limit=10, cursor=cursor, filter={"even": True})
        seen += [r["_id"] for r in page.records]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [f"r{i}" for i in range(0, 25, 2)]
    with pytest.raises(InvalidInputError):
        col.records(cursor="x")


def test_unicode_ids_and_metadata(engine: lookalike.Engine) -> None:
    col = engine.create_collection("u", ndim=2, fields_to_index=["name"])
    odd = ["ž\u200d🙂", "a b", "line\nbreak", "' OR 1=1 --", "\u202e"]
    col.add([{"_id": s, "_vector": [1, i + 1], "name": s} for i, s in enumerate(odd)])
    assert [r["_id"] for r in col.get(odd)] == odd
    for s in odd:
        assert col.count({"name": s}) == 1
    with pytest.raises(InvalidRecordError):
        col.add([{"_id": "nul\x00", "_vector": [1, 1]}])


def test_rank_matches_exact_search_distances(tmp_path: Path) -> None:
    import lookalike

    rng = np.random.default_rng(7)
    with lookalike.Engine(tmp_path / "rank") as engine:
        for metric in ("cos", "l2sq", "ip"):
            col = engine.create_collection(f"r{metric}", ndim=6, metric=metric)
            vectors = rng.standard_normal((40, 6)).astype(np.float32)
            col.add_vectors([f"v{i}" for i in range(40)], vectors)
            query = rng.standard_normal(6).astype(np.float32)
            ids = [f"v{i}" for i in range(0, 40, 3)] + ["missing"]
            ranked = col.rank(ids, query)
            exact = col.search(query, limit=40, exact=True)
            expected = [hit for hit in exact if hit["_id"] in set(ids)]
            assert [hit["_id"] for hit in ranked] == [hit["_id"] for hit in expected]
            np.testing.assert_allclose(
                [hit["distance"] for hit in ranked], [hit["distance"] for hit in expected], rtol=1e-4, atol=1e-5
            )
            assert col.rank([], query) == []


def test_insert_if_absent_skips_stored_ids(tmp_path: Path) -> None:
    import lookalike

    with lookalike.Engine(tmp_path / "absent") as engine:
        col = engine.create_collection("v", ndim=2)
        col.add([{"_id": "a", "_vector": [1, 0], "n": 1}])
        result = col.insert([{"_id": "b", "_vector": [0, 1]}, {"_id": "a", "_vector": [1, 1], "n": 2}], if_absent=True)
        assert result.ids == ["b"]
        assert [(e.position, e.id, e.code) for e in result.errors] == [(1, "a", "duplicate_id")]
        assert col.get(["a"])[0]["n"] == 1


def test_metadata_updates_leave_the_graph_alone(tmp_path: Path) -> None:
    """Updating metadata (same vector, same group) changes the field indexes only: the graph
    node is not removed and added again, so updates do not wear the graph or start compactions;
    a new vector or a new group does replace the node."""
    with lookalike.Engine(tmp_path / "data") as engine:
        col = engine.create_collection("c", ndim=8, fields_to_index=["tag"], product_id_field="product")
        base = clustered(200, 8, seed=3)
        col.add_vectors([f"r{i}" for i in range(200)], base, [{"tag": "old", "product": i % 20} for i in range(200)])
        for round_ in range(3):
            col.update([{"_id": f"r{i}", "tag": f"t{round_}", "price": i} for i in range(200)])
        assert col.stats()["removed_since_rebuild"] == 0
        assert col.count({"tag": "t2"}) == 200 and col.count({"tag": "old"}) == 0
        hits = col.search(base[5], limit=1, filter={"tag": "t2"})
        assert hits[0]["_id"] == "r5" and hits[0]["price"] == 5
        # A new group or a new vector replaces the node.
        col.update([{"_id": "r1", "product": 999}, {"_id": "r2", "_vector": base[3].tolist()}])
        assert col.stats()["removed_since_rebuild"] == 2
        grouped = col.search(base[1], limit=3, group_by="product")
        assert grouped[0]["_id"] == "r1" and grouped[0]["product"] == 999
        assert {hit["_id"] for hit in col.search(base[3], limit=2, exact=True)} == {"r2", "r3"}
