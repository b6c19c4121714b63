"""A deliberately plain MongoDB filter evaluator, written apart from lookalike.filters, that the
tests use as the brute-force reference."""

from __future__ import annotations

from typing import Any


def _walk(doc: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [doc]
    head, rest = parts[0], parts[1:]
    out: list[Any] = []
    if isinstance(doc, dict):
        if head in doc:
            out += _walk(doc[head], rest)
    elif isinstance(doc, list):
        if head.isdigit() and int(head) < len(doc):
            out += _walk(doc[int(head)], rest)
        for item in doc:
            if isinstance(item, dict) and head in item:
                out += _walk(item[head], rest)
    return out


def _same(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is bool and type(b) is bool and a == b
    number = (int, float)
    if isinstance(a, number) and isinstance(b, number):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _expand(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.append(v)
        if isinstance(v, list):
            out.extend(v)
    return out


def _eq(values: list[Any], target: Any) -> bool:
    if target is None and not values:
        return True
    return any(_same(v, target) for v in _expand(values))


def _cmp(v: Any, op: str, bound: Any) -> bool:
    if isinstance(bound, str):
        ok = isinstance(v, str)
    else:
        ok = isinstance(v, (int, float)) and type(v) is not bool
    if not ok:
        return False
    return {"$gt": v > bound, "$gte": v >= bound, "$lt": v < bound, "$lte": v <= bound}[op]


def _field(doc: dict[str, Any], path: str, spec: Any) -> bool:
    values = _walk(doc, path.split("."))
    is_ops = isinstance(spec, dict) and spec and all(k.startswith("$") for k in spec)
    if not is_ops:
        return _eq(values, spec)
    for op, arg in spec.items():
        if op == "$eq":
            ok = _eq(values, arg)
        elif op == "$ne":
            ok = not _eq(values, arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = any(_cmp(v, op, arg) for v in _expand(values))
        elif op == "$in":
            ok = any(_eq(values, a) for a in arg)
        elif op == "$nin":
            ok = not any(_eq(values, a) for a in arg)
        elif op == "$exists":
            ok = bool(values) == bool(arg)
        elif op == "$all":
            ok = len(arg) > 0 and all(_eq(values, a) for a in arg)
        elif op == "$size":
            ok = any(isinstance(v, list) and len(v) == arg for v in values)
        elif op == "$not":
            ok = not _field(doc, path, arg)
        else:
            raise ValueError(op)
        if not ok:
            return False
    return True


def evaluate(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    for key, value in spec.items():
        if key == "$and":
            ok = all(evaluate(doc, s) for s in value)
        elif key == "$or":
            ok = any(evaluate(doc, s) for s in value)
        elif key == "$nor":
            ok = not any(evaluate(doc, s) for s in value)
        else:
            ok = _field(doc, key, value)
        if not ok:
            return False
    return True
