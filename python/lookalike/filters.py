"""MongoDB-style filters: parse and validate, evaluate over a record, compile for the core.

A filter is parsed once into a small tree (:func:`parse`), which rejects anything unknown with
an :class:`~lookalike.errors.InvalidFilterError` that names the operator or path. The tree is
then either evaluated over one record's metadata (:func:`matches`, used for fields without an
index), or compiled (:func:`compile_filter`) into the tuple form the native core evaluates into
a bitset over its field indexes. Parts that the field indexes cannot answer (fields that are not
indexed, ``$size``, equality with arrays or objects, string ranges) are handed to a fallback that
returns the passing keys, so every filter works and indexed ones are fast.

Semantics follow MongoDB: a condition on a field whose value is an array matches when any
element matches; ``{"f": null}`` matches a missing field too; ``$ne``/``$nin`` match records
without the field; comparison operators compare numbers with numbers and strings with strings
only; booleans are not numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from lookalike.errors import InvalidFilterError

__all__ = [
    "Filter",
    "parse",
    "matches",
    "compile_filter",
    "values_at",
    "indexable_values",
    "PRESENCE_SUFFIX",
    "MAX_DEPTH",
]

MAX_DEPTH = 32
MAX_NODES = 10_000
#: The core keeps, next to each indexed field ``f``, a field ``f + PRESENCE_SUFFIX`` that marks
#: records where ``f`` exists at all (also as an empty array or an object, which have no
#: indexable scalar values), so ``$exists`` is answered by a bitmap too.
PRESENCE_SUFFIX = "\x00present"

COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", "$not", "$all", "$size", *COMPARISONS})
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})

Scalar: TypeAlias = str | int | float | bool | None
CompiledNode: TypeAlias = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    """One operator applied to one field path."""

    path: str
    operator: str
    value: Any


@dataclass(frozen=True, slots=True)
class Not:
    """``{path: {"$not": {...}}}``: none of the inner conditions hold together."""

    path: str
    conditions: tuple[Condition | Not, ...]


@dataclass(frozen=True, slots=True)
class Logical:
    """``$and`` / ``$or`` / ``$nor`` over child filters."""

    operator: str
    children: tuple[Node, ...]


Node: TypeAlias = Condition | Not | Logical


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed, validated filter."""

    root: Node

    def matches(self, record: Mapping[str, Any]) -> bool:
        return _evaluate(self.root, record)


