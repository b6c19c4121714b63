"""Stateful property test of a ``vectors`` collection against a plain model.

Hypothesis drives random sequences of add (new and replacing ids, duplicate batches), insert
(per-record errors, ``if_absent``), update (metadata, null, vectors, unknown ids), remove (by ids
and by filter), search (exact and planner-chosen, with and without filters, offsets, grouping,
batches, by id), rank, count, paging, snapshot, compaction and reopen (after a clean close, or
without a snapshot as after a crash) on an 8-d collection with indexed and non-indexed fields,
for each metric and a lossy graph precision. The model is a dict of records; exact neighbours come from
numpy, filters from the reference evaluator in ``reference.py``.

Ties: records at equal distances may come in any order (the engine breaks ties by its internal
key), so rankings are compared through what ties cannot change: the distances at each rank, the
ids strictly inside a page's distance range, the group-best distances. Integer vectors make
exact ties common.

Deterministic by default (``derandomize``, bounded examples and steps). Set
``LOOKALIKE_STATEFUL_PROFILE=long`` for a longer, randomized run (bench or soak use).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import lookalike
from lookalike.errors import DuplicateIdError, RecordNotFoundError
from lookalike.storage import dumps

from .reference import evaluate

NDIM = 8
IDS = [f"r{i}" for i in range(14)]
INDEXED = ["color", "n", "tags", "items.c"]
#: Fields that are not indexed are answered by scanning the metadata.
PATHS = [*INDEXED, "size", "spec.kind", "spec.level", "flag", "product", "_id", "absent"]

#: (metric, precision) of the collection: the graph may be lossy, exact answers never are.
KINDS = [("l2sq", "f32"), ("l2sq", "f16"), ("cos", "f32"), ("cos", "i8"), ("ip", "f32"), ("ip", "f16")]

PROFILES = {
    "default": settings(
        max_examples=100,
        stateful_step_count=50,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ),
    "long": settings(
        max_examples=500,
        stateful_step_count=80,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ),
}

# -- strategies --------------------------------------------------------------------------------

COMPONENTS = st.integers(-3, 3)
VECTORS = st.lists(COMPONENTS, min_size=NDIM, max_size=NDIM).filter(any)
#: Refused by the batch API one by one: a wrong length, or zero (no direction for cosine).
BAD_VECTORS = st.one_of(st.lists(COMPONENTS, min_size=NDIM - 1, max_size=NDIM - 1), st.just([0] * NDIM))
NUMBERS = st.one_of(st.integers(-2, 3), st.sampled_from([-0.0, 0.5, 2.0]))
SCALARS = st.one_of(st.sampled_from(["red", "blue", "a", "1"]), NUMBERS, st.booleans(), st.none())

METADATA = st.fixed_dictionaries(
    {},
    optional={
        "color": st.one_of(st.sampled_from(["red", "green", "blue"]), st.none()),
        "n": NUMBERS,
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "items": st.lists(st.fixed_dictionaries({}, optional={"c": st.sampled_from(["red", "blue"])}), max_size=2),
        "size": st.one_of(st.integers(0, 3), st.just("3"), st.none()),
        "spec": st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["x", "y"]), "level": NUMBERS}),
        "flag": st.booleans(),
        "product": st.sampled_from(["p0", "p1", "p2", 7]),
    },
)
#: Metadata an update may set: any of the fields, null included ("a field set to None stays").
UPDATES = st.dictionaries(
    st.sampled_from(["color", "n", "tags", "size", "spec", "flag", "product", "extra"]),
    st.one_of(SCALARS, st.lists(st.sampled_from(["a", "b"]), max_size=2)),
    max_size=3,
)


def _condition() -> st.SearchStrategy[Any]:
    bound = st.one_of(NUMBERS, st.sampled_from(["a", "m", "1"]))
    lists = st.lists(SCALARS, max_size=3)
    return st.one_of(
        SCALARS,
        st.fixed_dictionaries({"$eq": SCALARS}),
        st.fixed_dictionaries({"$ne": SCALARS}),
        st.fixed_dictionaries({"$gt": bound}),
        st.fixed_dictionaries({"$gte": NUMBERS, "$lt": NUMBERS}),
        st.fixed_dictionaries({"$lte": bound}),
        st.fixed_dictionaries({"$in": lists}),
        st.fixed_dictionaries({"$nin": lists}),
        st.fixed_dictionaries({"$all": st.lists(st.sampled_from(["a", "b", "red"]), max_size=2)}),
        st.fixed_dictionaries({"$exists": st.booleans()}),
        st.fixed_dictionaries({"$size": st.integers(0, 2)}),
        st.fixed_dictionaries({"$not": st.fixed_dictionaries({"$in": lists})}),
        st.fixed_dictionaries({"$in": st.lists(st.sampled_from(IDS), max_size=4)}),
    )


def _filters() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(st.sampled_from(PATHS), _condition(), min_size=1, max_size=2)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$nor": st.lists(inner, min_size=1, max_size=2)}),
        ),
        max_leaves=4,
    )


# A deferred strategy keeps Hypothesis's repr of it short.
FILTERS = st.deferred(_filters)
MAYBE_FILTERS = st.one_of(st.none(), FILTERS)


# -- the reference -----------------------------------------------------------------------------


def _strictly_equal(a: Any, b: Any) -> bool:
    """JSON equality that tells 1 from 1.0 from True, and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def _distances(metric: str, base: np.ndarray, query: np.ndarray) -> np.ndarray:
    base = base.astype(np.float64)
    query = query.astype(np.float64)
    if metric == "l2sq":
        return np.asarray(((base - query) ** 2).sum(axis=1))
    if metric == "ip":
        return np.asarray(1.0 - base @ query)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    return np.asarray(np.maximum(0.0, 1.0 - unit @ (query / np.linalg.norm(query))))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


