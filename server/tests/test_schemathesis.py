"""Schemathesis against the committed OpenAPI document (``server/openapi.json``).

Every documented operation is called in-process (ASGI, no network) with the admin token on
requests generated from the document, valid ones and (the negative mode) invalid ones, and each
answer must be: not a 5xx, a documented status, a documented content type, and a body that
conforms to the documented schema. (The drift test in ``test_native_openapi.py`` keeps the file
equal to the application's own document.)

Each operation gets a fresh server on a data folder made beforehand: a small ``vectors``
collection and a ``tinycolour`` image collection (the tests' model-free image type, see
``conftest.py``) with three records each, a collection token and an insert job. Hooks make the
generated requests reach past the 404s and 400s often enough to test something: path parameters
(``{name}``, ``{record_id}``, ``{token_id}``, ``{job_id}``) and the Ximilar ``collection-id``
header often name those real things, and a generated body is often given a valid core (a vector
of the right size, existing ids...) while the rest of it stays generated.

Bounded and reproducible: :data:`MAX_EXAMPLES` per operation and generation mode, derandomized,
no Hypothesis database, no deadline. Of the Ximilar routes (one handler under fourteen prefixes,
documented identically) two prefixes run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ADMIN, ADMIN_TOKEN, AppFactory, b64
from lookalike import Engine
from lookalike.sdk.registry import Registry
from lookalike_server.auth import TokenStore

COMMITTED = Path(__file__).resolve().parents[1] / "openapi.json"

#: Examples per operation and generation mode (positive, negative), besides the coverage phase.
MAX_EXAMPLES = 100
#: The Ximilar prefixes run (the others are the same handler, documented identically).
XIMILAR_PREFIXES = ("similarity/photos/v2", "image_matching/v2")

VECTORS = "vecs"
IMAGES = "colours"
NDIM = 4
VECTOR = [0.5, 1.0, -0.25, 2.0]
RECORD_IDS = ("a", "b", "c")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_path(COMMITTED).exclude(
    path_regex=r"^/(?!v1/|health$|" + "|".join(f"{prefix}/" for prefix in XIMILAR_PREFIXES) + ")"
)


class Known:
    """Ids made at run time (a token's, a job's), filled in by the ``app`` fixture."""

    token_ids: tuple[str, ...] = ("unknown",)
    job_ids: tuple[str, ...] = ("unknown",)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Often, each path parameter names something that exists."""
    if not path_parameters:
        return st.just(path_parameters)
    known: dict[str, tuple[str, ...]] = {
        "name": (VECTORS, IMAGES),
        "record_id": RECORD_IDS,
        "token_id": Known.token_ids,
        "job_id": Known.job_ids,
    }
    swapped = {
        name: st.one_of(st.just(value), st.sampled_from(known[name]))
        for name, value in path_parameters.items()
        if name in known
    }
    return st.fixed_dictionaries(swapped).map(lambda real: {**path_parameters, **real})


@schema.hook
def flatmap_headers(context: Any, headers: dict[str, Any] | None) -> Any:
    """The Ximilar routes' ``collection-id`` often names a real collection."""
    operation = getattr(context, "operation", None)
    if operation is None or "{method}" not in operation.path:
        return st.just(headers)
    given = dict(headers or {})
    return st.one_of(
        st.just(headers), st.sampled_from((VECTORS, IMAGES)).map(lambda name: {**given, "collection-id": name})
    )


# -- valid cores of bodies ----------------------------------------------------------------------


def _records(body: dict[str, Any], name: str, *, images: bool = True) -> None:
    records = body.get("records")
    if not isinstance(records, list) or not records:
        records = [{}]
    fixed = []
    for position, record in enumerate(records[:5]):
        record = {k: v for k, v in record.items() if not k.startswith("_")} if isinstance(record, dict) else {}
        record["_id"] = RECORD_IDS[position % len(RECORD_IDS)] if position % 2 else f"new{position}"
        if images:
            record.update({"_vector": VECTOR} if name == VECTORS else {"_base64": b64(position, 16)})
        fixed.append(record)
    body["records"] = fixed


def _query(body: dict[str, Any], name: str, key: str) -> None:
    for other in ("query", "vector", "text", "colors"):
        body.pop(other, None)
    if key == "query":
        body["query"] = {"_vector": VECTOR} if name == VECTORS else {"_id": RECORD_IDS[0]}
    elif name == VECTORS:
        body["vector"] = VECTOR
    else:
        body["colors"] = ["#ff0000"]


Core = Callable[[dict[str, Any], str], None]

