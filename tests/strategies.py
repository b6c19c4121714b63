"""Hypothesis strategies shared by the property tests: record metadata with every JSON shape the
filters care about (nested objects, arrays of scalars, of objects and of arrays, mixed types),
and MongoDB filters over it with every operator, drawn from small value pools so that filters
select some records rather than all or none."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

WORDS = ["red", "green", "blue", "a", "b", "1", ""]
#: Numbers that meet at equal values across types (2 and 2.0, 0 and -0.0) and fall between bounds.
NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([-1.5, -0.0, 0.5, 2.0, 2.5]))
SCALARS = st.one_of(st.sampled_from(WORDS), NUMBERS, st.booleans(), st.none())


def values(depth: int = 2) -> st.SearchStrategy[Any]:
    """A metadata value: scalars, arrays (of scalars, objects or arrays) and small objects."""
    if depth == 0:
        return SCALARS
    inner = values(depth - 1)
    return st.one_of(
        SCALARS,
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["c", "k", "n"]), inner, max_size=2),
    )


#: Field paths the filters use; ``items`` holds arrays of objects, ``grid`` arrays of arrays.
PATHS = [
    "color",
    "n",
    "tags",
    "spec",
    "spec.k",
    "spec.n",
    "items",
    "items.c",
    "items.0.c",
    "items.1",
    "grid",
    "grid.0",
    "mixed",
    "flag",
    "_id",
    "absent",
    "absent.deeper",
]


def metadata() -> st.SearchStrategy[dict[str, Any]]:
    """Record metadata over the fields of :data:`PATHS` (each optional)."""
    # Deferred: Hypothesis then shows this strategy by name, not as pages of nested strategies.
    return st.deferred(_metadata)


def _metadata() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "color": st.one_of(st.sampled_from(["red", "green", "blue", "Red"]), st.none()),
            "n": NUMBERS,
            "tags": st.one_of(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3), st.sampled_from(["a", "b"])),
            "spec": st.fixed_dictionaries(
                {}, optional={"k": st.sampled_from(["x", "y"]), "n": NUMBERS, "c": st.sampled_from(["red", "blue"])}
            ),
            "items": st.lists(
                st.one_of(
                    st.fixed_dictionaries({}, optional={"c": st.sampled_from(["red", "blue", "1"]), "n": NUMBERS}),
                    SCALARS,
                ),
                max_size=3,
            ),
            "grid": st.lists(st.lists(st.integers(0, 2), max_size=2), max_size=2),
            "mixed": values(),
            "flag": st.booleans(),
        },
    )


def literals() -> st.SearchStrategy[Any]:
    """Values a filter compares with: mostly scalars, sometimes arrays or objects (whole-value
    equality, key order included)."""
    return st.one_of(
        SCALARS,
        SCALARS,
        st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 2)), max_size=2),
        st.fixed_dictionaries({"k": st.sampled_from(["x", "y"])}, optional={"n": NUMBERS}),
        st.fixed_dictionaries({"c": st.sampled_from(["red", "blue", "1"])}),
    )


def operators() -> st.SearchStrategy[dict[str, Any]]:
    """One field's operator object, ``$not`` included (around one or two operators)."""
    bound = st.one_of(NUMBERS, st.sampled_from(["a", "blue", "m", "1"]))
    lists = st.lists(literals(), max_size=3)
    single = st.one_of(
        st.fixed_dictionaries({"$eq": literals()}),
        st.fixed_dictionaries({"$ne": literals()}),
        st.fixed_dictionaries({"$gt": bound}),
        st.fixed_dictionaries({"$gte": bound}),
        st.fixed_dictionaries({"$lt": bound}),
        st.fixed_dictionaries({"$lte": bound}),
        st.fixed_dictionaries({"$gt": NUMBERS, "$lte": NUMBERS}),
        st.fixed_dictionaries({"$in": lists}),
        st.fixed_dictionaries({"$nin": lists}),
        st.fixed_dictionaries({"$all": lists}),
        st.fixed_dictionaries({"$exists": st.one_of(st.booleans(), st.sampled_from([0, 1]))}),
        st.fixed_dictionaries({"$size": st.integers(0, 3)}),
        st.fixed_dictionaries({"$ne": SCALARS, "$exists": st.booleans()}),
    )
    return st.one_of(
        single,
        single,
        single.map(lambda inner: {"$not": inner}),
        st.tuples(single, single).map(lambda pair: {"$not": {**pair[0], **pair[1]}}),
    )


def filters(
    paths: list[str] | None = None, conditions: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """MongoDB filters over `paths` (default :data:`PATHS`): implicit equality, operators,
    several fields in one object, and ``$and``/``$or``/``$nor`` nested a few levels.
    `conditions` replaces the conditions on one field (default: literals and operators)."""
    leaf = _leaf(paths or PATHS, conditions)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$nor": st.lists(inner, min_size=1, max_size=3)}),
            st.tuples(leaf, st.lists(inner, min_size=1, max_size=2)).map(lambda t: {**t[0], "$or": t[1]}),
        ),
        max_leaves=6,
    )


@st.composite
def _leaf(draw: st.DrawFn, paths: list[str], conditions: st.SearchStrategy[Any] | None) -> dict[str, Any]:
    """One or two fields with their conditions. A composite, so that Hypothesis names the
    recursive strategy above briefly instead of spelling out every strategy inside it."""
    condition = conditions if conditions is not None else st.one_of(literals(), operators(), operators())
    found: dict[str, Any] = draw(st.dictionaries(st.sampled_from(paths), condition, min_size=1, max_size=2))
    return found
