"""Filters through the public API, checked against a brute-force reference evaluator.

Each filter runs on two collections holding the same records: one with every field indexed
(answered by the core's bitmaps) and one with none (answered by scanning the metadata). Both
must agree with the reference exactly, for counting and for filtered search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lookalike
from lookalike.errors import InvalidFilterError

from .conftest import clustered
from .reference import evaluate

N = 400
NDIM = 16
INDEXED = ["category", "price", "tags", "in_stock", "spec.color", "spec.size", "items.color", "mixed", "_id"]


def make_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    vectors = clustered(N, NDIM, seed=7)
    categories = ["kitchen", "bath", "garden", "office", "Kitchen"]
    colors = ["red", "green", "blue"]
    records: list[dict[str, Any]] = []
    for i in range(N):
        r: dict[str, Any] = {"_id": f"r{i}", "_vector": vectors[i].tolist()}
        if rng.random() < 0.9:
            r["category"] = str(rng.choice(categories))
        roll = rng.random()
        if roll < 0.45:
            r["price"] = int(rng.integers(0, 100))
        elif roll < 0.85:
            r["price"] = round(float(rng.uniform(-10, 100)), 2)
        elif roll < 0.92:
            r["price"] = None
        if rng.random() < 0.8:
            r["tags"] = [
                str(t)
                for t in rng.choice(["new", "sale", "eco", "big", "small"], int(rng.integers(0, 4)), replace=False)
            ]
        if rng.random() < 0.7:
            r["in_stock"] = bool(rng.random() < 0.5)
        if rng.random() < 0.6:
            r["spec"] = {"color": str(rng.choice(colors)), "size": int(rng.integers(1, 5))}
        if rng.random() < 0.5:
            r["items"] = [{"color": str(rng.choice(colors))} for _ in range(int(rng.integers(0, 3)))]
        roll = rng.random()
        if roll < 0.3:
            r["mixed"] = int(rng.integers(0, 3))
        elif roll < 0.6:
            r["mixed"] = str(rng.integers(0, 3))
        elif roll < 0.7:
            r["mixed"] = bool(rng.random() < 0.5)
        elif roll < 0.8:
            r["mixed"] = [1, "1", None]
        records.append(r)
    # Edge cases that must be present at least once.
    records[0]["price"] = 0
    records[1]["price"] = -0.0
    records[2]["tags"] = []
    records[3]["price"] = 50
    records[4]["price"] = 50.0
    records[5]["in_stock"] = True
    records[6]["mixed"] = 1.0
    return records


FILTERS: list[dict[str, Any]] = [
    {"category": "kitchen"},
    {"category": {"$eq": "Kitchen"}},
    {"category": {"$ne": "kitchen"}},
    {"category": {"$in": ["kitchen", "bath"]}},
    {"category": {"$nin": ["kitchen", "bath"]}},
    {"category": {"$exists": False}},
    {"category": {"$exists": True}},
    {"category": None},
    {"price": {"$ne": None}},
    {"price": 50},
    {"price": 0},
    {"price": {"$gt": 50}},
    {"price": {"$gte": 50}},
    {"price": {"$lt": 0}},
    {"price": {"$lte": 0}},
    {"price": {"$gt": 10, "$lt": 20.5}},
    {"price": {"$gte": -5.5, "$lte": 5.5}},
    {"price": {"$in": [1, 2, 3, 50, None]}},
    {"price": {"$not": {"$gt": 50}}},
    {"price": {"$exists": True}},
    {"price": {"$gt": "a"}},
    {"tags": "sale"},
    {"tags": {"$all": ["sale", "eco"]}},
    {"tags": {"$all": []}},
    {"tags": {"$in": ["big", "small"]}},
    {"tags": {"$nin": ["sale"]}},
    {"tags": {"$size": 0}},
    {"tags": {"$size": 2}},
    {"tags": {"$exists": True}},
    {"tags": []},
    {"tags": ["new"]},
    {"in_stock": True},
    {"in_stock": False},
    {"in_stock": {"$ne": True}},
    {"in_stock": 1},
    {"spec.color": "red"},
    {"spec.size": {"$gte": 3}},
    {"spec": {"color": "red", "size": 2}},
    {"items.color": "green"},
    {"items.color": {"$ne": "green"}},
    {"items.0.color": "blue"},
    {"mixed": 1},
    {"mixed": "1"},
    {"mixed": True},
    {"mixed": None},
    {"mixed": {"$gt": 0}},
    {"mixed": {"$gte": "1"}},
    {"_id": {"$in": ["r1", "r2", "r399", "nope"]}},
    {"$or": [{"category": "bath"}, {"price": {"$lt": 5}}]},
    {"$and": [{"category": "bath"}, {"price": {"$lt": 50}}]},
    {"$nor": [{"category": "bath"}, {"tags": "sale"}]},
    {"$or": [{"category": "garden", "in_stock": True}, {"$and": [{"tags": "eco"}, {"price": {"$gt": 30}}]}]},
    {"$and": [{"$or": [{"mixed": 1}, {"mixed": "2"}]}, {"$nor": [{"spec.color": "blue"}]}]},
    {"category": "office", "tags": {"$size": 1}},
    {"$or": [{"tags": {"$size": 1}}, {"price": 50}]},
    {"nothing.here": {"$exists": False}},
    {"price": {"$gt": 1000}},
]


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Any:
    engine = lookalike.Engine(tmp_path_factory.mktemp("filters"))
    records = make_records()
    indexed = engine.create_collection("indexed", ndim=NDIM, fields_to_index=INDEXED)
    plain = engine.create_collection("plain", ndim=NDIM)
    indexed.add(records)
    plain.add(records)
    yield records, indexed, plain
    engine.close()


def expected_ids(records: list[dict[str, Any]], spec: dict[str, Any]) -> set[str]:
    return {r["_id"] for r in records if evaluate({k: v for k, v in r.items() if k != "_vector"}, spec)}


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
@pytest.mark.parametrize("which", ["indexed", "plain"])
def test_filter_matches_reference(collections: Any, spec: dict[str, Any], which: str) -> None:
    records, indexed, plain = collections
    collection = indexed if which == "indexed" else plain
    expected = expected_ids(records, spec)
    assert collection.count(spec) == len(expected)
    query = np.asarray(records[11]["_vector"], dtype=np.float32)
    # Exact filtered search returns exactly the matching records, nearest first.
    hits = collection.search(query, limit=N, filter=spec, exact=True)
    assert {h["_id"] for h in hits} == expected
    distances = [h["distance"] for h in hits]
    assert distances == sorted(distances)
    # Planner-chosen search returns `limit` results whenever that many match, all matching.
    hits = collection.search(query, limit=10, filter=spec)
    assert len(hits) == min(10, len(expected))
    assert {h["_id"] for h in hits} <= expected


def test_some_filters_are_selective(collections: Any) -> None:
    """The table would prove little if every filter matched all or nothing."""
    records = collections[0]
    sizes = [len(expected_ids(records, spec)) for spec in FILTERS]
    assert sum(1 for s in sizes if 0 < s < N) >= len(FILTERS) * 3 // 4


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"price": {"$gtx": 1}}, "$gtx"),
        ({"$where": "1"}, "$where"),
        ({"price": {"$in": 5}}, "$in"),
        ({"price": {"$exists": "yes"}}, "$exists"),
        ({"tags": {"$size": -1}}, "$size"),
        ({"tags": {"$size": 1.5}}, "$size"),
        ({"price": {"$gt": [1]}}, "$gt"),
        ({"price": {"$gt": float("nan")}}, "$gt"),
        ({"price": {"$not": 5}}, "$not"),
        ({"price": {"$gt": 1, "plain": 2}}, "price"),
        ({"": 1}, "empty"),
        ({"a..b": 1}, "a..b"),
        ({"a.$b": 1}, "a.$b"),
        ({"$and": []}, "$and"),
        ({"$or": {"a": 1}}, "$or"),
        ({"price": {"$and": [{"a": 1}]}}, "$and"),
        ({"$gt": 5}, "$gt"),
        ({"a": {"$eq": {1, 2}}}, "set"),
    ],
)
def test_invalid_filters_name_the_problem(collections: Any, spec: Any, fragment: str) -> None:
    _, indexed, _ = collections
    with pytest.raises(InvalidFilterError) as error:
        indexed.search(np.ones(NDIM, dtype=np.float32), limit=3, filter=spec)
    assert fragment in str(error.value)
    assert isinstance(error.value, ValueError)


def test_deeply_nested_filter_is_refused(collections: Any) -> None:
    _, indexed, _ = collections
    spec: dict[str, Any] = {"price": 1}
    for _ in range(100):
        spec = {"$and": [spec]}
    with pytest.raises(InvalidFilterError, match="deeper"):
        indexed.count(spec)


def test_non_object_filter_is_refused(collections: Any) -> None:
    _, indexed, _ = collections
    with pytest.raises(InvalidFilterError):
        indexed.count(["price", 1])  # type: ignore[arg-type]
