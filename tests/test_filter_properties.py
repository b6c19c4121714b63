"""Property test: random filters agree with the reference evaluator, through both the field
indexes (compiled to the core) and the metadata scan."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lookalike

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
