"""Native API: collections, collection types and tokens (happy paths and their own errors)."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, auth

Client = TestClient[Litestar]


def create(client: Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/collections", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def token(client: Client, collection: str, scope: str = "read", note: str = "") -> dict[str, Any]:
    response = client.post("/v1/tokens", json={"collection": collection, "scope": scope, "note": note}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_vectors_collection(client: Client) -> None:
    described = create(
        client,
        name="vec",
        type="vectors",
        ndim=8,
        metric="l2sq",
        precision="f16",
        fields_to_index=["category", "price"],
        product_id_field="product",
    )
    assert described["name"] == "vec"
    assert described["type"] == "vectors"
    assert (described["ndim"], described["metric"], described["precision"]) == (8, "l2sq", "f16")
    assert described["fields_to_index"] == ["category", "price"]
    assert described["product_id_field"] == "product"
    assert described["store_images"] is False
    assert described["query_kinds"] == ["vector", "id"]
    assert described["count"] == 0
    assert described["config"] == {}
    assert isinstance(described["memory_bytes"], int)
    assert isinstance(described["index"], dict) and "capacity" in described["index"]


def test_create_image_collection(client: Client) -> None:
    described = create(client, name="img", type="tinycolour", config={"grid": 3}, store_images=True)
    assert described["type"] == "tinycolour"
    assert described["type_version"] == "1.0"
    assert described["config"] == {"grid": 3}
    assert described["ndim"] == 27 and described["metric"] == "cos"
    assert described["store_images"] is True
    assert set(described["query_kinds"]) == {"vector", "id", "image", "text", "image+text", "colors"}


def test_create_errors(client: Client) -> None:
    create(client, name="taken", ndim=4)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "taken", "ndim": 4}, 409, "collection_exists"),
        ({"name": "x", "type": "nosuchtype"}, 400, "unsupported"),
        ({"name": "x"}, 400, "invalid_input"),  # vectors without ndim
        ({"name": "bad name!", "ndim": 4}, 400, "invalid_input"),
        ({"name": "x", "ndim": 4, "config": {"grid": 2}}, 400, "invalid_input"),
        ({"name": "x", "type": "tinycolour", "config": {"nope": 1}}, 400, "invalid_config"),
        ({"name": "x", "type": "tinycolour", "ndim": 5}, 400, "invalid_input"),
        ({"name": "x", "ndim": 4, "metric": "manhattan"}, 400, "invalid_body"),
        ({"name": "x", "ndim": 0}, 400, "invalid_body"),
        ({"name": "x", "ndim": 4, "colour": "red"}, 400, "invalid_body"),
        ({"name": "x", "ndim": 4, "fields_to_index": ["a..b"]}, 400, "invalid_input"),
    ]
    for body, status, code in cases:
        response = client.post("/v1/collections", json=body, headers=ADMIN)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code, (body, response.text)
    assert [c["name"] for c in client.get("/v1/collections", headers=ADMIN).json()["collections"]] == ["taken"]


def test_list_and_describe(client: Client) -> None:
    create(client, name="a", ndim=4)
    create(client, name="b", type="tinycolour")
    client.post("/v1/collections/a/records", json={"records": [{"_id": "1", "_vector": [1, 2, 3, 4]}]}, headers=ADMIN)
    listed = client.get("/v1/collections", headers=ADMIN).json()
    assert [c["name"] for c in listed["collections"]] == ["a", "b"]
    assert listed["unavailable"] == []
    assert listed["collections"][0]["count"] == 1
    mine = token(client, "b")["token"]
    assert [c["name"] for c in client.get("/v1/collections", headers=auth(mine)).json()["collections"]] == ["b"]
    described = client.get("/v1/collections/a", headers=ADMIN).json()
    assert described["count"] == 1 and described["index"]["capacity"] >= 1
    assert client.get("/v1/collections/b", headers=auth(mine)).json()["type"] == "tinycolour"


def test_types(client: Client) -> None:
    response = client.get("/v1/types", headers=ADMIN)
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()["types"]}
    assert set(types) == {"vectors", "tinycolour"}
    assert types["tinycolour"]["query_kinds"] == ["vector", "id", "image", "text", "image+text", "colors"]
    assert "TinyColourConfig" in str(types["tinycolour"]["config"])
    read = token(client, create(client, name="c", ndim=2)["name"])["token"]
    assert client.get("/v1/types", headers=auth(read)).status_code == 200


def test_drop_revokes_tokens(client: Client) -> None:
    create(client, name="gone", ndim=4)
    writer = token(client, "gone", "write")
    assert client.get("/v1/collections/gone", headers=auth(writer["token"])).status_code == 200
    response = client.delete("/v1/collections/gone", headers=ADMIN)
    assert response.status_code == 204 and response.content == b""
    missing = client.get("/v1/collections/gone", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["code"] == "collection_not_found"
    revoked = client.get("/v1/collections/gone", headers=auth(writer["token"]))
    assert revoked.status_code == 401 and revoked.json()["code"] == "unauthorized"
    assert client.delete("/v1/collections/gone", headers=ADMIN).json()["code"] == "collection_not_found"
    listed = client.get("/v1/tokens", headers=ADMIN).json()["tokens"]
    assert [(t["id"], t["revoked"]) for t in listed] == [(writer["id"], True)]
    # A new collection of the same name does not bring the old tokens back.
    create(client, name="gone", ndim=4)
    assert client.get("/v1/collections/gone", headers=auth(writer["token"])).status_code == 401


def test_tokens(client: Client) -> None:
    create(client, name="c", ndim=4)
    create(client, name="d", ndim=4)
    first = token(client, "c", "write", note="ingest job")
    assert first["token"].startswith("lk_") and first["scope"] == "write" and first["note"] == "ingest job"
    second = token(client, "d")
    assert second["scope"] == "read"
    listed = client.get("/v1/tokens", headers=ADMIN).json()["tokens"]
    assert [t["id"] for t in listed] == [first["id"], second["id"]]
    assert all("token" not in t for t in listed)  # the secret is shown once only
    assert first["token"] not in str(listed)
    only_c = client.get("/v1/tokens", params={"collection": "c"}, headers=ADMIN).json()["tokens"]
    assert [t["id"] for t in only_c] == [first["id"]]

    assert client.delete(f"/v1/tokens/{first['id']}", headers=ADMIN).status_code == 204
    assert client.delete(f"/v1/tokens/{first['id']}", headers=ADMIN).status_code == 204  # idempotent
    response = client.get("/v1/collections/c", headers=auth(first["token"]))
    assert response.status_code == 401 and "revoked" in response.json()["message"]
    assert client.get("/v1/collections/d", headers=auth(second["token"])).status_code == 200

    unknown = client.delete("/v1/tokens/nope", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "token_not_found"
    no_collection = client.post("/v1/tokens", json={"collection": "zzz"}, headers=ADMIN)
    assert no_collection.status_code == 404 and no_collection.json()["code"] == "collection_not_found"
    bad_scope = client.post("/v1/tokens", json={"collection": "c", "scope": "admin"}, headers=ADMIN)
    assert bad_scope.status_code == 400 and bad_scope.json()["code"] == "invalid_body"
