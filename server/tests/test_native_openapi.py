"""The committed OpenAPI document (``server/openapi.json``) matches the application.

When this fails after a change to a route or a schema, regenerate the file::

    python -m lookalike_server.openapi > server/openapi.json
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from test_native_auth import ROUTES, Route

from conftest import ADMIN
from lookalike_server.openapi import render

COMMITTED = Path(__file__).resolve().parents[1] / "openapi.json"
REGENERATE = "python -m lookalike_server.openapi > server/openapi.json"


def test_committed_schema_is_current() -> None:
    assert COMMITTED.exists(), f"server/openapi.json is missing: {REGENERATE}"
    current = render()
    committed = COMMITTED.read_text(encoding="utf-8")
    if committed != current:
        old, new = json.loads(committed), json.loads(current)
        added = sorted(set(new["paths"]) - set(old["paths"]))
        removed = sorted(set(old["paths"]) - set(new["paths"]))
        changed = sorted(p for p in set(old["paths"]) & set(new["paths"]) if old["paths"][p] != new["paths"][p])
        schemas = sorted(
            name
            for name in set(old["components"]["schemas"]) | set(new["components"]["schemas"])
            if old["components"]["schemas"].get(name) != new["components"]["schemas"].get(name)
        )
        raise AssertionError(
            f"server/openapi.json is out of date (paths added {added}, removed {removed}, changed {changed}; "
            f"schemas changed {schemas}); regenerate it: {REGENERATE}"
        )


def test_every_native_route_is_documented() -> None:
    paths = json.loads(render())["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item if path.startswith("/v1/")}
    assert documented == {(route.method, route.path) for route in ROUTES}
    for path, item in paths.items():
        if not path.startswith("/v1/"):
            continue
        for operation in item.values():
            assert operation["description"], path
            errors = {code for code in operation["responses"] if code.startswith("4")}
            assert {"400", "401", "403", "404"} <= errors, path
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }


def test_served_at_docs(client: TestClient[Litestar]) -> None:
    response = client.get("/docs/openapi.json", headers=ADMIN)
    assert response.status_code == 200
    assert "/v1/collections/{name}/search" in response.json()["paths"]


# -- the document says what the server accepts ---------------------------------------------------

DOCUMENT = json.loads(render())
SCHEMAS = DOCUMENT["components"]["schemas"]


def _request_schema(method: str, path: str) -> dict[str, Any]:
    content = DOCUMENT["paths"][path][method.lower()]["requestBody"]["content"]
    reference = next(iter(content.values()))["schema"]["$ref"]
    schema: dict[str, Any] = SCHEMAS[reference.rsplit("/", 1)[1]]
    return schema


def _item(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The schema of the list items (of type ``kind``) of a property, optional or not."""
    arrays = (
        [schema] if schema.get("type") == "array" else [s for s in schema.get("oneOf", []) if s.get("type") == "array"]
    )
    items: dict[str, Any] = arrays[0]["items"]
    return next((s for s in items.get("oneOf", []) if s.get("type") == kind), items)


@pytest.mark.parametrize(
    "route", [route for route in ROUTES if route.json is not None], ids=lambda route: f"{route.method} {route.path}"
)
def test_request_bodies_refuse_unknown_fields(client: TestClient[Litestar], route: Route) -> None:
    """Unknown fields are refused (400); the document allowed them, so schemathesis sent them
    as valid data."""
    assert _request_schema(route.method, route.path)["additionalProperties"] is False
    response = replace(route, json={**route.json, "surprise": 1}).call(client, ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_body" and "surprise" in response.json()["message"]


#: (route, body, component, property, type of the items, a constraint on the items the server enforces)
ITEM_CONSTRAINTS = [
    ("POST", "/v1/collections/a/records/get", {"ids": [""]}, "GetBody", "ids", "string", {"minLength": 1}),
    (
        "POST",
        "/v1/collections/a/records/delete",
        {"ids": ["x" * 1025]},
        "DeleteBody",
        "ids",
        "string",
        {"maxLength": 1024},
    ),
    (
        "POST",
        "/v1/collections/a/rank",
        {"query": {"_id": "a"}, "ids": [""]},
        "RankBody",
        "ids",
        "string",
        {"minLength": 1},
    ),
    (
        "POST",
        "/v1/collections/a/search",
        {"vector": [1e39, 0.0]},
        "SearchBody",
        "vector",
        "number",
        {"maximum": 3.4e38},
    ),
    (
        "POST",
        "/v1/collections/a/search",
        {"query": {"_vector": [-1e39]}},
        "QueryRecord",
        "_vector",
        "number",
        {"minimum": -3.4e38},
    ),
    (
        "POST",
        "/v1/collections/a/search",
        {"colors": ["red"]},
        "SearchBody",
        "colors",
        "string",
        {"pattern": "^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$"},
    ),
    (
        "POST",
        "/v1/collections",
        {"name": "n", "ndim": 2, "fields_to_index": [""]},
        "CollectionCreate",
        "fields_to_index",
        "string",
        {"minLength": 1},
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "component", "field", "kind", "constraint"), ITEM_CONSTRAINTS)
def test_list_items_keep_their_constraints(
    client: TestClient[Litestar],
    method: str,
    path: str,
    body: dict[str, Any],
    component: str,
    field: str,
    kind: str,
    constraint: dict[str, Any],
) -> None:
    """The server refuses a list item out of its bounds; the document lost the bounds of list
    items (and of union members), so schemathesis sent such items as valid data."""
    item = _item(SCHEMAS[component]["properties"][field], kind)
    assert constraint.items() <= item.items(), item
    response = client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "invalid_body", response.text


def test_an_upload_needs_a_file(client: TestClient[Litestar]) -> None:
    """The document allowed an empty list of files (which multipart cannot even send)."""
    assert _request_schema("POST", "/v1/collections/{name}/records/upload")["properties"]["file"]["minItems"] == 1
    response = client.post("/v1/collections/a/records/upload", data={"_id": "x"}, files=[], headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "invalid_body", response.text


#: Routes that write to the disk: a full disk answers 507, a read-only one 503.
WRITE_ROUTES = [
    ("POST", "/v1/collections"),
    ("DELETE", "/v1/collections/{name}"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{token_id}"),
    ("POST", "/v1/collections/{name}/records"),
    ("POST", "/v1/collections/{name}/records/upload"),
    ("PATCH", "/v1/collections/{name}/records"),
    ("POST", "/v1/collections/{name}/records/delete"),
]


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_write_routes_document_a_full_or_read_only_disk(method: str, path: str) -> None:
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    for status in ("503", "507"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_health_needs_no_token(client: TestClient[Litestar]) -> None:
    """The document's global security scheme made ``/health`` look as if it needed a token."""
    assert DOCUMENT["paths"]["/health"]["get"]["security"] == [{}]  # no requirement: anyone may call it
    assert client.get("/health").status_code == 200
