"""A full disk and a read-only disk over HTTP: writes answer 507 ``storage_full`` or 503
``storage_read_only`` on both APIs, reads keep answering, nothing acknowledged is damaged, and
writes work again once there is room. The full disk is a collection at its storage cap
(``max_collection_bytes``: SQLite answers exactly as on a full disk); the read-only disk is
SQLite's ``query_only`` on the collection's writing connection."""

from __future__ import annotations

from typing import Any

import numpy as np
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, ClientFactory

Client = TestClient[Litestar]
NDIM = 16
XIMILAR = {**ADMIN, "collection-id": "c"}


def batch(start: int, count: int) -> list[dict[str, Any]]:
    rows = np.random.default_rng(start).standard_normal((count, NDIM)).round(4)
    return [{"_id": f"r{start + i}", "_vector": row.tolist(), "note": "n" * 300} for i, row in enumerate(rows)]


def insert(client: Client, records: list[dict[str, Any]]) -> Any:
    return client.post("/v1/collections/c/records", json={"records": records}, headers=ADMIN)


def check_reads(client: Client, acknowledged: dict[str, dict[str, Any]]) -> None:
    """Every acknowledged record is there and is its own nearest neighbour, by id and by vector."""
    stats = client.get("/v1/collections/c", headers=ADMIN)
    assert stats.status_code == 200, stats.text
    assert stats.json()["count"] == len(acknowledged)
    ids = sorted(acknowledged)
    for id_ in ids[:: max(1, len(ids) // 10)]:
        got = client.get(f"/v1/collections/c/records/{id_}", headers=ADMIN)
        assert got.status_code == 200 and got.json()["note"] == acknowledged[id_]["note"], got.text
        hits = client.post(
            "/v1/collections/c/search", json={"vector": acknowledged[id_]["_vector"], "limit": 1}, headers=ADMIN
        )
        assert hits.status_code == 200 and hits.json()["hits"][0]["_id"] == id_, hits.text
    listed = client.post("/similarity/photos/v2/allRecords", json={"size": 5}, headers=XIMILAR)
    assert listed.status_code == 200 and listed.json()["status"]["code"] == 200


def test_a_full_disk_answers_507_and_reads_go_on(client_factory: ClientFactory) -> None:
    client = client_factory(max_collection_bytes=160 * 1024)
    created = client.post("/v1/collections", json={"name": "c", "ndim": NDIM}, headers=ADMIN)
    assert created.status_code == 201, created.text
    acknowledged: dict[str, dict[str, Any]] = {}
    start = 0
    while True:
        records = batch(start, 20)
        response = insert(client, records)
        if response.status_code != 200:
            break
        assert response.json()["errors"] == [], response.text
        acknowledged.update((r["_id"], r) for r in records)
        start += 20
        assert start < 5000, "the cap never filled"
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["code"] == "storage_full" and "full" in body["message"]
    assert len(acknowledged) > 50
    check_reads(client, acknowledged)

    # Every write route says the same, and keeps nothing.
    refused = batch(9000, 40)
    xim = client.post("/similarity/photos/v2/insert", json={"records": refused}, headers=XIMILAR)
    assert xim.status_code == 507, xim.text
    assert xim.json()["status"]["code"] == 507 and xim.json()["code"] == "storage_full"
    patched = client.patch(
        "/v1/collections/c/records",
        json={"records": [{"_id": id_, "note": "m" * 4000} for id_ in list(acknowledged)[:60]]},
        headers=ADMIN,
    )
    assert patched.status_code == 507 and patched.json()["code"] == "storage_full", patched.text
    assert client.get("/v1/collections/c/records/r9000", headers=ADMIN).status_code == 404
    check_reads(client, acknowledged)

    # Removing records makes room; writes work again.
    removed = list(acknowledged)[:80]
    deleted = client.post("/v1/collections/c/records/delete", json={"ids": removed}, headers=ADMIN)
    assert deleted.status_code == 200, deleted.text
    for id_ in removed:
        del acknowledged[id_]
    again = batch(20_000, 20)
    assert insert(client, again).status_code == 200
    acknowledged.update((r["_id"], r) for r in again)
    check_reads(client, acknowledged)


def test_a_read_only_disk_answers_503_and_reads_go_on(client_factory: ClientFactory) -> None:
    client = client_factory()
    assert client.post("/v1/collections", json={"name": "c", "ndim": NDIM}, headers=ADMIN).status_code == 201
    records = batch(0, 100)
    assert insert(client, records).status_code == 200
    acknowledged = {r["_id"]: r for r in records}
    app: Any = client.app
    writer = app.state["services"].engine.collection("c")._store._writer
    writer.execute("PRAGMA query_only = ON")
    try:
        for response in (
            insert(client, batch(500, 5)),
            client.patch("/v1/collections/c/records", json={"records": [{"_id": "r1", "note": "x"}]}, headers=ADMIN),
            client.post("/v1/collections/c/records/delete", json={"ids": ["r1", "r2"]}, headers=ADMIN),
            client.post("/similarity/photos/v2/delete", json={"records": [{"_id": "r3"}]}, headers=XIMILAR),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "storage_read_only", response.text
        check_reads(client, acknowledged)
    finally:
        writer.execute("PRAGMA query_only = OFF")
    assert client.post("/v1/collections/c/records/delete", json={"ids": ["r1"]}, headers=ADMIN).status_code == 200
    del acknowledged["r1"]
    check_reads(client, acknowledged)
