"""SSRF through the HTTP API: a server with the default settings refuses every `_url` that points
at a loopback, private, link-local, reserved or otherwise non-public address (in any spelling),
at a name that resolves to one, or with a scheme other than http(s) or credentials. Each is a
per-record error with a reason, on both APIs, and the other records of the batch are written.
The fetcher's own tests (tests/test_fetch.py) cover redirects, DNS rebinding at connect time,
size and time limits; these check that the server wires it in for every route that fetches."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, ClientFactory, b64, solid

Client = TestClient[Litestar]

BLOCKED = [
    "http://127.0.0.1/a.png",
    "http://127.1/a.png",
    "http://localhost/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "http://0.0.0.0/a.png",
    "http://[::1]/a.png",
    "http://[fe80::1]/a.png",
    "http://[fd00::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:a9fe:a9fe]/a.png",  # 169.254.169.254, IPv4-mapped in hex
    "http://2130706433/a.png",  # 127.0.0.1 as one decimal number
    "http://0177.0.0.1/a.png",  # octal
    "http://0x7f000001/a.png",  # hex
    "http://0x7f.0.0.1/a.png",
    "http://internal.test/a.png",  # resolves to 10.0.0.7 (the test resolver)
    "http://rebind.test/a.png",  # resolves to a public and a private address
    "file:///etc/passwd",
    "ftp://example.com/a.png",
    "gopher://example.com/_GET",
    "data:image/png;base64,AAAA",
    "javascript:alert(1)",
    "http://user:secret@example.com/a.png",
    "http://",
]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under .test resolve as a hostile DNS would; no other name is looked up."""
    answers = {
        "internal.test": ["10.0.0.7"],
        "rebind.test": ["93.184.216.34", "192.168.1.20"],
        "localhost": ["127.0.0.1"],
    }
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 80)) for address in answers[host]]
        # IP literals in any spelling (decimal, octal, hex, short) are parsed as the system
        # does; names are never looked up.
        return real(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def img(client_factory: ClientFactory, resolver: None) -> Client:
    client = client_factory()  # allow_private_urls is off by default
    created = client.post("/v1/collections", json={"name": "img", "type": "tinycolour"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    return client


def test_every_ssrf_url_is_refused_per_record_on_the_native_api(img: Client) -> None:
    records: list[dict[str, Any]] = [{"_id": f"u{n}", "_url": url} for n, url in enumerate(BLOCKED)]
    records.append({"_id": "good", "_base64": b64(solid((10, 200, 10)))})
    answer = img.post("/v1/collections/img/records", json={"records": records}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["inserted"] == ["good"]
    errors = {e["_id"]: e for e in body["errors"]}
    assert sorted(errors) == sorted(f"u{n}" for n in range(len(BLOCKED)))
    for n, url in enumerate(BLOCKED):
        error = errors[f"u{n}"]
        assert error["code"] in ("url_not_allowed", "fetch_failed", "invalid_record", "invalid_image"), (url, error)
        assert error["message"], url
    # Addresses are refused as addresses, with the reason.
    for n, url in enumerate(BLOCKED):
        if url.startswith("http://") and "@" not in url and url != "http://":
            error = errors[f"u{n}"]
            # httpx refuses a few spellings (octal) as malformed before any address is made.
            malformed = error["code"] == "fetch_failed" and "not a valid URL" in error["message"]
            assert error["code"] == "url_not_allowed" or malformed, (url, error)
    assert img.get("/v1/collections/img", headers=ADMIN).json()["count"] == 1


def test_every_ssrf_url_is_refused_per_record_on_the_ximilar_api(img: Client) -> None:
    records: list[dict[str, Any]] = [{"_id": f"x{n}", "_url": url} for n, url in enumerate(BLOCKED)]
    records.append({"_id": "good", "_base64": b64(solid((10, 10, 200)))})
    answer = img.post(
        "/similarity/photos/v2/insert", json={"records": records}, headers={**ADMIN, "collection-id": "img"}
    )
    assert answer.status_code < 500, answer.text
    body = answer.json()
    assert [r["_id"] for r in body["records"]] == ["good"]
    skipped = {s["_id"]: s["_reason"]["status"]["text"] for s in body["skipped_records"]}
    assert sorted(skipped) == sorted(f"x{n}" for n in range(len(BLOCKED)))
    assert all(reason for reason in skipped.values())
    assert "not allowed" in skipped["x6"] or "169.254.169.254" in skipped["x6"]


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://internal.test/a.png", "http://2130706433/"]
)
def test_search_by_url_refuses_private_addresses(img: Client, url: str) -> None:
    native = img.post("/v1/collections/img/search", json={"query": {"_url": url}}, headers=ADMIN)
    assert native.status_code == 400 and native.json()["code"] == "url_not_allowed", native.text
    ximilar = img.post(
        "/similarity/photos/v2/visualKNN",
        json={"query_record": {"_url": url}},
        headers={**ADMIN, "collection-id": "img"},
    )
    assert ximilar.status_code == 400 and ximilar.json()["status"]["code"] == 400, ximilar.text
