"""Native API: records (insert, upload, get, list, update, delete, random) on a ``vectors``
collection and an image collection."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, b64, png, solid

Client = TestClient[Litestar]

CATEGORIES = ("shoes", "bags", "hats")


def vector(i: int) -> list[float]:
    return [1.0, float(i % 5), float(i % 3), float(i) / 10 + 0.1]


@pytest.fixture
def vec(client: Client) -> Client:
    """A ``vectors`` collection "vec" with 30 records: category, price, product id."""
    response = client.post(
        "/v1/collections",
        json={"name": "vec", "ndim": 4, "fields_to_index": ["category"], "product_id_field": "product"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    records = [
        {"_id": f"r{i}", "_vector": vector(i), "category": CATEGORIES[i % 3], "price": i, "product": f"p{i // 2}"}
        for i in range(30)
    ]
    response = client.post("/v1/collections/vec/records", json={"records": records}, headers=ADMIN)
    assert response.status_code == 200 and response.json()["errors"] == [], response.text
    return client


@pytest.fixture
def img(client: Client) -> Client:
    """An image collection "img" (the tiny test type) with four solid colours."""
    response = client.post("/v1/collections", json={"name": "img", "type": "tinycolour"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    records = [
        {"_id": name, "_base64": b64(solid(rgb)), "colour": name}
        for name, rgb in (("red", (250, 5, 5)), ("green", (5, 250, 5)), ("blue", (5, 5, 250)), ("dark", (20, 20, 20)))
    ]
    response = client.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN)
    assert response.status_code == 200 and response.json()["errors"] == [], response.text
    return client


def test_insert_reports_bad_records(vec: Client) -> None:
    records: list[dict[str, Any]] = [
        {"_id": "ok", "_vector": [1, 0, 0, 0], "tag": "x"},
        {"_id": 5, "_vector": [1, 0, 0, 0]},
        {"_id": "short", "_vector": [1, 0]},
        {"_id": "zero", "_vector": [0, 0, 0, 0]},
        {"_id": "reserved", "_vector": [1, 0, 0, 0], "_secret": 1},
        {"_vector": [1, 0, 0, 0]},
        {"_id": "ok", "_vector": [0, 1, 0, 0]},
        {"_id": "image", "_base64": b64(1)},
    ]
    response = vec.post("/v1/collections/vec/records", json={"records": records}, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["inserted"] == ["ok"]
    errors = {e["position"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7]
    assert errors[1]["code"] == "invalid_record" and errors[1]["_id"] is None
    assert errors[2]["code"] == "dimension_mismatch" and errors[2]["_id"] == "short"
    assert errors[3]["code"] == "invalid_vector"
    assert errors[4]["code"] == "invalid_record"
    assert errors[6]["code"] == "duplicate_id"
    assert errors[7]["code"] == "unsupported"
    assert all(e["message"] for e in body["errors"])
    assert vec.get("/v1/collections/vec", headers=ADMIN).json()["count"] == 31


def test_insert_images_with_bad_ones(img: Client) -> None:
    records = [
        {"_id": "fine", "_base64": "data:image/png;base64," + b64(7), "n": 1},
        {"_id": "garbage", "_base64": "bm90IGFuIGltYWdl"},
        {"_id": "not-base64", "_base64": "%%%"},
        {"_id": "no-image"},
        {"_id": "file", "_file": "/etc/passwd"},
        {"_id": "private-url", "_url": "http://127.0.0.1:1/x.png"},
    ]
    response = img.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["inserted"] == ["fine"]
    codes = {e["_id"]: e["code"] for e in body["errors"]}
    assert codes["garbage"] == "invalid_image"
    assert codes["not-base64"] == "invalid_image"
    assert codes["no-image"] == "invalid_record"
    assert codes["file"] == "invalid_record"
    assert set(codes) == {"garbage", "not-base64", "no-image", "file", "private-url"}
    stored = img.get("/v1/collections/img/records/fine", headers=ADMIN).json()
    assert stored["n"] == 1 and len(stored["_mean"]) == 3


def test_too_many_records(vec: Client) -> None:
    records = [{"_id": str(i), "_vector": [1, 0, 0, 0]} for i in range(1001)]
    response = vec.post("/v1/collections/vec/records", json={"records": records}, headers=ADMIN)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "too_many_records" and "/jobs" in body["message"]


def test_get_one_and_many(vec: Client) -> None:
    one = vec.get("/v1/collections/vec/records/r4", headers=ADMIN)
    assert one.status_code == 200
    assert one.json() == {"_id": "r4", "category": "bags", "price": 4, "product": "p2"}
    missing = vec.get("/v1/collections/vec/records/nope", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["code"] == "record_not_found"
    many = vec.post(
        "/v1/collections/vec/records/get", json={"ids": ["r2", "nope", "r1"], "fields": ["price"]}, headers=ADMIN
    )
    assert many.status_code == 200
    assert many.json() == {"records": [{"_id": "r2", "price": 2}, {"_id": "r1", "price": 1}], "missing": ["nope"]}


def test_list_pages_and_filter(vec: Client) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = vec.get("/v1/collections/vec/records", params=params, headers=ADMIN).json()
        seen += [r["_id"] for r in page["records"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(30)] and pages == 5
    flt = json.dumps({"category": "hats", "price": {"$gte": 10}})
    page = vec.get("/v1/collections/vec/records", params={"filter": flt, "limit": 100}, headers=ADMIN).json()
    assert [r["_id"] for r in page["records"]] == [f"r{i}" for i in range(11, 30, 3)]
    assert page["next_cursor"] is None


def test_update(vec: Client) -> None:
    response = vec.patch(
        "/v1/collections/vec/records",
        json={"records": [{"_id": "r1", "price": 100, "sale": True}, {"_id": "r2", "category": "hats"}]},
        headers=ADMIN,
    )
    assert response.status_code == 200 and response.json() == {"updated": 2}
    assert vec.get("/v1/collections/vec/records/r1", headers=ADMIN).json() == {
        "_id": "r1",
        "category": "bags",
        "price": 100,
        "product": "p0",
        "sale": True,
    }
    hats = vec.post(
        "/v1/collections/vec/records/random", json={"count": 100, "filter": {"category": "hats"}}, headers=ADMIN
    )
    assert "r2" in {r["_id"] for r in hats.json()["records"]}
    missing = vec.patch(
        "/v1/collections/vec/records", json={"records": [{"_id": "r3", "x": 1}, {"_id": "no"}]}, headers=ADMIN
    )
    assert missing.status_code == 404 and missing.json()["code"] == "record_not_found"
    assert "x" not in vec.get("/v1/collections/vec/records/r3", headers=ADMIN).json()  # all or nothing
    image = vec.patch(
        "/v1/collections/vec/records", json={"records": [{"_id": "r3", "_url": "http://x"}]}, headers=ADMIN
    )
    assert image.status_code == 400 and image.json()["code"] == "invalid_record"


def test_delete_by_ids_and_filter(vec: Client) -> None:
    response = vec.post("/v1/collections/vec/records/delete", json={"ids": ["r0", "r1", "nope"]}, headers=ADMIN)
    assert response.status_code == 200 and response.json() == {"deleted": 2}
    response = vec.post("/v1/collections/vec/records/delete", json={"filter": {"category": "hats"}}, headers=ADMIN)
    assert response.json() == {"deleted": 10}
    assert vec.get("/v1/collections/vec", headers=ADMIN).json()["count"] == 18
    for body in ({}, {"ids": ["r3"], "filter": {"a": 1}}, {"filter": {}}):
        response = vec.post("/v1/collections/vec/records/delete", json=body, headers=ADMIN)
        assert response.status_code == 400, body
        assert response.json()["code"] in ("invalid_body", "invalid_filter")
    assert vec.get("/v1/collections/vec", headers=ADMIN).json()["count"] == 18


def test_random(vec: Client) -> None:
    response = vec.post("/v1/collections/vec/records/random", json={"count": 5}, headers=ADMIN)
    assert response.status_code == 200
    records = response.json()["records"]
    assert len(records) == 5 and len({r["_id"] for r in records}) == 5
    assert all(set(r) == {"_id", "category", "price", "product"} for r in records)
    # More asked than pass the filter: all of them, and only them.
    body = {"count": 50, "filter": {"category": "shoes", "price": {"$lt": 12}}}
    picked = vec.post("/v1/collections/vec/records/random", json=body, headers=ADMIN).json()["records"]
    assert sorted(r["_id"] for r in picked) == sorted(["r0", "r3", "r6", "r9"])
    empty = vec.post("/v1/collections/vec/records/random", json={"filter": {"category": "none"}}, headers=ADMIN)
    assert empty.json() == {"records": []}
    # Every passing record comes up (a uniform sample of a filtered set).
    counts: Counter[str] = Counter()
    for _ in range(60):
        body = {"count": 2, "filter": {"category": "bags"}}
        counts.update(
            r["_id"] for r in vec.post("/v1/collections/vec/records/random", json=body, headers=ADMIN).json()["records"]
        )
    assert set(counts) == {f"r{i}" for i in range(1, 30, 3)}


def test_upload(img: Client) -> None:
    files = [("file", ("a.png", png(1), "image/png")), ("file", ("b.png", png(2), "image/png"))]
    response = img.post(
        "/v1/collections/img/records/upload",
        files=files,
        data={"_id": ["up-a", "up-b"], "metadata": json.dumps([{"n": 1}, {"n": 2}])},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": ["up-a", "up-b"], "errors": []}
    assert img.get("/v1/collections/img/records/up-b", headers=ADMIN).json()["n"] == 2

    # Without ids: the file names; one metadata object for all; a bad file is a record error.
    files = [("file", ("c.png", png(3), "image/png")), ("file", ("broken.png", b"nope", "image/png"))]
    response = img.post(
        "/v1/collections/img/records/upload", files=files, data={"metadata": '{"batch": 7}'}, headers=ADMIN
    )
    body = response.json()
    assert body["inserted"] == ["c.png"]
    assert [(e["position"], e["_id"], e["code"]) for e in body["errors"]] == [(1, "broken.png", "invalid_image")]
    assert img.get("/v1/collections/img/records/c.png", headers=ADMIN).json()["batch"] == 7

    for data in ({"_id": ["only-one", "two", "three"]}, {"metadata": "{bad"}, {"metadata": "[1]"}):
        response = img.post(
            "/v1/collections/img/records/upload",
            files=[("file", ("d.png", png(4), "image/png"))],
            data=data,
            headers=ADMIN,
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid_body", data
    no_file = img.post("/v1/collections/img/records/upload", data={"_id": "x"}, headers=ADMIN)
    assert no_file.status_code == 400 and no_file.json()["code"] == "invalid_body"


def test_stored_image(client: Client) -> None:
    created = client.post(
        "/v1/collections", json={"name": "kept", "type": "tinycolour", "store_images": True}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    original = png(solid((10, 200, 30)))
    client.post(
        "/v1/collections/kept/records",
        json={"records": [{"_id": "a", "_base64": b64(solid((10, 200, 30)))}]},
        headers=ADMIN,
    )
    response = client.get("/v1/collections/kept/records/a/image", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == original
    missing = client.get("/v1/collections/kept/records/nope/image", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["code"] == "record_not_found"
    assert client.get("/v1/collections/kept/records/a/image").status_code == 401


def test_image_of_a_collection_without_images(img: Client) -> None:
    response = img.get("/v1/collections/img/records/red/image", headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "unsupported"
