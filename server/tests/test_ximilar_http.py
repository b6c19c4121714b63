"""The Ximilar routes over raw HTTP (httpx) against a real server process: every error is a JSON
object in the ``status`` envelope (no token, bad token, another collection's token, unknown
collection, malformed JSON, unknown method, oversize body...), and the details of the wire
protocol the SDK does not exercise (data-URIs, integer ids, ``_``-prefixed metadata, paging
while deleting, the insert capacity)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ximilar_fixtures import (  # noqa: F401 - fixtures
    ADMIN_TOKEN,
    Server,
    b64,
    picture,
    post,
    prepare_data,
    start_server,
    ximilar_images,
    ximilar_server,
)

PHOTOS = "similarity/photos/v2/"


def envelope(response: httpx.Response, code: int) -> dict[str, Any]:
    """The body of an error answer: a JSON object whose status code is the HTTP status, with
    no records (so the SDK's batch helpers count it as an error)."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert body["status"]["code"] == code
    assert isinstance(body["status"]["text"], str) and body["status"]["text"]
    assert not {"records", "answer_records"} & set(body)
    return body


INVALID_TOKEN = {"detail": "Invalid token.", "status": {"code": 401, "text": "Invalid token."}}


# -- auth ----------------------------------------------------------------------------------------


def test_no_token(ximilar_server: Server) -> None:  # noqa: F811
    response = httpx.post(f"{ximilar_server.base}/{PHOTOS}visualKNN", json={"query_record": {"_id": "x"}})
    assert envelope(response, 401) == INVALID_TOKEN


@pytest.mark.parametrize("header", ["Token wrong", "JWT wrong", "Basic abc", "Token", ""])
def test_bad_token(ximilar_server: Server, header: str) -> None:  # noqa: F811
    response = post(ximilar_server, PHOTOS + "get", headers={"Authorization": header, "collection-id": "photos"})
    assert envelope(response, 401) == INVALID_TOKEN


def test_bad_token_on_ping_and_unknown_method(ximilar_server: Server) -> None:  # noqa: F811
    for method in ("ping", "nope"):
        response = post(ximilar_server, PHOTOS + method, body=None, headers={"Authorization": "Token wrong"})
        assert envelope(response, 401) == INVALID_TOKEN


def test_jwt_scheme(ximilar_server: Server) -> None:  # noqa: F811
    response = post(ximilar_server, PHOTOS + "ping", body=None, headers={"Authorization": f"JWT {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert response.json()["status"] == {"code": 200, "text": "OK"}


def test_collection_tokens(ximilar_server: Server) -> None:  # noqa: F811
    read = ximilar_server.tokens["photos:read"]
    write = ximilar_server.tokens["photos:write"]
    other = ximilar_server.tokens["other:write"]
    query = json.dumps({"records": [{"_id": "nothing"}]}).encode()
    ok = post(ximilar_server, PHOTOS + "get", query, {"Authorization": f"Token {read}", "collection-id": "photos"})
    assert ok.json()["status"]["code"] == 404  # read is allowed; the record does not exist
    refused = post(
        ximilar_server, PHOTOS + "delete", query, {"Authorization": f"Token {read}", "collection-id": "photos"}
    )
    assert "write" in envelope(refused, 403)["status"]["text"]
    allowed = post(
        ximilar_server, PHOTOS + "delete", query, {"Authorization": f"Token {write}", "collection-id": "photos"}
    )
    assert allowed.json()["status"]["code"] == 404
    for collection in ("photos", "no-such-collection"):  # never says whether it exists
        wrong = post(
            ximilar_server, PHOTOS + "get", query, {"Authorization": f"Token {other}", "collection-id": collection}
        )
        assert envelope(wrong, 403)["code"] == "forbidden"
    ping = post(ximilar_server, PHOTOS + "ping", None, {"Authorization": f"Token {other}"})
    assert ping.json()["status"]["code"] == 200


def test_sdk_with_a_collection_token(ximilar_server: Server) -> None:  # noqa: F811
    from ximilar.client import SimilarityPhotosClient

    read = SimilarityPhotosClient(
        ximilar_server.tokens["photos:read"],
        "photos",
        endpoint=ximilar_server.endpoint(PHOTOS),
        resource_name=None,
    )
    assert read.ping()["status"]["code"] == 200
    assert read.random(count=1)["status"]["code"] == 200
    refused = read.insert([{"_id": "x", "_base64": b64(picture(1)), "noresize": True}])
    assert refused["status"]["code"] == 403 and "records" not in refused
    wrong = SimilarityPhotosClient(
        ximilar_server.tokens["photos:read"], "other", endpoint=ximilar_server.endpoint(PHOTOS), resource_name=None
    )
    assert wrong.random()["status"]["code"] == 403


# -- routing and bodies -------------------------------------------------------------------------


def test_unknown_and_missing_collection(ximilar_server: Server) -> None:  # noqa: F811
    unknown = post(ximilar_server, PHOTOS + "random", headers={"collection-id": "no-such-collection"})
    assert "no-such-collection" in envelope(unknown, 404)["status"]["text"]
    missing = post(ximilar_server, PHOTOS + "random")
    assert "collection-id" in envelope(missing, 400)["status"]["text"]
    invalid = post(ximilar_server, PHOTOS + "random", headers={"collection-id": "../etc"})
    envelope(invalid, 400)


def test_ping_with_empty_body(ximilar_server: Server) -> None:  # noqa: F811
    response = httpx.post(
        f"{ximilar_server.base}/{PHOTOS}ping",
        headers={"Authorization": f"Token {ADMIN_TOKEN}", "Content-Type": "application/json", "Content-Length": "0"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == {"code": 200, "text": "OK"}
    assert isinstance(body["statistics"]["OperationTime"], int)


def test_every_prefix_answers(ximilar_server: Server) -> None:  # noqa: F811
    from lookalike_server.ximilar import SERVICE_PREFIXES

    for prefix in SERVICE_PREFIXES:
        response = post(ximilar_server, f"{prefix}/ping", body=None)
        assert response.json()["status"]["code"] == 200, prefix


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"records": [}', b"\xff\xfe"])
def test_malformed_json(ximilar_server: Server, body: bytes) -> None:  # noqa: F811
    response = post(ximilar_server, PHOTOS + "insert", body=body, headers={"collection-id": "mutations"})
    assert envelope(response, 400)["code"] == "invalid_json"


def test_body_not_an_object(ximilar_server: Server) -> None:  # noqa: F811
    response = post(ximilar_server, PHOTOS + "insert", body=b"[1, 2]", headers={"collection-id": "mutations"})
    envelope(response, 400)


def test_unknown_method_and_paths(ximilar_server: Server) -> None:  # noqa: F811
    unknown = post(ximilar_server, PHOTOS + "visualKnn", headers={"collection-id": "photos"})
    assert "visualKNN" in envelope(unknown, 404)["status"]["text"]
    deeper = post(ximilar_server, PHOTOS + "insert/more", headers={"collection-id": "photos"})
    envelope(deeper, 404)
    bare = post(ximilar_server, PHOTOS.rstrip("/"))
    envelope(bare, 404)
    wrong_verb = httpx.get(
        f"{ximilar_server.base}/{PHOTOS}random", headers={"Authorization": f"Token {ADMIN_TOKEN}"}, timeout=30
    )
    envelope(wrong_verb, 405)


@pytest.mark.parametrize(
    ("method", "body", "fragment"),
    [
        ("visualKNN", {"query_record": {"_id": "x"}, "k": "many"}, "k must be an integer"),
        ("visualKNN", {"query_record": {"_id": "x"}, "k": 0}, "k must be from 1"),
        ("visualKNN", {"query_record": {"_id": "x"}, "from": -1}, "from must be from 0"),
        ("visualKNN", {"query_record": "x"}, "query_record"),
        ("visualKNN", {}, "query_record"),
        ("visualKNN", {"query_record": {"category": "x"}}, "_id, _url, _base64"),
        ("visualKNN", {"query_record": {"_base64": "bm90IGFuIGltYWdl"}}, "image"),
        ("visualKNN", {"query_record": {"_url": "ftp://example.com/a.png"}}, "ftp"),
        ("visualKNN", {"query_record": {"_id": 1.5}}, "_id must be a string"),
        ("visualKNN", {"query_record": {"_file": "/etc/hosts"}}, "_file"),
        ("visualKNN", {"query_record": {"_id": "photos-1"}, "filter": {"seed": {"$foo": 1}}}, "$foo"),
        ("visualKNN", {"query_record": {"_id": "photos-1"}, "filter": [1]}, "filter"),
        ("visualKNN", {"query_record": {"_id": "photos-1"}, "fields_to_return": 5}, "fields_to_return"),
        ("insert", {"records": {"_id": "x"}}, "records"),
        ("insert", {}, "records"),
        ("delete", {"records": []}, "records"),
        ("get", {"records": "abc"}, "records"),
        ("random", {"count": -3}, "count"),
        ("random", {"count": 2, "filter": {"$where": "1"}}, "$where"),
        ("allRecords?size=abc&page=1", {}, "size"),
        ("allRecords?size=2&page=0", {}, "page"),
        ("text", {"query_record": {"_id": "photos-1"}}, "_text_data"),
        ("nearDuplicates", {"query_record": {"_id": "photos-1"}, "threshold": "close"}, "threshold"),
        ("visualRankRecords", {"query_record": {"_id": "photos-1"}}, "records"),
    ],
)
def test_bad_requests(ximilar_server: Server, method: str, body: dict[str, Any], fragment: str) -> None:  # noqa: F811
    response = post(ximilar_server, PHOTOS + method, json.dumps(body).encode(), {"collection-id": "photos"})
    assert fragment in envelope(response, 400)["status"]["text"]


def test_query_of_a_missing_url(ximilar_server: Server, ximilar_images: Any) -> None:  # noqa: F811
    url = ximilar_images.add("present.png", b"x")[: -len("present.png")] + "absent.png"
    response = post(
        ximilar_server,
        PHOTOS + "visualKNN",
        json.dumps({"query_record": {"_url": url}}).encode(),
        {"collection-id": "photos"},
    )
    envelope(response, 400)


# -- records -------------------------------------------------------------------------------------


def call(server: Server, method: str, body: dict[str, Any], collection: str = "mutations") -> dict[str, Any]:
    response = post(server, PHOTOS + method, json.dumps(body).encode(), {"collection-id": collection})
    result: dict[str, Any] = response.json()
    assert response.status_code == result["status"]["code"]
    return result


def test_data_uri_integer_ids_and_underscore_fields(ximilar_server: Server) -> None:  # noqa: F811
    uri = "data:image/png;base64," + b64(picture(60))
    record = {"_id": 601, "_base64": uri, "_estate_id": 17, "_meta": {"a": 1}, "noresize": True, "plain": "x"}
    inserted = call(ximilar_server, "insert", {"records": [record], "fields_to_return": ["*"]})
    assert inserted["status"]["code"] == 210
    assert inserted["records"] == [{"_id": "601", "_estate_id": 17, "_meta": {"a": 1}, "plain": "x"}]
    found = call(
        ximilar_server,
        "visualKNN",
        {
            "query_record": {"_base64": uri},
            "k": 1,
            "filter": {"_estate_id": {"$gte": 17}, "_meta.a": 1},
            "fields_to_return": ["_estate_id", "_meta"],
        },
    )
    assert found["answer_records"] == [{"_id": "601", "_estate_id": 17, "_meta": {"a": 1}}]
    updated = call(ximilar_server, "update", {"records": [{"_id": 601, "_estate_id": 18}]})
    assert updated["records"][0]["_estate_id"] == 18
    assert call(ximilar_server, "delete", {"records": [{"_id": 601}]})["status"]["code"] == 220


def test_url_and_base64_together(ximilar_server: Server, ximilar_images: Any) -> None:  # noqa: F811
    # The image comes from `_base64`; `_url` (here pointing at another picture) is kept as metadata.
    url = ximilar_images.add("both-61.png", b"not read")
    record = {"_id": "both", "_base64": b64(picture(61)), "_url": url}
    assert call(ximilar_server, "insert", {"records": [record]})["status"]["code"] == 210
    found = call(
        ximilar_server,
        "visualKNN",
        {"query_record": {"_base64": b64(picture(61))}, "k": 1, "fields_to_return": ["_url"]},
    )
    assert found["answer_records"] == [{"_id": "both", "_url": url}]
    assert found["answer_distances"][0] < 0.01
    call(ximilar_server, "delete", {"records": [{"_id": "both"}]})


def test_text_query_on_a_visual_method_and_query_by_id_and_text(ximilar_server: Server) -> None:  # noqa: F811
    records = [{"_id": f"t{seed}", "_base64": b64(picture(seed + 70))} for seed in range(3)]
    assert call(ximilar_server, "insert", {"records": records})["status"]["code"] == 210
    mixed = call(
        ximilar_server,
        "text",
        {"query_record": {"_id": "t1", "_text_data": "a picture"}, "k": 3, "text_weight": 0.2},
    )
    assert mixed["answer_count"] == 3
    call(ximilar_server, "delete", {"records": [{"_id": r["_id"]} for r in records]})


def test_paging_with_deletes_and_exact_last_page(ximilar_server: Server) -> None:  # noqa: F811
    records = [{"_id": f"p{i:02d}", "_vector": [1, i, 0, 0]} for i in range(10)]
    assert call(ximilar_server, "insert", {"records": records}, "paging")["status"]["code"] == 210
    first = call(ximilar_server, "allRecords?size=5&page=1", {}, "paging")
    assert [r["_id"] for r in first["answer_records"]] == [f"p{i:02d}" for i in range(5)]
    assert first["next"] == "allRecords?size=5&page=2"
    # Deleting what was read (as Ximilar's clean_collection script does) skips nothing.
    call(ximilar_server, "delete", {"records": first["answer_records"]}, "paging")
    second = call(ximilar_server, "allRecords?size=5&page=2", {}, "paging")
    assert [r["_id"] for r in second["answer_records"]] == [f"p{i:02d}" for i in range(5, 10)]
    assert "next" not in second  # exactly full last page: no further page
    fresh = call(ximilar_server, "allRecords?size=5&page=1", {}, "paging")
    assert [r["_id"] for r in fresh["answer_records"]] == [f"p{i:02d}" for i in range(5, 10)]
    assert "next" not in fresh
    call(ximilar_server, "delete", {"records": fresh["answer_records"]}, "paging")
    empty = call(ximilar_server, "allRecords?size=5&page=1", {}, "paging")
    assert empty["answer_records"] == [] and "next" not in empty


def test_parallel_records_processing(ximilar_server: Server, tmp_path: Path) -> None:  # noqa: F811
    from ximilar.client import SimilarityPhotosClient

    client = SimilarityPhotosClient(ADMIN_TOKEN, "paging", endpoint=ximilar_server.endpoint(PHOTOS), resource_name=None)
    records = [{"_id": f"par{i}", "_vector": [1, 0, i, 1]} for i in range(6)]
    records.append({"_id": "par0", "_vector": [1, 1, 1, 1]})
    errors = tmp_path / "errors.json"
    results = client.parallel_records_processing(
        records, method=client.insert, max_workers=2, batch_size=3, error_file=str(errors)
    )
    status = {"answer_records": 0, "records": 0, "error": 0, "skipped_records": 0}
    for result in results:
        client.update_status(status, result, [], [])
    assert status["records"] == 6 and status["error"] == 1
    assert json.loads(errors.read_text())[0]["_id"] == "par0"
    client.remove([{"_id": f"par{i}"} for i in range(6)])


# -- a second server with small limits -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("ximilar-small") / "data"
    prepare_data(data, {"tiny": {"type": "vectors", "ndim": 2, "metric": "l2sq"}})
    server = start_server(data, {"LOOKALIKE_MAX_BODY_BYTES": "4096", "LOOKALIKE_XIMILAR_MAX_RECORDS": "3"})
    try:
        yield server
    finally:
        server.stop()


def test_oversize_body(small_server: Server) -> None:
    body = json.dumps({"records": [{"_id": "big", "_vector": [1, 2], "pad": "x" * 8000}]}).encode()
    response = post(small_server, PHOTOS + "insert", body, {"collection-id": "tiny"})
    assert envelope(response, 413)["code"] == "body_too_large"


def test_capacity(small_server: Server) -> None:
    def insert(ids: list[str]) -> dict[str, Any]:
        records = [{"_id": id_, "_vector": [1, i]} for i, id_ in enumerate(ids)]
        result: dict[str, Any] = post(
            small_server, PHOTOS + "insert", json.dumps({"records": records}).encode(), {"collection-id": "tiny"}
        ).json()
        return result

    partial = insert(["a", "b", "c", "d"])
    assert partial["status"]["code"] == 211
    assert [r["_id"] for r in partial["records"]] == ["a", "b", "c"]
    assert partial["skipped_records"] == [
        {"_id": "d", "_reason": {"status": {"code": 412, "text": "hard capacity exceeded"}}}
    ]
    full = insert(["e"])
    assert full["status"] == {"code": 412, "text": "hard capacity exceeded"}


# -- in process: what a real server cannot be made to do ---------------------------------------


def test_internal_errors_keep_the_envelope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from litestar.testing import TestClient

    from lookalike import errors as lk
    from lookalike_server import ximilar
    from lookalike_server.app import create_app
    from lookalike_server.settings import load_settings

    def broken(call: Any) -> Any:
        raise RuntimeError("secret internals")

    def failing(call: Any) -> Any:
        raise lk.ModelError("the model file is missing")

    monkeypatch.setitem(ximilar.HANDLERS, "ping", broken)
    monkeypatch.setitem(ximilar.HANDLERS, "random", failing)
    settings = load_settings(overrides={"data": str(tmp_path / "data"), "admin_token": ADMIN_TOKEN}, environ={})
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Token {ADMIN_TOKEN}", "collection-id": "nothing"}
        crashed = client.post(f"/{PHOTOS}ping", headers=headers)
        body = envelope(crashed, 500)
        assert "secret" not in crashed.text and body["code"] == "internal_error"
        failed = client.post(f"/{PHOTOS}random", content=b"{}", headers=headers)
        envelope(failed, 404)  # the collection is looked up first