# ---------------------------------------------------------------------------------------------
# Parsing


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def spend(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InvalidFilterError(f"filter has more than {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise InvalidFilterError(f"filter is nested deeper than {MAX_DEPTH} levels")


def parse(spec: Mapping[str, Any] | Filter | None) -> Filter | None:
    """Parses and validates a MongoDB-style filter; ``None`` or ``{}`` means no filter.

    Raises:
        InvalidFilterError: naming the unknown operator, bad path or bad value.
    """
    if spec is None or isinstance(spec, Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise InvalidFilterError(f"a filter must be an object, got {type(spec).__name__}")
    if not spec:
        return None
    return Filter(_parse_document(spec, 0, _Budget()))


def _parse_document(spec: Mapping[str, Any], depth: int, budget: _Budget) -> Node:
    budget.spend(depth)
    if not isinstance(spec, Mapping):
        raise InvalidFilterError(f"expected a filter object, got {type(spec).__name__}")
    children: list[Node] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise InvalidFilterError(f"filter keys must be strings, got {key!r}")
        if key.startswith("$"):
            if key not in LOGICAL_OPERATORS:
                hint = f" (it applies to a field: {{field: {{{key}: ...}}}})" if key in FIELD_OPERATORS else ""
                raise InvalidFilterError(f"unknown top-level operator {key!r}{hint}")
            if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
                raise InvalidFilterError(f"{key} takes a non-empty list of filters")
            parts = tuple(_parse_document(child, depth + 1, budget) for child in value)
            children.append(Logical(key, parts))
        else:
            _check_path(key)
            children.extend(_parse_field(key, value, depth + 1, budget))
    if len(children) == 1:
        return children[0]
    return Logical("$and", tuple(children))


def _check_path(path: str) -> None:
    if not path:
        raise InvalidFilterError("empty field path")
    if len(path) > 1024:
        raise InvalidFilterError("field path longer than 1024 characters")
    for segment in path.split("."):
        if not segment:
            raise InvalidFilterError(f"field path {path!r} has an empty segment")
        if segment.startswith("$"):
            raise InvalidFilterError(f"field path {path!r} has a segment starting with '$'")
        if "\x00" in segment:
            raise InvalidFilterError(f"field path {path!r} contains a NUL character")


def _is_operator_object(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(k, str) and k.startswith("$") for k in value)


def _parse_field(path: str, value: Any, depth: int, budget: _Budget) -> list[Condition | Not]:
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if not _is_operator_object(value):
            raise InvalidFilterError(f"field {path!r} mixes operators and plain keys in one object")
        return [_parse_operator(path, op, arg, depth, budget) for op, arg in value.items()]
    budget.spend(depth)
    _check_literal(path, value, depth)
    return [Condition(path, "$eq", value)]


def _check_literal(path: str, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidFilterError(f"value for {path!r} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilterError(f"value for {path!r} must be a finite number, got {value!r}")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFilterError(f"object keys in the value for {path!r} must be strings")
            _check_literal(path, item, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_literal(path, item, depth + 1)
        return
    raise InvalidFilterError(f"unsupported value type {type(value).__name__} for {path!r}")


def _parse_operator(path: str, op: str, arg: Any, depth: int, budget: _Budget) -> Condition | Not:
    budget.spend(depth)
    if op not in FIELD_OPERATORS:
        hint = " (it combines filters: use it at the top level)" if op in LOGICAL_OPERATORS else ""
        known = ", ".join(sorted(FIELD_OPERATORS))
        raise InvalidFilterError(f"unknown operator {op!r} on field {path!r}{hint}; known operators: {known}")
    if op in ("$eq", "$ne"):
        _check_literal(path, arg, depth)
    elif op in COMPARISONS:
        if isinstance(arg, bool) or not isinstance(arg, int | float | str):
            raise InvalidFilterError(f"{op} on {path!r} takes a number or a string, got {_type_name(arg)}")
        if isinstance(arg, float) and not math.isfinite(arg):
            raise InvalidFilterError(f"{op} on {path!r} takes a finite number, got {arg!r}")
    elif op in ("$in", "$nin", "$all"):
        if not isinstance(arg, list | tuple):
            raise InvalidFilterError(f"{op} on {path!r} takes a list, got {_type_name(arg)}")
        if len(arg) > MAX_NODES:
            raise InvalidFilterError(f"{op} on {path!r} has more than {MAX_NODES} values")
        for item in arg:
            _check_literal(path, item, depth + 1)
        arg = tuple(arg)
    elif op == "$exists":
        if not isinstance(arg, bool | int) or isinstance(arg, int) and not isinstance(arg, bool) and arg not in (0, 1):
            raise InvalidFilterError(f"$exists on {path!r} takes true or false, got {arg!r}")
        arg = bool(arg)
    elif op == "$size":
        if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
            raise InvalidFilterError(f"$size on {path!r} takes a non-negative integer, got {arg!r}")
    elif op == "$not":
        if not _is_operator_object(arg):
            raise InvalidFilterError(f"$not on {path!r} takes an operator object such as {{'$gt': 5}}")
        inner = tuple(
            _parse_operator(path, inner_op, inner_arg, depth + 1, budget) for inner_op, inner_arg in arg.items()
        )
        return Not(path, inner)
    return Condition(path, op, arg)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------------------------------------
# Evaluation over one record (MongoDB semantics)


def values_at(record: Any, path: str) -> list[Any]:
    """All values found at a dotted path, descending through arrays like MongoDB.

    An array met on the way fans out to its elements (and a numeric segment also indexes it).
    The values at the end are returned as they are: an array there is one value, whose elements
    the operators look into.
    """
    current: list[Any] = [record]
    for segment in path.split("."):
        found: list[Any] = []
        for value in current:
            _step(value, segment, found, nested=False)
        current = found
        if not current:
            break
    return current


def _step(value: Any, segment: str, found: list[Any], nested: bool) -> None:
    if isinstance(value, Mapping):
        if segment in value:
            found.append(value[segment])
    elif isinstance(value, list) and not nested:
        if segment.isdigit():
            index = int(segment)
            if index < len(value):
                found.append(value[index])
        for element in value:
            if isinstance(element, Mapping):
                _step(element, segment, found, nested=True)


def _candidates(values: list[Any]) -> Iterator[Any]:
    """The values a scalar condition is tried against: each value, and each element of arrays."""
    for value in values:
        yield value
        if isinstance(value, list):
            yield from value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a.keys()) == list(b.keys()) and all(_equal(a[k], b[k]) for k in a)
    return False


def _compare(value: Any, op: str, bound: Any) -> bool:
    if isinstance(bound, str):
        if not isinstance(value, str):
            return False
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if op == "$gt":
        return bool(value > bound)
    if op == "$gte":
        return bool(value >= bound)
    if op == "$lt":
        return bool(value < bound)
    return bool(value <= bound)


def _eq_values(values: list[Any], target: Any) -> bool:
    if target is None and not values:
        return True
    return any(_equal(candidate, target) for candidate in _candidates(values))


def _condition(condition: Condition | Not, record: Mapping[str, Any]) -> bool:
    if isinstance(condition, Not):
        return not all(_condition(inner, record) for inner in condition.conditions)
    values = values_at(record, condition.path)
    op, arg = condition.operator, condition.value
    if op == "$eq":
        return _eq_values(values, arg)
    if op == "$ne":
        return not _eq_values(values, arg)
    if op in COMPARISONS:
        return any(_compare(candidate, op, arg) for candidate in _candidates(values))
    if op == "$in":
        return any(_eq_values(values, item) for item in arg)
    if op == "$nin":
        return not any(_eq_values(values, item) for item in arg)
    if op == "$exists":
        return bool(values) is bool(arg)
    if op == "$all":
        return bool(arg) and all(_eq_values(values, item) for item in arg)
    if op == "$size":
        return any(isinstance(value, list) and len(value) == arg for value in values)
    raise InvalidFilterError(f"unknown operator {op!r}")  # parse() rejects these first


def _evaluate(node: Node, record: Mapping[str, Any]) -> bool:
    if isinstance(node, Logical):
        if node.operator == "$and":
            return all(_evaluate(child, record) for child in node.children)
        if node.operator == "$or":
            return any(_evaluate(child, record) for child in node.children)
        return not any(_evaluate(child, record) for child in node.children)
    return _condition(node, record)


def matches(record: Mapping[str, Any], spec: Mapping[str, Any] | Filter | None) -> bool:
    """Whether one record (its metadata, with ``_id``) passes a filter."""
    parsed = parse(spec)
    return True if parsed is None else parsed.matches(record)


# ---------------------------------------------------------------------------------------------
# Indexing and compiling for the core


def indexable_values(record: Mapping[str, Any], path: str) -> tuple[bool, list[Scalar]]:
    """What the field indexes store for one record: whether the path exists, and its scalar
    values (array elements one level deep, like the operators see them)."""
    values = values_at(record, path)
    scalars: list[Scalar] = []
    for candidate in _candidates(values):
        if candidate is None or isinstance(candidate, str | bool | int):
            scalars.append(candidate)
        elif isinstance(candidate, float) and math.isfinite(candidate):
            scalars.append(candidate)
    return bool(values), scalars


Fallback: TypeAlias = Callable[[Filter], Any]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int) or isinstance(value, float) and math.isfinite(value)


def _compile_eq(path: str, value: Any) -> CompiledNode | None:
    if not _scalar(value):
        return None
    if value is None:
        return ("or", [("eq", path, None), ("not", ("exists", path + PRESENCE_SUFFIX))])
    return ("eq", path, value)


def _compile_condition(condition: Condition | Not, indexed: frozenset[str]) -> CompiledNode | None:
    """The core form of one condition, or None when the field indexes cannot answer it."""
    if condition.path not in indexed:
        return None
    if isinstance(condition, Not):
        inner = [_compile_condition(part, indexed) for part in condition.conditions]
        if any(part is None for part in inner):
            return None
        return ("not", ("and", inner))
    path, op, arg = condition.path, condition.operator, condition.value
    if op == "$eq":
        return _compile_eq(path, arg)
    if op == "$ne":
        eq = _compile_eq(path, arg)
        return None if eq is None else ("not", eq)
    if op in COMPARISONS:
        if isinstance(arg, str):
            return None
        lower = (float(arg), op == "$gte") if op in ("$gt", "$gte") else (None, False)
        upper = (float(arg), op == "$lte") if op in ("$lt", "$lte") else (None, False)
        return ("range", path, lower[0], lower[1], upper[0], upper[1])
    if op in ("$in", "$nin"):
        if not all(_scalar(item) for item in arg):
            return None
        plain = [item for item in arg if item is not None]
        node: CompiledNode = ("in", path, plain)
        if any(item is None for item in arg):
            node = ("or", [node, _compile_eq(path, None)])
        return node if op == "$in" else ("not", node)
    if op == "$exists":
        present = ("exists", path + PRESENCE_SUFFIX)
        return present if arg else ("not", present)
    if op == "$all":
        if not arg:
            return ("none",)
        parts = [_compile_eq(path, item) for item in arg]
        if any(part is None for part in parts):
            return None
        return ("and", parts)
    return None  # $size and anything new: evaluated over the stored metadata


def compile_filter(filter_: Filter, indexed: frozenset[str], fallback: Fallback) -> CompiledNode:
    """Compiles a parsed filter into the core's tuple form.

    Args:
        filter_: the parsed filter.
        indexed: the collection's indexed field paths.
        fallback: called with a sub-filter the indexes cannot answer; returns its passing keys
            (a uint64 numpy array or a list of ints). Sibling parts that need it are combined into
            one call, so a filter costs at most one scan per logical level.
    """
    return _compile_node(filter_.root, indexed, fallback)


def _compile_node(node: Node, indexed: frozenset[str], fallback: Fallback) -> CompiledNode:
    if isinstance(node, Logical):
        compiled: list[CompiledNode] = []
        leftovers: list[Node] = []
        for child in node.children:
            if isinstance(child, Logical):
                compiled.append(_compile_node(child, indexed, fallback))
                continue
            part = _compile_condition(child, indexed)
            if part is None:
                leftovers.append(child)
            else:
                compiled.append(part)
        if leftovers:
            if node.operator == "$and" or len(leftovers) == 1:
                inner: Node = leftovers[0] if len(leftovers) == 1 else Logical("$and", tuple(leftovers))
            else:
                inner = Logical("$or", tuple(leftovers))
            keys = ("keys", fallback(Filter(inner)))
            compiled.append(keys)
        if node.operator == "$and":
            return ("and", compiled)
        if node.operator == "$or":
            return ("or", compiled)
        return ("not", ("or", compiled))
    part = _compile_condition(node, indexed)
    if part is None:
        return ("keys", fallback(Filter(node)))
    return part
