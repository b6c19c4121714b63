"""Property tests: random filters agree with the reference evaluator, through both the field
indexes (compiled to the core) and the metadata scan, on the fixed records of test_filters, on
records Hypothesis draws (with any subset of fields indexed), and on a hand-written table of
operator and type edge cases."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lookalike

from . import strategies
from .reference import evaluate
from .test_filters import collections  # noqa: F401 - the shared module fixture

FIELDS = ["category", "price", "tags", "in_stock", "spec.color", "spec.size", "items.color", "mixed", "absent"]
SCALARS = st.one_of(
    st.sampled_from(["kitchen", "bath", "Kitchen", "sale", "eco", "red", "green", "1", "2", ""]),
    st.integers(-5, 100),
    st.floats(-10, 100, allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
NUMBERS = st.one_of(st.integers(-5, 100), st.floats(-10, 100, allow_nan=False, allow_infinity=False))


def condition() -> st.SearchStrategy[Any]:
    lists = st.lists(SCALARS, max_size=4)
    return st.one_of(
        SCALARS,
        st.fixed_dictionaries({"$eq": SCALARS}),
        st.fixed_dictionaries({"$ne": SCALARS}),
        st.fixed_dictionaries({"$gt": NUMBERS}),
        st.fixed_dictionaries({"$gte": NUMBERS, "$lt": NUMBERS}),
        st.fixed_dictionaries({"$lte": st.one_of(NUMBERS, st.sampled_from(["1", "b", "m"]))}),
        st.fixed_dictionaries({"$in": lists}),
        st.fixed_dictionaries({"$nin": lists}),
        st.fixed_dictionaries({"$all": lists}),
        st.fixed_dictionaries({"$exists": st.booleans()}),
        st.fixed_dictionaries({"$size": st.integers(0, 3)}),
        st.fixed_dictionaries({"$not": st.fixed_dictionaries({"$gt": NUMBERS})}),
    )


def filters() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(st.sampled_from(FIELDS), condition(), min_size=1, max_size=2)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$nor": st.lists(inner, min_size=1, max_size=3)}),
        ),
        max_leaves=6,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=filters())
def test_random_filters_match_reference(collections: Any, spec: dict[str, Any]) -> None:  # noqa: F811
    records, indexed, plain = collections
    docs = [{k: v for k, v in r.items() if k != "_vector"} for r in records]
    expected = sum(1 for doc in docs if evaluate(doc, spec))
    assert indexed.count(spec) == expected
    assert plain.count(spec) == expected
    assert sum(1 for doc in docs if lookalike.filters.matches(doc, spec)) == expected


# -- random records as well as random filters ----------------------------------------------------
#
# The table above runs on one fixed set of records. Below, Hypothesis draws the records too (nested
# objects, arrays of objects and of arrays, mixed types; see strategies.py) and which fields are
# indexed, so the core's field indexes, the metadata scan and the way the compiler splits a filter
# between them (some fields indexed, others not) all meet the reference on records nobody chose.


@settings(max_examples=250, deadline=None, derandomize=True)
@given(docs=st.lists(strategies.metadata(), min_size=1, max_size=6), spec=strategies.filters())
def test_python_evaluator_matches_reference(docs: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    parsed = lookalike.filters.parse(spec)
    for position, doc in enumerate(docs):
        record = {"_id": f"r{position}", **doc}
        assert lookalike.filters.matches(record, parsed) == evaluate(record, spec), record


@pytest.fixture(scope="module")
def scratch_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lookalike.Engine]:
    engine = lookalike.Engine(tmp_path_factory.mktemp("filter-properties"))
    yield engine
    engine.close()


#: Paths a collection may index (a path into arrays of objects and a numeric segment included).
INDEXABLE = [path for path in strategies.PATHS if path != "absent.deeper"]
NAMES = itertools.count()


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    docs=st.lists(strategies.metadata(), max_size=12),
    indexed=st.sets(st.sampled_from(INDEXABLE)),
    specs=st.lists(strategies.filters(), min_size=1, max_size=4),
)
def test_engine_filters_match_reference_on_random_records(
    scratch_engine: lookalike.Engine, docs: list[dict[str, Any]], indexed: set[str], specs: list[dict[str, Any]]
) -> None:
    name = f"random{next(NAMES)}"
    collection = scratch_engine.create_collection(name, ndim=2, fields_to_index=sorted(indexed))
    try:
        records = [{"_id": f"r{i}", **doc} for i, doc in enumerate(docs)]
        collection.add([{**record, "_vector": [1.0, i + 1.0]} for i, record in enumerate(records)])
        for spec in specs:
            expected = {record["_id"] for record in records if evaluate(record, spec)}
            assert collection.count(spec) == len(expected), (spec, sorted(indexed))
            hits = collection.search([1.0, 0.0], limit=max(1, len(records)), filter=spec, exact=True)
            assert {hit["_id"] for hit in hits} == expected, (spec, sorted(indexed))
        # Updates and removals go through the field indexes' before images: filters still agree.
        if records:
            changed = {"_id": "r0", **(docs[-1] if docs else {})}
            collection.update([changed])
            records[0] = {**records[0], **changed}
            collection.remove(["r1"])
            records = [record for record in records if record["_id"] != "r1"]
            for spec in specs:
                expected = {record["_id"] for record in records if evaluate(record, spec)}
                assert collection.count(spec) == len(expected), (spec, sorted(indexed), "after writes")
    finally:
        scratch_engine.drop_collection(name)


# -- operators on shapes chosen by hand ----------------------------------------------------------

EDGE_RECORDS: list[dict[str, Any]] = [
    {"_id": "e0", "n": 2, "tags": ["a", "b"], "spec": {"k": "x", "n": 1}, "grid": [[1, 2], [3]]},
    {"_id": "e1", "n": 2.0, "tags": "a", "spec": {"n": 1, "k": "x"}, "items": [{"c": "red"}, {"c": "blue"}]},
    {"_id": "e2", "n": True, "tags": [], "spec": None, "items": [{"c": "blue"}, "red", ["red"]], "grid": []},
    {"_id": "e3", "n": "2", "tags": [["a", "b"]], "items": [], "mixed": [1, "1", None, True]},
    {"_id": "e4", "n": None, "tags": ["b", "a", "a"], "items": {"c": "red"}, "mixed": {"c": [1, 2]}},
    {"_id": "e5", "n": -0.0, "items": [{"n": 0}, {"c": None}], "grid": [[0], [1, 2]], "mixed": 0},
    {"_id": "e6"},
]

EDGE_FILTERS: list[dict[str, Any]] = [
    # numbers: 2 == 2.0, never "2" or True; -0.0 == 0
    {"n": 2},
    {"n": {"$in": [0, "2"]}},
    {"n": {"$gte": 0}},
    {"n": {"$gt": "1"}},
    {"n": {"$ne": 2}},
    {"n": {"$eq": True}},
    {"n": {"$exists": 1}},
    {"n": {"$exists": 0}},
    {"n": None},
    {"n": {"$ne": None}},
    {"n": {"$nin": [None, 2]}},
    # arrays: element match, whole-array match (order matters), $all, $size, arrays of arrays
    {"tags": "a"},
    {"tags": ["a", "b"]},
    {"tags": ["b", "a"]},
    {"tags": []},
    {"tags": {"$all": ["a", "b"]}},
    {"tags": {"$all": [["a", "b"]]}},
    {"tags": {"$size": 0}},
    {"tags": {"$size": 3}},
    {"tags": {"$in": [["a", "b"], "z"]}},
    {"tags": {"$not": {"$size": 2}}},
    {"grid": [1, 2]},
    {"grid.0": [1, 2]},
    {"grid.0": 1},
    {"grid.1": {"$size": 2}},
    # objects: whole-object equality is key-order sensitive, dotted paths are not
    {"spec": {"k": "x", "n": 1}},
    {"spec": {"n": 1, "k": "x"}},
    {"spec.n": 1},
    {"spec.k": {"$exists": False}},
    {"spec": None},
    # arrays of objects, numeric segments, mixed arrays
    {"items.c": "red"},
    {"items.c": None},
    {"items.c": {"$ne": "red"}},
    {"items.0.c": "blue"},
    {"items.1": "red"},
    {"items.1.c": {"$exists": True}},
    {"items": {"c": "red"}},
    {"items.n": {"$lt": 1}},
    {"mixed": 1},
    {"mixed": True},
    {"mixed": None},
    {"mixed.c": 2},
    {"mixed": {"$all": [1, "1"]}},
    # $not around several operators, and logical combinations
    {"n": {"$not": {"$gte": 1, "$lte": 2}}},
    {"n": {"$not": {"$in": [2, None]}}},
    {"$nor": [{"n": 2}, {"tags": "a"}]},
    {"$or": [{"items.c": "red"}, {"$and": [{"n": {"$exists": False}}, {"tags": {"$exists": False}}]}]},
    {"$and": [{"tags": "a"}, {"$nor": [{"spec.k": "x"}]}], "n": {"$ne": None}},
]


@pytest.mark.parametrize("which", ["all", "none", "some"])
def test_edge_filters_match_reference(scratch_engine: lookalike.Engine, which: str) -> None:
    fields = {"all": INDEXABLE, "none": [], "some": ["n", "items.c", "grid.0", "spec"]}[which]
    name = f"edges-{which}"
    collection = scratch_engine.create_collection(name, ndim=2, fields_to_index=fields)
    try:
        collection.add([{**record, "_vector": [1.0, i + 1.0]} for i, record in enumerate(EDGE_RECORDS)])
        for spec in EDGE_FILTERS:
            expected = {record["_id"] for record in EDGE_RECORDS if evaluate(record, spec)}
            assert collection.count(spec) == len(expected), spec
            hits = collection.search([1.0, 0.0], limit=len(EDGE_RECORDS), filter=spec, exact=True)
            assert {hit["_id"] for hit in hits} == expected, spec
            assert {r["_id"] for r in EDGE_RECORDS if lookalike.filters.matches(r, spec)} == expected, spec
    finally:
        scratch_engine.drop_collection(name)


def test_edge_filters_are_selective() -> None:
    """The hand-written table would prove little if most filters matched all or nothing."""
    sizes = [sum(1 for r in EDGE_RECORDS if evaluate(r, spec)) for spec in EDGE_FILTERS]
    assert sum(1 for size in sizes if 0 < size < len(EDGE_RECORDS)) >= len(EDGE_FILTERS) * 3 // 4
