"""Native API: search (every query kind), search by upload, rank, near-duplicates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, b64, png, solid

Client = TestClient[Litestar]

COLOURS = {"red": (250, 5, 5), "green": (5, 250, 5), "blue": (5, 5, 250), "orange": (250, 120, 5)}


@pytest.fixture
def vec(client: Client) -> Client:
    """A ``vectors`` collection: 12 records on the unit circle, grouped in products of 3."""
    client.post(
        "/v1/collections",
        json={"name": "vec", "ndim": 2, "fields_to_index": ["kind"], "product_id_field": "product"},
        headers=ADMIN,
    )
    records = [
        {"_id": f"v{i}", "_vector": [1.0, i / 10], "kind": "even" if i % 2 == 0 else "odd", "product": f"p{i // 3}"}
        for i in range(12)
    ]
    response = client.post("/v1/collections/vec/records", json={"records": records}, headers=ADMIN)
    assert response.json()["errors"] == []
    return client


@pytest.fixture
def img(client: Client) -> Client:
    """An image collection of solid colours, plus an exact copy of red."""
    client.post("/v1/collections", json={"name": "img", "type": "tinycolour"}, headers=ADMIN)
    records = [{"_id": name, "_base64": b64(solid(rgb)), "name": name} for name, rgb in COLOURS.items()]
    records.append({"_id": "red-copy", "_base64": b64(solid(COLOURS["red"], size=48)), "name": "red"})
    response = client.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN)
    assert response.json()["errors"] == [], response.text
    return client


def search(client: Client, collection: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/collections/{collection}/search", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]]


def test_search_vectors(vec: Client) -> None:
    by_id = search(vec, "vec", query={"_id": "v0"}, limit=3)
    assert ids(by_id) == ["v0", "v1", "v2"]
    assert by_id["hits"][0]["distance"] == pytest.approx(0, abs=1e-6)
    assert by_id["hits"][0] == {"_id": "v0", "distance": by_id["hits"][0]["distance"], "kind": "even", "product": "p0"}
    assert isinstance(by_id["took_ms"], float)
    assert ids(search(vec, "vec", vector=[1.0, 1.1], limit=2)) == ["v11", "v10"]
    assert ids(search(vec, "vec", query={"_vector": [1.0, 1.1]}, limit=2)) == ["v11", "v10"]
    paged = search(vec, "vec", query={"_id": "v0"}, limit=3, offset=3)
    assert ids(paged) == ["v3", "v4", "v5"]
    filtered = search(vec, "vec", query={"_id": "v0"}, limit=3, filter={"kind": "odd"}, fields=["kind"])
    assert ids(filtered) == ["v1", "v3", "v5"]
    assert all(set(hit) == {"_id", "distance", "kind"} for hit in filtered["hits"])
    exact = search(vec, "vec", vector=[1.0, 0.0], limit=12, exact=True)
    assert ids(exact) == [f"v{i}" for i in range(12)]


def test_search_grouped(vec: Client) -> None:
    grouped = search(vec, "vec", query={"_id": "v0"}, limit=2, group_by="product", group_size=2)
    assert ids(grouped) == ["v0", "v1", "v3", "v4"]
    assert [hit["_group"] for hit in grouped["hits"]] == ["p0", "p0", "p1", "p1"]
    response = vec.post("/v1/collections/vec/search", json={"vector": [1, 0], "group_by": "kind"}, headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "unsupported"


def test_search_images(img: Client) -> None:
    by_image = search(img, "img", query={"_base64": b64(solid((230, 40, 40)))}, limit=2)
    assert set(ids(by_image)) == {"red", "red-copy"}
    assert all(hit["is_duplicate"] is False for hit in by_image["hits"])
    by_id = search(img, "img", query={"_id": "red"}, limit=2)
    assert set(ids(by_id)) == {"red", "red-copy"}
    assert all(hit["is_duplicate"] for hit in by_id["hits"])
    assert ids(search(img, "img", text="something blue", limit=1)) == ["blue"]
    assert ids(search(img, "img", colors=[{"color": "#00ff00", "weight": 2}, "#00ee00"], limit=1)) == ["green"]
    mixed = search(img, "img", query={"_id": "orange"}, text="red", text_weight=0.2, limit=5)
    assert ids(mixed)[0] == "orange"
    assert ids(search(img, "img", query={"_id": "orange"}, text="red", text_weight=0.9, limit=1)) != ["orange"]
    data_uri = search(img, "img", query={"_base64": "data:image/png;base64," + b64(solid((5, 5, 240)))}, limit=1)
    assert ids(data_uri) == ["blue"]


def test_search_query_errors(img: Client) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 400, "invalid_input"),
        ({"query": {}}, 400, "invalid_input"),
        ({"query": {"_id": "red", "_base64": b64(1)}}, 400, "invalid_input"),
        ({"query": {"_id": "nope"}}, 404, "record_not_found"),
        ({"query": {"_base64": "bm90IGFuIGltYWdl"}}, 400, "invalid_image"),
        ({"query": {"_file": "/etc/passwd"}}, 400, "invalid_body"),
        ({"vector": [1, 2]}, 400, "dimension_mismatch"),
        ({"text": "red", "colors": ["#ff0000"]}, 400, "invalid_input"),
        ({"colors": ["not a colour"]}, 400, "invalid_body"),
        ({"text": "red", "text_weight": 2}, 400, "invalid_body"),
        ({"query": {"_id": "red"}, "limit": 0}, 400, "invalid_body"),
        ({"query": {"_id": "red"}, "filter": {"$where": "1"}}, 400, "invalid_filter"),
        ({"query": {"_id": "red"}, "filter": {"name": {"$regex": "r"}}}, 400, "invalid_filter"),
        ({"query": {"_id": "red"}, "k": 3}, 400, "invalid_body"),
    ]
    for body, status, code in cases:
        response = img.post("/v1/collections/img/search", json=body, headers=ADMIN)
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.text)


def test_text_search_unsupported_on_vectors(vec: Client) -> None:
    response = vec.post("/v1/collections/vec/search", json={"text": "red"}, headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "unsupported"
    assert "vector, id" in response.json()["message"]


def test_search_upload(img: Client) -> None:
    files = {"file": ("q.png", png(solid((5, 245, 5))), "image/png")}
    response = img.post(
        "/v1/collections/img/search/upload",
        files=files,
        data={"options": json.dumps({"limit": 2, "fields": ["name"]})},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["_id"] == "green" and set(hits[0]) == {"_id", "distance", "name", "is_duplicate"}
    assert len(hits) == 2
    plain = img.post("/v1/collections/img/search/upload", files=files, headers=ADMIN)
    assert plain.status_code == 200 and len(plain.json()["hits"]) == 5
    for options in ('{"limit": "x"}', "{bad", '{"query": {"_id": "red"}}'):
        response = img.post("/v1/collections/img/search/upload", files=files, data={"options": options}, headers=ADMIN)
        assert response.status_code == 400 and response.json()["code"] == "invalid_body", options
    broken = img.post("/v1/collections/img/search/upload", files={"file": ("x.png", b"nope")}, headers=ADMIN)
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_image"


def test_rank(vec: Client, img: Client) -> None:
    response = vec.post(
        "/v1/collections/vec/rank",
        json={"query": {"_id": "v0"}, "ids": ["v9", "v2", "nope", "v5", "v2"]},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert ids(body) == ["v2", "v5", "v9"] and body["missing"] == ["nope"]
    distances = [hit["distance"] for hit in body["hits"]]
    assert distances == sorted(distances)
    # The distances are those of a search.
    everything = {
        hit["_id"]: hit["distance"] for hit in search(vec, "vec", query={"_id": "v0"}, limit=12, exact=True)["hits"]
    }
    assert distances == pytest.approx([everything[i] for i in ("v2", "v5", "v9")], rel=1e-5, abs=1e-6)
    ranked = img.post(
        "/v1/collections/img/rank",
        json={"query": {"_base64": b64(solid((5, 5, 250)))}, "ids": ["red", "blue"], "fields": []},
        headers=ADMIN,
    ).json()
    assert ids(ranked) == ["blue", "red"] and "name" not in ranked["hits"][0]
    none_known = vec.post("/v1/collections/vec/rank", json={"query": {"_id": "v0"}, "ids": ["x"]}, headers=ADMIN)
    assert none_known.json()["hits"] == [] and none_known.json()["missing"] == ["x"]
    empty = vec.post("/v1/collections/vec/rank", json={"query": {"_id": "v0"}, "ids": []}, headers=ADMIN)
    assert empty.status_code == 400 and empty.json()["code"] == "invalid_body"


def test_near_duplicates(img: Client, vec: Client) -> None:
    response = img.post("/v1/collections/img/near-duplicates", json={}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"groups": [["red", "red-copy"]]}
    loose = img.post("/v1/collections/img/near-duplicates", json={"threshold": 0.5}, headers=ADMIN).json()["groups"]
    assert loose == [["orange", "red", "red-copy"]]
    filtered = img.post(
        "/v1/collections/img/near-duplicates", json={"filter": {"_id": {"$ne": "red-copy"}}}, headers=ADMIN
    )
    assert filtered.json() == {"groups": []}
    # `vectors` collections have no calibrated threshold: it must be given.
    response = vec.post("/v1/collections/vec/near-duplicates", json={}, headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "invalid_input"
    groups = vec.post("/v1/collections/vec/near-duplicates", json={"threshold": 0.01}, headers=ADMIN).json()["groups"]
    assert groups and all(len(group) >= 2 for group in groups)
