"""Native API auth: every route, every kind of caller. No token, a wrong or revoked token: 401;
a token of another collection, a read token writing, a collection token doing admin work: 403.
Always a JSON error with a ``code``, never data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, auth, b64, png

Client = TestClient[Litestar]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    access: str  # "admin", "write", "read" or "any"
    json: Any = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def call(self, client: Client, headers: dict[str, str], **fill: str) -> httpx.Response:
        path = self.path.format(**{"name": "a", "record_id": "r1", "token_id": "t", "job_id": "j", **fill})
        return client.request(
            self.method, path, json=self.json, files=self.files, data=self.data or None, headers=headers
        )


UPLOAD = [("file", ("r9.png", png(1), "image/png"))]
IMAGE = b64(2)

#: Every native route with a valid request.
ROUTES: list[Route] = [
    Route("POST", "/v1/collections", "admin", {"name": "new", "ndim": 2}),
    Route("GET", "/v1/collections", "any"),
    Route("GET", "/v1/collections/{name}", "read"),
    Route("DELETE", "/v1/collections/{name}", "admin"),
    Route("GET", "/v1/types", "any"),
    Route("POST", "/v1/tokens", "admin", {"collection": "a"}),
    Route("GET", "/v1/tokens", "admin"),
    Route("DELETE", "/v1/tokens/{token_id}", "admin"),
    Route("POST", "/v1/collections/{name}/records", "write", {"records": [{"_id": "r2", "_base64": IMAGE}]}),
    Route("POST", "/v1/collections/{name}/records/upload", "write", files=UPLOAD),
    Route("GET", "/v1/collections/{name}/records", "read"),
    Route("GET", "/v1/collections/{name}/records/{record_id}", "read"),
    Route("GET", "/v1/collections/{name}/records/{record_id}/image", "read"),
    Route("POST", "/v1/collections/{name}/records/get", "read", {"ids": ["r1"]}),
    Route("PATCH", "/v1/collections/{name}/records", "write", {"records": [{"_id": "r1", "x": 1}]}),
    Route("POST", "/v1/collections/{name}/records/delete", "write", {"ids": ["r1"]}),
    Route("POST", "/v1/collections/{name}/records/random", "read", {"count": 1}),
    Route("POST", "/v1/collections/{name}/search", "read", {"query": {"_id": "r1"}}),
    Route("POST", "/v1/collections/{name}/search/upload", "read", files=UPLOAD),
    Route("POST", "/v1/collections/{name}/rank", "read", {"query": {"_id": "r1"}, "ids": ["r1"]}),
    Route("POST", "/v1/collections/{name}/near-duplicates", "read", {"threshold": 0.1}),
    Route("POST", "/v1/collections/{name}/jobs", "write", {"records": [{"_id": "r3", "_base64": IMAGE}]}),
    Route("GET", "/v1/jobs", "any"),
    Route("GET", "/v1/jobs/{job_id}", "any"),
]


@dataclass
class Setup:
    client: Client
    tokens: dict[str, str]
    token_id: str
    job_id: str


@pytest.fixture
def setup(client: Client) -> Setup:
    for name in ("a", "b"):
        response = client.post(
            "/v1/collections", json={"name": name, "type": "tinycolour", "store_images": True}, headers=ADMIN
        )
        assert response.status_code == 201
        records = [{"_id": "r1", "_base64": IMAGE}]
        assert (
            client.post(f"/v1/collections/{name}/records", json={"records": records}, headers=ADMIN).status_code == 200
        )
    tokens: dict[str, str] = {}
    ids: dict[str, str] = {}
    for label, collection, scope in (
        ("read", "a", "read"),
        ("write", "a", "write"),
        ("other", "b", "write"),
        ("revoked", "a", "write"),
    ):
        created = client.post("/v1/tokens", json={"collection": collection, "scope": scope}, headers=ADMIN).json()
        tokens[label] = created["token"]
        ids[label] = created["id"]
    assert client.delete(f"/v1/tokens/{ids['revoked']}", headers=ADMIN).status_code == 204
    job = client.post("/v1/collections/a/jobs", json={"records": []}, headers=ADMIN).json()
    return Setup(client, tokens, ids["read"], job["id"])


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "code", "message"}, body  # an error, never data
    assert (body["status"], body["code"]) == (status, code)
    assert body["message"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_without_a_valid_token(setup: Setup, route: Route) -> None:
    fill = {"token_id": setup.token_id, "job_id": setup.job_id}
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Token wrong"},
        {"Authorization": "Token admin2"},
        auth(setup.tokens["revoked"]),
    ):
        assert_error(route.call(setup.client, headers, **fill), 401, "unauthorized")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_collection_tokens(setup: Setup, route: Route) -> None:
    fill = {"token_id": setup.token_id, "job_id": setup.job_id}
    allowed = {
        "admin": set(),
        "write": {"write"},
        "read": {"read", "write"},
        "any": {"read", "write", "other"},
    }[route.access]
    if route.path == "/v1/jobs/{job_id}":
        allowed = {"read", "write"}  # the job belongs to collection "a"
    for label in ("read", "write", "other"):
        response = route.call(setup.client, auth(setup.tokens[label]), **fill)
        if label in allowed:
            assert response.status_code < 300, (label, response.text)
        else:
            assert_error(response, 403, "forbidden")


def test_another_collections_data_stays_hidden(setup: Setup) -> None:
    """A token of collection "a" learns nothing of "b", nor whether a collection exists."""
    headers = auth(setup.tokens["write"])
    for path in ("/v1/collections/b", "/v1/collections/b/records/r1", "/v1/collections/nosuch"):
        assert_error(setup.client.get(path, headers=headers), 403, "forbidden")
    listed = setup.client.get("/v1/collections", headers=headers).json()
    assert [c["name"] for c in listed["collections"]] == ["a"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_admin(setup: Setup, route: Route) -> None:
    fill = {"token_id": setup.token_id, "job_id": setup.job_id}
    response = route.call(setup.client, ADMIN, **fill)
    assert response.status_code < 300, response.text


def test_token_schemes(setup: Setup) -> None:
    for scheme in ("Token", "Bearer", "JWT", "token"):
        headers = {"Authorization": f"{scheme} {setup.tokens['read']}"}
        assert setup.client.get("/v1/collections/a", headers=headers).status_code == 200
