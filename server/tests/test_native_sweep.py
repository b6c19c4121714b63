"""A sweep of hostile and malformed requests over the native API: every answer is a JSON 4xx
with a ``code`` (never a 500), and the collection is unchanged afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import ADMIN

DEEP = "[" * 50_000 + "]" * 50_000
DEEP_FILTER = '{"filter": ' + '{"$and": [' * 5_000 + "{}" + "]}" * 5_000 + "}"

BAD_JSON_BODIES = [
    b"",
    b"not json",
    b"{",
    b"[]",
    b"null",
    b'{"records": "x"}',
    b'{"records": [1, 2]}',
    DEEP.encode(),
    DEEP_FILTER.encode(),
    b'{"records": [{"_id": "a", "_vector": [1e300, 0, 0]}]}',
    b'{"records": [{"_id": "a", "_vector": [NaN, 0, 0]}]}',
    b'{"records": [{"_id": "a", "_vector": [1, 2]}]}',
    b'{"records": [{"_id": "\\u0000\\u001f", "_vector": [1, 2, 3]}]}',
    b'{"records": [{"_id": "' + b"x" * 100_000 + b'", "_vector": [1, 2, 3]}]}',
    b'{"query": {"_vector": [1e39, 0, 0]}}',
    b'{"query": {"_id": "missing"}}',
    b'{"vector": [1e39, 0, 0]}',
    b'{"vector": [1, 2, 3], "limit": 99999999999999999999999}',
    b'{"vector": [1, 2, 3], "offset": -1}',
    b'{"vector": [1, 2, 3], "offset": 18446744073709551616}',
    b'{"vector": [1, 2, 3], "filter": {"a": {"$bogus": 1}}}',
    b'{"vector": [1, 2, 3], "filter": {"a": {"$in": 5}}}',
    b'{"vector": [1, 2, 3], "filter": {"$or": {}}}',
    b'{"vector": [1, 2, 3], "group_by": "nope"}',
    b'{"vector": [1, 2, 3], "unknown": 1}',
    b'{"ids": ["a"], "query": {"_vector": [1e39, 1, 1]}}',
    b'{"ids": [], "filter": {}}',
    b'{"count": 0}',
    b'{"count": 10, "filter": {"$where": "1"}}',
]

ROUTES = [
    ("POST", "/v1/collections/vec/records"),
    ("PATCH", "/v1/collections/vec/records"),
    ("POST", "/v1/collections/vec/records/get"),
    ("POST", "/v1/collections/vec/records/delete"),
    ("POST", "/v1/collections/vec/records/random"),
    ("POST", "/v1/collections/vec/search"),
    ("POST", "/v1/collections/vec/rank"),
    ("POST", "/v1/collections/vec/near-duplicates"),
    ("POST", "/v1/collections/vec/jobs"),
    ("POST", "/v1/collections"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/collections/missing/search"),
]


@pytest.fixture(scope="module")
def sweep_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from lookalike_server.app import create_app
    from lookalike_server.settings import Settings

    data = tmp_path_factory.mktemp("sweep") / "data"
    app = create_app(Settings(data=str(data), admin_token="admin", max_body_bytes=2**20))
    with TestClient(app) as client:
        created = client.post("/v1/collections", json={"name": "vec", "type": "vectors", "ndim": 3}, headers=ADMIN)
        assert created.status_code == 201, created.text
        added = client.post(
            "/v1/collections/vec/records",
            json={"records": [{"_id": f"r{i}", "_vector": [1.0, float(i), 2.0], "n": i} for i in range(20)]},
            headers=ADMIN,
        )
        assert added.status_code == 200 and not added.json()["errors"], added.text
        yield client


def _check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("code"), str) and body["code"], body
        assert body["code"] != "http_error", body


@pytest.mark.parametrize("method,path", ROUTES)
def test_bad_bodies_never_fail_the_server(sweep_client: TestClient[Any], method: str, path: str) -> None:
    for body in BAD_JSON_BODIES:
        response = sweep_client.request(
            method, path, content=body, headers={**ADMIN, "Content-Type": "application/json"}
        )
        _check(response)
    assert (
        len(
            sweep_client.post(
                "/v1/collections/vec/records/get", json={"ids": [f"r{i}" for i in range(20)]}, headers=ADMIN
            ).json()["records"]
        )
        == 20
    )


@pytest.mark.parametrize(
    "query",
    [
        "cursor=" + "9" * 40,
        "cursor=-5",
        "cursor=%00",
        "limit=100000000000000000000",
        "limit=-1",
        "filter=" + "%7B" * 3000,
        "filter=%7B%22a%22%3A%7B%22%24bogus%22%3A1%7D%7D",
    ],
)
def test_bad_listing_parameters(sweep_client: TestClient[Any], query: str) -> None:
    _check(sweep_client.get(f"/v1/collections/vec/records?{query}", headers=ADMIN))


def test_oversize_and_wrong_content_type(sweep_client: TestClient[Any]) -> None:
    big = b'{"records": [' + b'{"_id": "x", "_vector": [1, 2, 3], "pad": "' + b"a" * (2**21) + b'"}]}'
    response = sweep_client.post(
        "/v1/collections/vec/records", content=big, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    _check(
        sweep_client.post(
            "/v1/collections/vec/search",
            content=b"a=b",
            headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    _check(
        sweep_client.post(
            "/v1/collections/vec/search/upload",
            content=b"--x--",
            headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=x"},
        )
    )


def test_ximilar_routes_never_fail(sweep_client: TestClient[Any]) -> None:
    def headers(collection: str) -> dict[str, str]:
        return {**ADMIN, "collection-id": collection, "Content-Type": "application/json"}

    for method in (
        "insert",
        "visualKNN",
        "get",
        "delete",
        "update",
        "visualRankRecords",
        "random",
        "text",
        "nearDuplicates",
        "allRecords",
    ):
        for body in BAD_JSON_BODIES + [b'{"query_record": {"_id": "r1"}, "k": 1e30}', b'{"records": [{"_id": {}}]}']:
            response = sweep_client.post(f"/similarity/photos/v2/{method}", content=body, headers=headers("vec"))
            assert response.status_code < 500, (method, body[:80], response.text)
            assert "status" in response.json()


def test_concurrent_ximilar_inserts_of_one_new_id_write_it_once(sweep_client: TestClient[Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    headers = {**ADMIN, "collection-id": "vec"}

    def insert(n: int) -> dict[str, Any]:
        body = {"records": [{"_id": "race", "_vector": [1.0, 2.0, float(n)]}]}
        answer: dict[str, Any] = sweep_client.post("/similarity/photos/v2/insert", json=body, headers=headers).json()
        return answer

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(insert, range(16)))
    written = [a for a in answers if a["records"]]
    assert len(written) == 1, answers
    assert all(a["status"]["code"] == 411 for a in answers if not a["records"])
    sweep_client.post("/v1/collections/vec/records/delete", json={"ids": ["race"]}, headers=ADMIN)
