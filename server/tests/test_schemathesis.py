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

import contextlib
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

#: An answer is documented: its status, its content type and its body.
DOCUMENTED = [status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = [not_a_server_error, *DOCUMENTED]

schema = schemathesis.openapi.from_path(COMMITTED).exclude(
    path_regex=r"^/(?!v1/|health$|" + "|".join(f"{prefix}/" for prefix in XIMILAR_PREFIXES) + ")"
)


class Known:
    """What is made at run time (a token, a job), filled in by :func:`serving`."""

    token_ids: tuple[str, ...] = ("unknown",)
    job_ids: tuple[str, ...] = ("unknown",)
    read_token = ""


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


def _delete(body: dict[str, Any], name: str) -> None:
    body.pop("filter", None)
    body["ids"] = [RECORD_IDS[0], "missing"]


def _rank(body: dict[str, Any], name: str) -> None:
    _query(body, name, "query")
    body["ids"] = [*RECORD_IDS, "missing"]


Core = Callable[[dict[str, Any], str], None]

#: (method, path) -> what makes a generated body valid enough to reach the engine.
CORES: dict[tuple[str, str], Core] = {
    ("POST", "/v1/collections/{name}/records"): _records,
    ("POST", "/v1/collections/{name}/jobs"): _records,
    ("PATCH", "/v1/collections/{name}/records"): lambda body, name: _records(body, name, images=False),
    ("POST", "/v1/collections/{name}/records/get"): lambda body, name: body.update(ids=list(RECORD_IDS[:2])),
    ("POST", "/v1/collections/{name}/records/delete"): _delete,
    ("POST", "/v1/collections/{name}/search"): lambda body, name: _query(body, name, "vector"),
    ("POST", "/v1/collections/{name}/rank"): _rank,
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
    """The data folder the server starts on: two collections with records, a read token."""
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
        Known.read_token, described = tokens.create(VECTORS, "read", "schemathesis")
        Known.token_ids = (str(described["id"]),)
    finally:
        tokens.close()


@contextlib.contextmanager
def serving(app_factory: AppFactory, registry: Registry, data: Path, **settings: Any) -> Iterator[Litestar]:
    """An application on a prepared data folder, started (schemathesis runs its lifespan) with
    an insert job done, and shut down (its engine closed) at the end."""
    _prepare(data, registry)
    application = app_factory(data=data, **settings)
    try:
        with get_client(application) as client:
            job = client.post(
                f"http://testserver/v1/collections/{VECTORS}/jobs",
                json={"records": [{"_id": "job", "_vector": VECTOR}]},
                headers=ADMIN,
            )
            assert job.status_code == 202, job.text
            Known.job_ids = (job.json()["id"],)
        yield application
    finally:
        shutdown_lifespans()


@pytest.fixture
def app(app_factory: AppFactory, registry: Registry, tmp_path: Path) -> Iterator[Litestar]:
    with serving(app_factory, registry, tmp_path / "api") as application:
        yield application


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


# -- what the runs found: answers the document did not describe ---------------------------------

#: Every operation of the document, for explicit cases.
DOCUMENT = schemathesis.openapi.from_path(COMMITTED)
XIMILAR_ROUTE = f"/{XIMILAR_PREFIXES[0]}/{{method}}"


def conforms(
    app: Litestar, method: str, path: str, expect: int, *, headers: dict[str, str] | None = None, **parts: Any
) -> schemathesis.Response:
    """Sends one explicit request and runs the same checks as :func:`test_api` on the answer
    (its status documented, its body and content type as documented), which has ``expect``
    (a 507, a full disk, is a documented answer here, not a server error)."""
    case = DOCUMENT[path][method].Case(headers={**ADMIN, **(headers or {})}, **parts)
    response = case.call_and_validate(app=app, checks=DOCUMENTED if expect == 507 else CHECKS)
    assert response.status_code == expect, response.text
    return response


def ximilar(app: Litestar, method: str, expect: int, body: Any = None, **headers: str) -> dict[str, Any]:
    found = conforms(
        app,
        "POST",
        XIMILAR_ROUTE,
        expect,
        path_parameters={"method": method},
        headers={"collection-id": VECTORS, **headers},
        body={} if body is None else body,
    )
    answer: dict[str, Any] = found.json()
    assert answer["status"]["code"] == expect, answer
    return answer


def _vectors(*ids: str) -> list[dict[str, Any]]:
    return [{"_id": id_, "_vector": VECTOR} for id_ in ids]


def test_every_ximilar_answer_is_documented(app: Litestar) -> None:
    """The Ximilar routes answer with Ximilar's codes as the HTTP status; the document had only
    200 and 400 (with the wrong body), so 401 and every other answer failed the checks."""
    assert ximilar(app, "insert", 210, {"records": _vectors("x1", "x2")})["records"] == [{"_id": "x1"}, {"_id": "x2"}]
    assert ximilar(app, "insert", 211, {"records": _vectors("x3", "x1")})["skipped_records"]
    ximilar(app, "insert", 411, {"records": _vectors("x1")})
    ximilar(app, "get", 206, {"records": [{"_id": "x1"}, {"_id": "missing"}]})
    ximilar(app, "get", 404, {"records": [{"_id": "missing"}]})
    ximilar(app, "update", 206, {"records": [{"_id": "x2", "note": "n"}, {"_id": "missing"}]})
    ximilar(app, "delete", 220, {"records": [{"_id": "x3"}]})
    ximilar(app, "visualKNN", 404, {"query_record": {"_id": "missing"}})
    ximilar(app, "visualKNN", 200, {"query_record": {"_id": "x1"}, "k": 2})
    ximilar(app, "allRecords", 200, {}, **{"collection-id": IMAGES})
    assert ximilar(app, "nope", 404)["code"] == "unknown_method"
    assert ximilar(app, "ping", 401, Authorization="Token wrong")["detail"] == "Invalid token."
    assert ximilar(app, "insert", 403, {"records": _vectors("x4")}, Authorization=f"Token {Known.read_token}")
    assert ximilar(app, "get", 400, {"records": "x"})["code"] == "invalid_request"
    conforms(app, "POST", XIMILAR_ROUTE, 400, path_parameters={"method": "get"}, body={})  # no collection-id


def test_ximilar_capacity_and_body_limits_are_documented(
    app_factory: AppFactory, registry: Registry, tmp_path: Path
) -> None:
    with serving(app_factory, registry, tmp_path / "api", ximilar_max_records=3, max_body_bytes=4096) as app:
        ximilar(app, "insert", 412, {"records": _vectors("y1", "y2", "y3")})
        ximilar(app, "insert", 413, {"records": _vectors("z") * 200})
        conforms(
            app,
            "POST",
            "/v1/collections/{name}/search",
            413,
            path_parameters={"name": VECTORS},
            body={"vector": VECTOR * 300},
        )


def test_a_full_disk_is_documented(app_factory: AppFactory, registry: Registry, tmp_path: Path) -> None:
    """507 ``storage_full`` on the write routes of both APIs (a collection at its storage cap)."""
    records = "/v1/collections/{name}/records"
    with serving(app_factory, registry, tmp_path / "api", max_collection_bytes=96 * 1024) as app:
        for start in range(0, 5000, 20):
            batch = [{"_id": f"f{start + i}", "_vector": VECTOR, "note": "n" * 300} for i in range(20)]
            case = DOCUMENT[records]["POST"].Case(
                headers=ADMIN, path_parameters={"name": VECTORS}, body={"records": batch}
            )
            if case.call_and_validate(app=app, checks=DOCUMENTED).status_code == 507:
                break
        else:
            raise AssertionError("the storage cap never filled")
        refused = [{**record, "note": "n" * 300} for record in _vectors(*(f"g{i}" for i in range(40)))]
        assert ximilar(app, "insert", 507, {"records": refused})["code"] == "storage_full"
        patch = {"records": [{"_id": f"f{i}", "note": "m" * 4000} for i in range(40)]}
        conforms(app, "PATCH", records, 507, path_parameters={"name": VECTORS}, body=patch)


def test_a_stored_image_answers_with_its_media_type(app: Litestar) -> None:
    """The image route answered image/png where the document said application/octet-stream."""
    found = conforms(
        app,
        "GET",
        "/v1/collections/{name}/records/{record_id}/image",
        200,
        path_parameters={"name": IMAGES, "record_id": RECORD_IDS[0]},
    )
    assert found.headers["content-type"] == ["image/png"]
