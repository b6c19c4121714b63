"""Hostile inputs over HTTP, on both APIs: each is refused with a clear 4xx (a whole request)
or a per-record error with its code (a record in a batch, the others written), never a 5xx,
and the collection is left as it was. The corpus is built in server/tests/hostile.py; SSRF
is in test_ssrf_http.py, malformed JSON bodies in test_native_sweep.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hostile import ACCEPTED, REFUSED
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, b64, solid

Client = TestClient[Litestar]
XIMILAR = {**ADMIN, "collection-id": "img"}


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server for the module: an image collection "img" (the tiny test type) with two
    records, and a vectors collection "vec"."""
    from conftest import TinyColour
    from lookalike.sdk.registry import Registry
    from lookalike_server.app import create_app
    from lookalike_server.settings import Settings

    registry = Registry()
    registry.register(TinyColour)
    data = tmp_path_factory.mktemp("hostile") / "data"
    app = create_app(Settings(data=str(data), admin_token="admin", max_body_bytes=16 * 2**20), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post(
            "/v1/collections", json={"name": "img", "type": "tinycolour", "store_images": True}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        records = [
            {"_id": "red", "_base64": b64(solid((250, 5, 5)))},
            {"_id": "blue", "_base64": b64(solid((5, 5, 250)))},
        ]
        assert client.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN).status_code == 200
        created = client.post(
            "/v1/collections", json={"name": "vec", "ndim": 3, "fields_to_index": ["tag"]}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        vectors = [{"_id": f"v{i}", "_vector": [1.0, float(i), 0.5], "tag": i % 2} for i in range(5)]
        assert client.post("/v1/collections/vec/records", json={"records": vectors}, headers=ADMIN).status_code == 200
        yield client


def state(client: Client, name: str) -> tuple[int, list[dict[str, Any]]]:
    """The count and every record of a collection (to compare before and after)."""
    count = client.get(f"/v1/collections/{name}", headers=ADMIN).json()["count"]
    records = client.get(f"/v1/collections/{name}/records", params={"limit": 1000}, headers=ADMIN).json()["records"]
    return count, records


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_hostile_image_is_refused_per_record_on_both_apis(corpus_client: Client, name: str) -> None:
    data, code = REFUSED[name]
    before = state(corpus_client, "img")
    records = [{"_id": "hostile", "_base64": encoded(data)}]
    native = corpus_client.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN)
    assert native.status_code == 200, native.text
    body = native.json()
    assert body["inserted"] == []
    assert [(e["position"], e["_id"]) for e in body["errors"]] == [(0, "hostile")]
    assert body["errors"][0]["code"] in code
    assert body["errors"][0]["message"]

    ximilar = corpus_client.post("/similarity/photos/v2/insert", json={"records": records}, headers=XIMILAR)
    assert 400 <= ximilar.status_code < 500, ximilar.text
    skipped = ximilar.json()["skipped_records"]
    assert [s["_id"] for s in skipped] == ["hostile"] and skipped[0]["_reason"]["status"]["text"]
    assert state(corpus_client, "img") == before


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_hostile_query_image_is_a_4xx(corpus_client: Client, name: str) -> None:
    data, code = REFUSED[name]
    by_json = corpus_client.post(
        "/v1/collections/img/search", json={"query": {"_base64": encoded(data)}}, headers=ADMIN
    )
    assert by_json.status_code in (400, 413) and by_json.json()["code"] in code, by_json.text
    uploaded = corpus_client.post(
        "/v1/collections/img/search/upload", files={"file": ("x.bin", data, "application/octet-stream")}, headers=ADMIN
    )
    assert uploaded.status_code in (400, 413) and uploaded.json()["code"] in code, uploaded.text
    ximilar = corpus_client.post(
        "/similarity/photos/v2/visualKNN", json={"query_record": {"_base64": encoded(data)}, "k": 2}, headers=XIMILAR
    )
    assert 400 <= ximilar.status_code < 500 and ximilar.json()["status"]["code"] >= 400, ximilar.text


def test_a_batch_keeps_its_good_records(corpus_client: Client) -> None:
    before_count, _ = state(corpus_client, "img")
    records = [{"_id": f"bad-{n}", "_base64": encoded(data)} for n, (data, _) in enumerate(REFUSED.values())]
    records.insert(3, {"_id": "good", "_base64": b64(solid((5, 250, 5)))})
    answer = corpus_client.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN).json()
    assert answer["inserted"] == ["good"]
    assert len(answer["errors"]) == len(REFUSED) and all(e["_id"].startswith("bad-") for e in answer["errors"])
    assert state(corpus_client, "img")[0] == before_count + 1
    deleted = corpus_client.post("/v1/collections/img/records/delete", json={"ids": ["good"]}, headers=ADMIN)
    assert deleted.json()["deleted"] == 1


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_images_first_are_accepted_and_served_as_images(corpus_client: Client, name: str) -> None:
    """A thousand-frame animation is read by its first frame only (its later frames are
    garbage); a polyglot is the image it starts with, and is served back as that image type
    with ``nosniff``, so a browser never takes it for the HTML or archive behind it."""
    data = ACCEPTED[name]
    answer = corpus_client.post(
        "/v1/collections/img/records", json={"records": [{"_id": "odd", "_base64": encoded(data)}]}, headers=ADMIN
    )
    assert answer.status_code == 200 and answer.json()["inserted"] == ["odd"], answer.text
    image = corpus_client.get("/v1/collections/img/records/odd/image", headers=ADMIN)
    assert image.status_code == 200 and image.content == data
    assert image.headers["content-type"].startswith("image/")
    assert image.headers["x-content-type-options"] == "nosniff"
    assert (
        corpus_client.post("/v1/collections/img/records/delete", json={"ids": ["odd"]}, headers=ADMIN).status_code
        == 200
    )