#: (method, path) -> what makes a generated body valid enough to reach the engine.
CORES: dict[tuple[str, str], Core] = {
    ("POST", "/v1/collections/{name}/records"): _records,
    ("POST", "/v1/collections/{name}/jobs"): _records,
    ("PATCH", "/v1/collections/{name}/records"): lambda body, name: _records(body, name, images=False),
    ("POST", "/v1/collections/{name}/records/get"): lambda body, name: body.update(ids=list(RECORD_IDS[:2])),
    ("POST", "/v1/collections/{name}/records/delete"): lambda body, name: (
        body.pop("filter", None),
        body.update(ids=[RECORD_IDS[0], "missing"]),
    ),
    ("POST", "/v1/collections/{name}/search"): lambda body, name: _query(body, name, "vector"),
    ("POST", "/v1/collections/{name}/rank"): lambda body, name: (
        _query(body, name, "query"),
        body.update(ids=[*RECORD_IDS, "missing"]),
    ),
    ("POST", "/v1/tokens"): lambda body, name: body.update(collection=name),
    ("POST", "/v1/collections"): lambda body, name: body.update(
        {"name": "made_vectors", "type": "vectors", "ndim": NDIM, "config": None, "precision": "f32"}
        if name == VECTORS
        else {"name": "made_images", "type": "tinycolour", "ndim": None, "metric": None, "product_id_field": None}
    ),
}


def _ximilar(body: dict[str, Any], name: str, method: str) -> None:
    """A Ximilar method's arguments, for records that exist (and some that do not)."""
    stored = {"_id": RECORD_IDS[0]}
    if method == "insert":
        _records(body, name)
    elif method in ("get", "delete", "update"):
        body["records"] = [stored, {"_id": "missing", "note": "x"}]
    elif method == "visualRankRecords":
        body.update(query_record=stored, records=[{"_id": id_} for id_ in RECORD_IDS])
    elif method == "text":
        body["query_record"] = {"_text_data": "red"}
    elif method in ("visualKNN", "visualTagsKNN", "nearDuplicates"):
        body["query_record"] = stored
    body.pop("filter", None)


@schema.hook
def flatmap_case(context: Any, case: schemathesis.Case) -> Any:
    """Two thirds of the generated bodies of the routes in :data:`CORES` and of the Ximilar
    routes get a valid core (for one of the real collections): the other fields stay as
    generated."""
    ximilar = "{method}" in case.operation.path
    core = CORES.get((case.method.upper(), case.operation.path))
    if (core is None and not ximilar) or not isinstance(case.body, dict):
        return st.just(case)

    def anchored(name: str | None) -> schemathesis.Case:
        if name is not None:
            body = dict(case.body)
            if core is not None:
                core(body, name)
            else:
                _ximilar(body, name, str((case.path_parameters or {}).get("method")))
                case.headers = {**(case.headers or {}), "collection-id": name}
            case.body = body
            if "name" in (case.path_parameters or {}):
                case.path_parameters = {**case.path_parameters, "name": name}
        return case

    return st.sampled_from((None, VECTORS, IMAGES)).map(anchored)


# -- the server ---------------------------------------------------------------------------------


def _prepare(data: Path, registry: Registry) -> None:
    """The data folder the server starts on: two collections with records, a token."""
    engine = Engine(data, registry=registry)
    try:
        vectors = engine.create_collection(VECTORS, type="vectors", ndim=NDIM, metric="cos", fields_to_index=["tag"])
        vectors.insert([{"_id": id_, "_vector": VECTOR[i:] + VECTOR[:i], "tag": i} for i, id_ in enumerate(RECORD_IDS)])
        images = engine.create_collection(IMAGES, type="tinycolour", store_images=True)
        images.insert([{"_id": id_, "_base64": b64(i), "tag": i} for i, id_ in enumerate(RECORD_IDS)])
    finally:
        engine.close()
    tokens = TokenStore(data / "server.db", ADMIN_TOKEN)
    try:
        _, described = tokens.create(VECTORS, "read", "schemathesis")
        Known.token_ids = (str(described["id"]),)
    finally:
        tokens.close()


@pytest.fixture
def app(app_factory: AppFactory, registry: Registry, tmp_path: Path) -> Iterator[Litestar]:
    data = tmp_path / "api"
    _prepare(data, registry)
    application = app_factory(data=data)
    try:
        with get_client(application) as client:  # starts the app's lifespan (kept for the test)
            job = client.post(
                f"http://testserver/v1/collections/{VECTORS}/jobs",
                json={"records": [{"_id": "job", "_vector": VECTOR}]},
                headers=ADMIN,
            )
            assert job.status_code == 202, job.text
            Known.job_ids = (job.json()["id"],)
        yield application
    finally:
        shutdown_lifespans()  # the app's shutdown: closes the engine on the test's data folder


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, app: Litestar) -> None:
    case.call_and_validate(app=app, headers=ADMIN, checks=CHECKS)