class Model:
    """What the collection should hold: id -> (vector, metadata)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.records: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def doc(self, id_: str) -> dict[str, Any]:
        return {"_id": id_, **self.records[id_][1]}

    def matching(self, spec: dict[str, Any] | None) -> list[str]:
        return [id_ for id_ in self.records if spec is None or evaluate(self.doc(id_), spec)]

    def ranked(self, query: np.ndarray, spec: dict[str, Any] | None) -> list[tuple[float, str]]:
        ids = self.matching(spec)
        if not ids:
            return []
        distances = _distances(self.metric, np.stack([self.records[i][0] for i in ids]), query)
        return sorted(zip(distances.tolist(), ids, strict=True))

    def group_of(self, id_: str) -> str:
        product = self.records[id_][1].get("product")
        # As the engine groups: by the product's JSON, a record without one on its own.
        return f"own:{id_}" if product is None else dumps(product)


# -- the machine -------------------------------------------------------------------------------


class CollectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="lookalike-stateful-"))
        self.engine = lookalike.Engine(self.folder)
        self.collection: lookalike.Collection
        self.model: Model
        self.recent_filters: list[dict[str, Any]] = []

    @initialize(
        kind=st.sampled_from(KINDS),
        ids=st.lists(st.sampled_from(IDS), unique=True, max_size=len(IDS)),
        vectors=st.lists(VECTORS, min_size=len(IDS), max_size=len(IDS)),
        metadata=st.lists(METADATA, min_size=len(IDS), max_size=len(IDS)),
    )
    def create(
        self, kind: tuple[str, str], ids: list[str], vectors: list[list[int]], metadata: list[dict[str, Any]]
    ) -> None:
        """The collection, and a first batch so that most steps meet a populated collection."""
        metric, precision = kind
        self.collection = self.engine.create_collection(
            "c",
            ndim=NDIM,
            metric=metric,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            fields_to_index=INDEXED,
            product_id_field="product",
        )
        self.model = Model(metric)
        self.add(ids, vectors, metadata)

    def teardown(self) -> None:
        try:
            self.engine.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _remember(self, spec: dict[str, Any] | None) -> None:
        if spec is not None:
            self.recent_filters = [spec, *self.recent_filters[:3]]

    # -- writes --------------------------------------------------------------------------------

    @rule(
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=5),
        vectors=st.lists(VECTORS, min_size=5, max_size=5),
        metadata=st.lists(METADATA, min_size=5, max_size=5),
    )
    def add(self, ids: list[str], vectors: list[list[int]], metadata: list[dict[str, Any]]) -> None:
        batch = [{"_id": id_, "_vector": vectors[i], **metadata[i]} for i, id_ in enumerate(ids)]
        if len(set(ids)) < len(ids):
            try:
                self.collection.add(batch)
            except DuplicateIdError:
                return  # nothing written: the invariants check it
            raise AssertionError("a batch with a repeated _id was accepted")
        assert self.collection.add(batch) == ids
        for i, id_ in enumerate(ids):
            self.model.records[id_] = (np.asarray(vectors[i], dtype=np.float32), dict(metadata[i]))

    @rule(
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=4),
        vectors=st.lists(st.one_of(VECTORS, VECTORS, VECTORS, BAD_VECTORS), min_size=4, max_size=4),
        metadata=st.lists(METADATA, min_size=4, max_size=4),
        if_absent=st.booleans(),
    )
    def insert(self, ids: list[str], vectors: list[list[Any]], metadata: list[dict[str, Any]], if_absent: bool) -> None:
        """The batch API: bad records and repeats are reported one by one, the others written;
        with `if_absent`, stored ids are skipped instead of replaced."""
        batch = [{"_id": id_, "_vector": vectors[i], **metadata[i]} for i, id_ in enumerate(ids)]
        result = self.collection.insert(batch, if_absent=if_absent)
        expected_errors: list[tuple[int, str]] = []
        written: list[str] = []
        seen: set[str] = set()
        for position, id_ in enumerate(ids):
            if id_ in seen:
                expected_errors.append((position, "duplicate_id"))
                continue
            seen.add(id_)
            if len(vectors[position]) != NDIM:
                expected_errors.append((position, "dimension_mismatch"))
            elif not any(vectors[position]) and self.model.metric == "cos":
                expected_errors.append((position, "invalid_vector"))
            elif if_absent and id_ in self.model.records:
                expected_errors.append((position, "duplicate_id"))
            else:
                written.append(id_)
                self.model.records[id_] = (np.asarray(vectors[position], dtype=np.float32), dict(metadata[position]))
        assert result.ids == written, (result.ids, written)
        assert [(e.position, e.code) for e in result.errors] == expected_errors, result.errors

    @rule(
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
        changes=st.lists(UPDATES, min_size=3, max_size=3),
        vector=st.one_of(st.none(), VECTORS),
    )
    def update(self, ids: list[str], changes: list[dict[str, Any]], vector: list[int] | None) -> None:
        batch: list[dict[str, Any]] = [{"_id": id_, **changes[i]} for i, id_ in enumerate(ids)]
        if vector is not None:
            batch[0]["_vector"] = vector
        if any(id_ not in self.model.records for id_ in ids):
            try:
                self.collection.update(batch)
            except RecordNotFoundError:
                return  # all or nothing
            raise AssertionError("an update of an unknown _id was accepted")
        assert self.collection.update(batch) == len(ids)
        for i, id_ in enumerate(ids):
            old_vector, data = self.model.records[id_]
            new_vector = np.asarray(vector, dtype=np.float32) if i == 0 and vector is not None else old_vector
            self.model.records[id_] = (new_vector, data | changes[i])

    @rule(ids=st.lists(st.sampled_from([*IDS, "unknown"]), max_size=4))
    def remove_ids(self, ids: list[str]) -> None:
        expected = {id_ for id_ in ids if id_ in self.model.records}
        assert self.collection.remove(ids) == len(expected)
        for id_ in expected:
            del self.model.records[id_]
        assert self.collection.get(sorted(expected)) == []

    @rule(spec=FILTERS)
    def remove_filter(self, spec: dict[str, Any]) -> None:
        expected = self.model.matching(spec)
        assert self.collection.remove(filter=spec) == len(expected), spec
        for id_ in expected:
            del self.model.records[id_]
        assert self.collection.count(spec) == 0

    # -- durability ----------------------------------------------------------------------------

    @rule(action=st.sampled_from(["reopen", "reopen after crash", "snapshot", "compact"]))
    def maintain(self, action: str) -> None:
        """Reopen the engine on the same folder (after a clean close, or with no snapshot at
        close as after a crash: the index then comes back from the last snapshot plus the log,
        or from the database), take a snapshot, or compact."""
        if action == "snapshot":
            self.collection.snapshot()
        elif action == "compact":
            self.collection.compact()
        else:
            if action == "reopen after crash":
                self.collection.close(snapshot=False)
            self.engine.close()
            self.engine = lookalike.Engine(self.folder)
            self.collection = self.engine.collection("c")
            self.check_everything()

    # -- reads ---------------------------------------------------------------------------------

    def _check_hits(
        self, hits: Sequence[dict[str, Any]], ranked: list[tuple[float, str]], limit: int, offset: int, exact: bool
    ) -> None:
        reference = {id_: distance for distance, id_ in ranked}
        ids = [hit["_id"] for hit in hits]
        assert len(set(ids)) == len(ids), ids
        # Results come whenever enough records match; every hit matches, at its own distance.
        assert len(hits) == min(limit, max(0, len(ranked) - offset)), (len(hits), limit, offset, len(ranked))
        for hit in hits:
            assert hit["_id"] in reference, hit
            assert _close(hit["distance"], reference[hit["_id"]]), (hit, reference[hit["_id"]])
            expected = {k: v for k, v in self.model.doc(hit["_id"]).items()}
            shown = {k: v for k, v in hit.items() if k != "distance"}
            assert _strictly_equal(shown, expected), (shown, expected)
        distances = [hit["distance"] for hit in hits]
        assert distances == sorted(distances)
        if not exact or not hits:
            return
        window = [distance for distance, _ in ranked[offset : offset + len(hits)]]
        assert all(_close(a, b) for a, b in zip(distances, window, strict=True)), (distances, window)
        low, high = window[0], window[-1]
        # Records strictly inside the page's distance range (tied with neither end) are all there.
        inside = {
            id_
            for distance, id_ in ranked
            if low < distance < high and not (_close(distance, low) or _close(distance, high))
        }
        assert inside <= set(ids), (inside, ids)

    @rule(
        query=VECTORS,
        spec=MAYBE_FILTERS,
        limit=st.integers(1, 6),
        offset=st.integers(0, 4),
        exact=st.booleans(),
    )
    def search(self, query: list[int], spec: dict[str, Any] | None, limit: int, offset: int, exact: bool) -> None:
        self._remember(spec)
        vector = np.asarray(query, dtype=np.float32)
        ranked = self.model.ranked(vector, spec)
        hits = self.collection.search(vector, limit=limit, offset=offset, filter=spec, exact=exact)
        self._check_hits(hits, ranked, limit, offset, exact)
        if exact:
            # Pages are cut from one ranking (ties broken the same way every time).
            whole = self.collection.search(vector, limit=offset + limit, filter=spec, exact=True)
            assert [h["_id"] for h in whole[offset:]] == [h["_id"] for h in hits]

    @precondition(lambda self: bool(self.recent_filters))
    @rule(which=st.integers(0, 3), query=VECTORS, limit=st.integers(1, 6))
    def search_again(self, which: int, query: list[int], limit: int) -> None:
        """A filter seen before, after the writes since (the core caches filter results)."""
        spec = self.recent_filters[which % len(self.recent_filters)]
        vector = np.asarray(query, dtype=np.float32)
        for exact in (True, False):
            hits = self.collection.search(vector, limit=limit, filter=spec, exact=exact)
            self._check_hits(hits, self.model.ranked(vector, spec), limit, 0, exact)
        assert self.collection.count(spec) == len(self.model.matching(spec))

    @precondition(lambda self: bool(self.model.records))
    @rule(data=st.data())
    def search_by_id(self, data: st.DataObject) -> None:
        id_ = data.draw(st.sampled_from(sorted(self.model.records)))
        vector = self.model.records[id_][0]
        hits = self.collection.search(id=id_, limit=3, exact=True)
        self._check_hits(hits, self.model.ranked(vector, None), 3, 0, True)

    @rule(queries=st.lists(VECTORS, min_size=1, max_size=3), spec=MAYBE_FILTERS, limit=st.integers(1, 5))
    def search_batch(self, queries: list[list[int]], spec: dict[str, Any] | None, limit: int) -> None:
        matrix = np.asarray(queries, dtype=np.float32)
        batch = self.collection.search_vectors(matrix, limit=limit, filter=spec, exact=True)
        ids = batch.ids
        for row, query in enumerate(matrix):
            count = int(batch.counts[row])
            hits = [
                {"_id": id_, **self.model.records[id_][1], "distance": float(d)}
                for id_, d in zip(ids[row], batch.distances[row][:count], strict=True)
            ]
            self._check_hits(hits, self.model.ranked(query, spec), limit, 0, True)

    @rule(
        query=VECTORS,
        spec=MAYBE_FILTERS,
        limit=st.integers(1, 4),
        offset=st.integers(0, 2),
        group_size=st.integers(1, 3),
    )
    def search_grouped(
        self, query: list[int], spec: dict[str, Any] | None, limit: int, offset: int, group_size: int
    ) -> None:
        vector = np.asarray(query, dtype=np.float32)
        ranked = self.model.ranked(vector, spec)
        groups: dict[str, list[float]] = {}
        for distance, id_ in ranked:
            groups.setdefault(self.model.group_of(id_), []).append(distance)
        hits = self.collection.search(
            vector, limit=limit, offset=offset, filter=spec, group_by="product", group_size=group_size, exact=True
        )
        got: list[tuple[str, list[float]]] = []
        reference = {id_: distance for distance, id_ in ranked}
        for hit in hits:
            key = self.model.group_of(hit["_id"])
            product = self.model.records[hit["_id"]][1].get("product")
            assert _strictly_equal(hit["_group"], hit["_id"] if product is None else product), hit
            assert _close(hit["distance"], reference[hit["_id"]])
            if not got or got[-1][0] != key:
                assert key not in {g for g, _ in got}, "a group's hits come together"
                got.append((key, []))
            got[-1][1].append(hit["distance"])
        # Tie-proof: the best distances of the groups at these ranks, and the distances in each.
        bests = sorted(distances[0] for distances in groups.values())[offset : offset + limit]
        assert len(got) == len(bests), (got, bests)
        assert all(_close(g[1][0], b) for g, b in zip(got, bests, strict=True)), (got, bests)
        for key, distances in got:
            expected = groups[key][:group_size]
            assert len(distances) == len(expected)
            assert all(_close(a, b) for a, b in zip(distances, expected, strict=True)), (key, distances, expected)

    @rule(ids=st.lists(st.sampled_from([*IDS, "unknown"]), max_size=6), query=VECTORS)
    def rank(self, ids: list[str], query: list[int]) -> None:
        """Given records ranked against a query: the stored ones, at their exact distances."""
        vector = np.asarray(query, dtype=np.float32)
        wanted = [id_ for id_ in dict.fromkeys(ids) if id_ in self.model.records]
        ranked = [(d, i) for d, i in self.model.ranked(vector, None) if i in wanted]
        hits = self.collection.rank(ids, vector)
        self._check_hits(hits, ranked, len(wanted) or 1, 0, True)

    @rule(spec=FILTERS)
    def count(self, spec: dict[str, Any]) -> None:
        self._remember(spec)
        assert self.collection.count(spec) == len(self.model.matching(spec)), spec

    @rule(spec=MAYBE_FILTERS, limit=st.integers(1, 5))
    def page_records(self, spec: dict[str, Any] | None, limit: int) -> None:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = self.collection.records(filter=spec, limit=limit, cursor=cursor)
            assert len(page.records) <= limit
            for record in page.records:
                assert _strictly_equal(record, self.model.doc(record["_id"])), record
            seen += [record["_id"] for record in page.records]
            if page.cursor is None:
                break
            cursor = page.cursor
        assert sorted(seen) == sorted(self.model.matching(spec)), spec

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def records_are_the_models(self) -> None:
        """Count, get (unknown and removed ids left out) and the stored vectors."""
        if not hasattr(self, "model"):
            return
        assert len(self.collection) == len(self.model.records)
        asked = [*IDS, "unknown"]
        got = self.collection.get(asked)
        assert [r["_id"] for r in got] == [id_ for id_ in asked if id_ in self.model.records]
        for record in got:
            assert _strictly_equal(record, self.model.doc(record["_id"])), record
        for id_, (vector, _) in self.model.records.items():
            stored = self.collection.get_vector(id_)
            expected = vector / np.linalg.norm(vector) if self.model.metric == "cos" else vector
            np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)

    def check_everything(self) -> None:
        """After a reopen: the records, their vectors, the field indexes of every path."""
        self.records_are_the_models()
        assert sorted(r["_id"] for r in self.collection) == sorted(self.model.records)
        for path in PATHS:
            for spec in ({path: {"$exists": True}}, {path: None}, {path: "red"}, {path: {"$gte": 0}}):
                assert self.collection.count(spec) == len(self.model.matching(spec)), spec


TestCollectionStateMachine = CollectionMachine.TestCase
TestCollectionStateMachine.settings = PROFILES[os.environ.get("LOOKALIKE_STATEFUL_PROFILE", "default")]