ODD_IDS = [
    "\u202eevil.exe",  # a right-to-left override
    "caf\u00e9",  # NFC
    "cafe\u0301",  # the same word, NFD: a different id
    "\u0000"[1:] + "tab\there",  # control characters other than NUL
    "emoji \U0001f600 \ufeff zero\u200bwidth",
    "x" * 1024,
    "../../etc/passwd",
    "' OR 1=1 --",
]


def test_unusual_ids_round_trip_exactly(corpus_client: Client) -> None:
    records = [{"_id": id_, "_vector": [0.5, float(n), 1.0], "note": id_} for n, id_ in enumerate(ODD_IDS)]
    answer = corpus_client.post("/v1/collections/vec/records", json={"records": records}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["errors"] == [], answer.text
    got = corpus_client.post("/v1/collections/vec/records/get", json={"ids": ODD_IDS}, headers=ADMIN).json()
    assert [r["_id"] for r in got["records"]] == ODD_IDS
    assert all(r["note"] == r["_id"] for r in got["records"])
    deleted = corpus_client.post("/v1/collections/vec/records/delete", json={"ids": ODD_IDS}, headers=ADMIN)
    assert deleted.json()["deleted"] == len(ODD_IDS)


BAD_RECORDS: list[tuple[str, bytes, set[str]]] = [
    (
        "NUL in _id",
        json.dumps({"records": [{"_id": "a\u0000b", "_vector": [1, 2, 3]}]}).encode(),
        {"invalid_record", "invalid_body"},
    ),
    (
        "lone surrogate in _id",
        b'{"records": [{"_id": "\\ud800", "_vector": [1, 2, 3]}]}',
        {"invalid_body", "invalid_json"},
    ),
    (
        "lone surrogate in a value",
        b'{"records": [{"_id": "s", "_vector": [1, 2, 3], "m": "\\udfff"}]}',
        {"invalid_body", "invalid_json"},
    ),
    (
        "id too long",
        json.dumps({"records": [{"_id": "x" * 1025, "_vector": [1, 2, 3]}]}).encode(),
        {"invalid_body", "invalid_record"},
    ),
    (
        "10 MB value",
        json.dumps({"records": [{"_id": "big", "_vector": [1, 2, 3], "m": "x" * 10_000_000}]}).encode(),
        {"invalid_record"},
    ),
    ("NaN literal", b'{"records": [{"_id": "n", "_vector": [NaN, 1, 2]}]}', {"invalid_body", "invalid_json"}),
    ("Infinity literal", b'{"records": [{"_id": "n", "_vector": [Infinity, 1, 2]}]}', {"invalid_body", "invalid_json"}),
    ("beyond float32", b'{"records": [{"_id": "n", "_vector": [1e39, 1, 2]}]}', {"invalid_vector", "invalid_body"}),
    (
        "beyond float64",
        b'{"records": [{"_id": "n", "_vector": [1e999, 1, 2]}]}',
        {"invalid_vector", "invalid_body", "invalid_json"},
    ),
]


@pytest.mark.parametrize(("name", "body", "codes"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_hostile_records_are_refused_and_change_nothing(
    corpus_client: Client, name: str, body: bytes, codes: set[str]
) -> None:
    before = state(corpus_client, "vec")
    headers = {**ADMIN, "content-type": "application/json"}
    answer = corpus_client.post("/v1/collections/vec/records", content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:  # refused per record
        assert answer.json()["inserted"] == [] and {e["code"] for e in answer.json()["errors"]} <= codes, answer.text
    else:
        assert answer.status_code in (400, 413) and answer.json()["code"] in codes, answer.text
    ximilar = corpus_client.post(
        "/similarity/photos/v2/insert", content=body, headers={**headers, "collection-id": "vec"}
    )
    assert 400 <= ximilar.status_code < 500, ximilar.text
    assert state(corpus_client, "vec") == before


BAD_FILTERS: list[Any] = [
    {"tag": {"$where": "sleep(1000)"}},
    {"$function": {"body": "x"}},
    {"tag": {"$gt": {"$gt": 1}}},
    {"tag": {"$in": 5}},
    {"tag": {"$regex": "(a+)+$"}},
    {"tag": {"$size": "three"}},
    {"$and": {"tag": 1}},
    {"$or": []},
    {"tag": {"$exists": "maybe"}},
    {"$nor": [{"$not": {"tag": 1}}]},
]


@pytest.mark.parametrize("flt", BAD_FILTERS, ids=[json.dumps(f)[:40] for f in BAD_FILTERS])
def test_hostile_filters_are_invalid_filter(corpus_client: Client, flt: Any) -> None:
    before = state(corpus_client, "vec")
    for path, body in (
        ("/v1/collections/vec/search", {"vector": [1, 1, 1], "filter": flt}),
        ("/v1/collections/vec/records/delete", {"filter": flt}),
    ):
        answer = corpus_client.post(path, json=body, headers=ADMIN)
        assert answer.status_code == 400 and answer.json()["code"] in ("invalid_filter", "invalid_body"), answer.text
    listed = corpus_client.get("/v1/collections/vec/records", params={"filter": json.dumps(flt)}, headers=ADMIN)
    assert listed.status_code == 400, listed.text
    ximilar = corpus_client.post(
        "/similarity/photos/v2/visualKNN",
        json={"query_record": {"_id": "v1"}, "filter": flt},
        headers={**ADMIN, "collection-id": "vec"},
    )
    assert 400 <= ximilar.status_code < 500, ximilar.text
    assert state(corpus_client, "vec") == before


def test_deeply_nested_filters_and_metadata(corpus_client: Client) -> None:
    json_headers = {**ADMIN, "content-type": "application/json"}
    deep_filter = '{"$and": [' * 2_000 + '{"tag": 1}' + "]}" * 2_000
    body = ('{"vector": [1, 1, 1], "filter": ' + deep_filter + "}").encode()
    answer = corpus_client.post("/v1/collections/vec/search", content=body, headers=json_headers)
    assert answer.status_code == 400, answer.text
    nested = '{"a":' * 5_000 + "1" + "}" * 5_000
    body = ('{"records": [{"_id": "deep", "_vector": [1, 2, 3], "m": ' + nested + "}]}").encode()
    answer = corpus_client.post("/v1/collections/vec/records", content=body, headers=json_headers)
    assert 400 <= answer.status_code < 500 or answer.json()["errors"], answer.text
    assert corpus_client.get("/v1/collections/vec/records/deep", headers=ADMIN).status_code == 404
