"""The committed OpenAPI document (``server/openapi.json``) matches the application.

When this fails after a change to a route or a schema, regenerate the file::

    python -m lookalike_server.openapi > server/openapi.json
"""

from __future__ import annotations

import json
from pathlib import Path

from litestar import Litestar
from litestar.testing import TestClient
from test_native_auth import ROUTES

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
