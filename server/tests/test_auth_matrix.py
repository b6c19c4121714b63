"""The auth matrix: every route of the application's own route table against every kind of
caller, so that a route added later cannot be forgotten (it fails here until it is classified).

Callers: no ``Authorization`` header, malformed headers, a wrong token, a revoked token, a read
and a write token of collection ``a``, a token of another collection (``b``) and the admin
token. A refusal is 401 (who are you?) or 403 (not you), a JSON error with a ``code``, carries
no data (no records, hits, ids) and changes nothing; an allowed call succeeds, and what an
``any`` route shows a collection token stays within its own collection.

The native ``/v1`` routes are walked route by route; the Ximilar-compatible API method by
method (each method on another prefix), and every prefix gets a quick check of its own. Public
routes (health, metrics, the web page, the API docs) need no token and must not carry records
or tokens.

Token comparison: the admin token's SHA-256 is compared with ``hmac.compare_digest`` and
collection tokens are found by their SHA-256 (a hashed lookup, stored only as the hash), so no
comparison time depends on how much of a guessed token is right;
``test_token_comparison_is_constant_time`` checks both.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import TinyColour, b64, png
from lookalike.sdk.registry import Registry
from lookalike_server import auth as auth_module
from lookalike_server.app import create_app
from lookalike_server.auth import TokenStore
from lookalike_server.settings import Settings
from lookalike_server.ximilar import METHODS, PREFIXES

Client = TestClient[Litestar]

ADMIN_TOKEN = "matrix-admin-token-0123456789abcdef"
#: Stored in every record's metadata and never sent by any request: a refusal must not show it.
SECRET = "SECRET-METADATA-7f3a"
IMAGE = b64(2)

#: Unauthenticated callers: each must get 401 everywhere (except public routes).
MALFORMED: dict[str, str | bytes | None] = {
    "no header": None,
    "empty header": "",
    "scheme only": "Token",
    "scheme and blank": "Token   ",
    "basic scheme": "Basic YWRtaW46YWRtaW4=",
    "no space": f"Token{ADMIN_TOKEN}",
    "tab separator": f"Token\t{ADMIN_TOKEN}",
    "unknown scheme": f"Key {ADMIN_TOKEN}",
    "admin prefix": f"Token {ADMIN_TOKEN[:-1]}",
    "admin upper case": f"Token {ADMIN_TOKEN.upper()}",
    "admin plus suffix": f"Token {ADMIN_TOKEN}x",
    "two tokens": f"Token {ADMIN_TOKEN} {ADMIN_TOKEN}",
    "wrong token": "Token wrong",
    "latin-1 bytes": b"Token adm\xefn",
    "utf-8 bytes": "Token admïn-\u2603".encode(),
}
UNAUTHENTICATED = [*MALFORMED, "revoked"]
#: Authenticated callers: a and b are collections; "other" is a write token of b.
TOKENS = ["read", "write", "other", "admin"]
CALLERS = UNAUTHENTICATED + TOKENS

#: Who may call a route of each access level (the rest get 403).
ALLOWED = {
    "admin": {"admin"},
    "write": {"write", "admin"},
    "read": {"read", "write", "admin"},
    "any": {"read", "write", "other", "admin"},
}

#: Keys that carry data in an answer; a refusal has none of them.
DATA_KEYS = {
    "records",
    "answer_records",
    "skipped_records",
    "hits",
    "ids",
    "groups",
    "collections",
    "tokens",
    "token",
    "jobs",
    "inserted",
    "deleted",
    "updated",
    "missing",
}


# -- the application ---------------------------------------------------------------------------


def _registry() -> Registry:
    found = Registry()
    found.register(TinyColour)
    return found


def _app(data: Path) -> Litestar:
    app: Litestar = create_app(Settings(data=str(data), admin_token=ADMIN_TOKEN), registry=_registry())
    return app


def route_table() -> list[tuple[str, str]]:
    """``(method, path template)`` of every route handler of the application (without the
    OPTIONS answers Litestar adds itself). Building the app starts nothing: no engine, no files."""
    app = _app(Path("never-started"))
    table: set[tuple[str, str]] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods:
                if method != "OPTIONS":
                    table.add((method, route.path))
    return sorted(table)


ROUTE_TABLE = route_table()
XIMILAR_PATHS = {prefix + "/{method:str}" for prefix in PREFIXES}
NATIVE_ROUTES = [(method, path) for method, path in ROUTE_TABLE if path.startswith("/v1/")]
XIMILAR_ROUTES = [(method, path) for method, path in ROUTE_TABLE if path in XIMILAR_PATHS]


@dataclass
class World:
    """One server for the whole module: collections ``a`` and ``b`` (each with records r1 and
    r2, their images stored), tokens, a job of ``a``; helpers that look behind the API."""

    client: Client
    tokens: dict[str, str]
    token_ids: dict[str, str]
    job_id: str
    counter: Iterator[int] = field(default_factory=itertools.count)

    def headers(self, caller: str, **extra: str) -> dict[bytes, bytes]:
        """The headers of a caller (bytes: some malformed ones are not ASCII) and `extra` ones."""
        value: str | bytes | None
        if caller in MALFORMED:
            value = MALFORMED[caller]
        elif caller == "admin":
            value = f"Token {ADMIN_TOKEN}"
        else:
            value = f"Token {self.tokens[caller]}"
        headers = {name.encode(): text.encode() for name, text in extra.items()}
        if value is not None:
            headers[b"authorization"] = value if isinstance(value, bytes) else value.encode()
        return headers

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, headers=self.headers("admin"), **kwargs)
        assert response.status_code < 300, (method, path, response.text)
        return response

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self.counter)}"

    def record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        found = self.admin("POST", f"/v1/collections/{collection}/records/get", json={"ids": [record_id]}).json()
        records: list[dict[str, Any]] = found["records"]
        return records[0] if records else None

    def add(self, collection: str, record_id: str) -> None:
        records = [{"_id": record_id, "_base64": IMAGE, "secret": SECRET}]
        answer = self.admin("POST", f"/v1/collections/{collection}/records", json={"records": records}).json()
        assert answer["inserted"] == [record_id], answer

    def collections(self) -> list[str]:
        return sorted(c["name"] for c in self.admin("GET", "/v1/collections").json()["collections"])

    def token_count(self) -> int:
        return len(self.admin("GET", "/v1/tokens").json()["tokens"])

    def job_ids(self) -> set[str]:
        return {job["id"] for job in self.admin("GET", "/v1/jobs").json()["jobs"]}

    def assert_intact(self) -> None:
        """What no refused call may have changed: collections, records, the tokens that work."""
        assert {"a", "b"} <= set(self.collections())
        for collection in ("a", "b"):
            for record_id in ("r1", "r2"):
                assert self.record(collection, record_id) is not None, (collection, record_id)
        for caller in ("read", "write", "other"):
            response = self.client.get("/v1/collections", headers=self.headers(caller))
            assert response.status_code == 200, (caller, response.text)
        refused = self.client.get("/v1/collections", headers=self.headers("revoked"))
        assert refused.status_code == 401


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    app = _app(tmp_path_factory.mktemp("auth-matrix") / "data")
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = {"Authorization": f"Token {ADMIN_TOKEN}"}
        for name in ("a", "b"):
            created = client.post(
                "/v1/collections", json={"name": name, "type": "tinycolour", "store_images": True}, headers=admin
            )
            assert created.status_code == 201, created.text
            records = [{"_id": rid, "_base64": b64(seed), "secret": SECRET} for seed, rid in enumerate(["r1", "r2"])]
            added = client.post(f"/v1/collections/{name}/records", json={"records": records}, headers=admin)
            assert added.status_code == 200 and added.json()["inserted"] == ["r1", "r2"], added.text
        tokens: dict[str, str] = {}
        ids: dict[str, str] = {}
        for label, collection, scope in (
            ("read", "a", "read"),
            ("write", "a", "write"),
            ("other", "b", "write"),
            ("revoked", "a", "write"),
        ):
            made = client.post("/v1/tokens", json={"collection": collection, "scope": scope}, headers=admin)
            assert made.status_code == 201, made.text
            tokens[label], ids[label] = made.json()["token"], made.json()["id"]
        assert client.delete(f"/v1/tokens/{ids['revoked']}", headers=admin).status_code == 204
        job = client.post("/v1/collections/a/jobs", json={"records": []}, headers=admin)
        assert job.status_code == 202, job.text
        yield World(client, tokens, ids, job.json()["id"])


# -- checks ------------------------------------------------------------------------------------


def _walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_keys(item)


def assert_native_refusal(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "code", "message"}, body
    assert (body["status"], body["code"]) == (status, {401: "unauthorized", 403: "forbidden"}[status])
    assert isinstance(body["message"], str) and body["message"]
    assert SECRET not in response.text


def assert_ximilar_refusal(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"]["code"] == status, body
    assert not DATA_KEYS & set(_walk_keys(body)), body
    if status == 401:  # Ximilar's own answer, word for word (the SDK knows it)
        assert body == {"detail": "Invalid token.", "status": {"code": 401, "text": "Invalid token."}}
    else:
        assert set(body) <= {"status", "code", "detail"}, body
        assert body["code"] == "forbidden"
    assert SECRET not in response.text


def expected_status(caller: str, allowed: set[str]) -> int:
    if caller in UNAUTHENTICATED:
        return 401
    return 200 if caller in allowed else 403


# -- native routes -----------------------------------------------------------------------------

Prepared = tuple[dict[str, Any], Callable[[httpx.Response], None] | None]


@dataclass(frozen=True)
class NativeSpec:
    """How to call one native route, who may, and what a call must (not) have done.

    ``prepare(world, caller, allowed)`` returns the request (``path`` filled in, plus
    ``json``/``files``/``data``) and an optional check run on the answer; a refused call aims at
    live data (collection ``a``, record ``r1``), so the check after it proves nothing changed.
    """

    access: str
    prepare: Callable[[World, str, bool], Prepared]


def _request(path: str, **kwargs: Any) -> dict[str, Any]:
    return {"path": path, **kwargs}


def _upload(record_id: str) -> dict[str, Any]:
    return {"files": [("file", (f"{record_id}.png", png(3), "image/png"))], "data": {"_id": record_id}}


def _create_collection(world: World, caller: str, allowed: bool) -> Prepared:
    name = world.unique("made") if allowed else "refused-collection"

    def check(response: httpx.Response) -> None:
        assert (name in world.collections()) is allowed
        if allowed:
            world.admin("DELETE", f"/v1/collections/{name}")

    return _request("/v1/collections", json={"name": name, "ndim": 2}), check


def _list_collections(world: World, caller: str, allowed: bool) -> Prepared:
    def check(response: httpx.Response) -> None:
        if allowed:
            names = sorted(c["name"] for c in response.json()["collections"])
            own = {"read": ["a"], "write": ["a"], "other": ["b"]}
            assert names == own.get(caller, world.collections()), (caller, names)

    return _request("/v1/collections"), check


def _drop_collection(world: World, caller: str, allowed: bool) -> Prepared:
    if not allowed:
        return _request("/v1/collections/a"), None  # assert_intact: "a" is still there
    name = world.unique("doomed")
    world.admin("POST", "/v1/collections", json={"name": name, "ndim": 2})

    def check(response: httpx.Response) -> None:
        assert name not in world.collections()

    return _request(f"/v1/collections/{name}"), check


def _create_token(world: World, caller: str, allowed: bool) -> Prepared:
    before = world.token_count()

    def check(response: httpx.Response) -> None:
        assert world.token_count() == before + (1 if allowed else 0)
        if allowed:
            world.admin("DELETE", f"/v1/tokens/{response.json()['id']}")

    return _request("/v1/tokens", json={"collection": "a", "scope": "write"}), check


def _revoke_token(world: World, caller: str, allowed: bool) -> Prepared:
    if not allowed:
        return _request(f"/v1/tokens/{world.token_ids['read']}"), None  # assert_intact: read still works
    made = world.admin("POST", "/v1/tokens", json={"collection": "a", "scope": "read"}).json()

    def check(response: httpx.Response) -> None:
        assert (
            world.client.get("/v1/collections/a", headers={"Authorization": f"Token {made['token']}"}).status_code
            == 401
        )

    return _request(f"/v1/tokens/{made['id']}"), check


def _absent_after(world: World, record_id: str, allowed: bool) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert (world.record("a", record_id) is not None) is allowed, record_id

    return check


def _insert(world: World, caller: str, allowed: bool) -> Prepared:
    record_id = world.unique(f"inserted-by-{caller}")
    records = [{"_id": record_id, "_base64": IMAGE}]
    return _request("/v1/collections/a/records", json={"records": records}), _absent_after(world, record_id, allowed)


def _upload_records(world: World, caller: str, allowed: bool) -> Prepared:
    record_id = world.unique(f"uploaded-by-{caller}")
    return _request("/v1/collections/a/records/upload", **_upload(record_id)), _absent_after(world, record_id, allowed)


def _update(world: World, caller: str, allowed: bool) -> Prepared:
    mark = world.unique(f"touched-by-{caller}")

    def check(response: httpx.Response) -> None:
        record = world.record("a", "r1")
        assert record is not None and (record.get("touched") == mark) is allowed

    return _request("/v1/collections/a/records", json={"records": [{"_id": "r1", "touched": mark}]}), check


def _delete(world: World, caller: str, allowed: bool) -> Prepared:
    if not allowed:
        # Both forms, aimed at live records; assert_intact proves they are still there.
        body = {"ids": ["r1"]} if caller in ("read", "other") else {"filter": {"_id": {"$in": ["r1", "r2"]}}}
        return _request("/v1/collections/a/records/delete", json=body), None
    record_id = world.unique("deletable")
    world.add("a", record_id)

    def check(response: httpx.Response) -> None:
        assert response.json() == {"deleted": 1}
        assert world.record("a", record_id) is None

    return _request("/v1/collections/a/records/delete", json={"ids": [record_id]}), check


def _create_job(world: World, caller: str, allowed: bool) -> Prepared:
    before = world.job_ids()

    def check(response: httpx.Response) -> None:
        created = world.job_ids() - before
        assert len(created) == (1 if allowed else 0), created

    records = [{"_id": world.unique(f"job-by-{caller}"), "_base64": IMAGE}]
    return _request("/v1/collections/a/jobs", json={"records": records}), check


def _list_jobs(world: World, caller: str, allowed: bool) -> Prepared:
    def check(response: httpx.Response) -> None:
        if allowed:
            collections = {job["collection"] for job in response.json()["jobs"]}
            own = {"read": {"a"}, "write": {"a"}, "other": {"b"}}
            assert collections <= own.get(caller, {"a", "b"}), (caller, collections)
            if caller != "other":
                assert world.job_id in {job["id"] for job in response.json()["jobs"]}

    return _request("/v1/jobs"), check


def _plain(path: str, **kwargs: Any) -> Callable[[World, str, bool], Prepared]:
    return lambda world, caller, allowed: (_request(path, **kwargs), None)


#: Every native route (as the route table names it) -> how to call it and who may.
NATIVE: dict[tuple[str, str], NativeSpec] = {
    ("POST", "/v1/collections"): NativeSpec("admin", _create_collection),
    ("GET", "/v1/collections"): NativeSpec("any", _list_collections),
    ("GET", "/v1/collections/{name:str}"): NativeSpec("read", _plain("/v1/collections/a")),
    ("DELETE", "/v1/collections/{name:str}"): NativeSpec("admin", _drop_collection),
    ("GET", "/v1/types"): NativeSpec("any", _plain("/v1/types")),
    ("POST", "/v1/tokens"): NativeSpec("admin", _create_token),
    ("GET", "/v1/tokens"): NativeSpec("admin", _plain("/v1/tokens")),
    ("DELETE", "/v1/tokens/{token_id:str}"): NativeSpec("admin", _revoke_token),
    ("POST", "/v1/collections/{name:str}/records"): NativeSpec("write", _insert),
    ("POST", "/v1/collections/{name:str}/records/upload"): NativeSpec("write", _upload_records),
    ("GET", "/v1/collections/{name:str}/records"): NativeSpec("read", _plain("/v1/collections/a/records")),
    ("GET", "/v1/collections/{name:str}/records/{record_id:str}"): NativeSpec(
        "read", _plain("/v1/collections/a/records/r1")
    ),
    ("GET", "/v1/collections/{name:str}/records/{record_id:str}/image"): NativeSpec(
        "read", _plain("/v1/collections/a/records/r1/image")
    ),
    ("POST", "/v1/collections/{name:str}/records/get"): NativeSpec(
        "read", _plain("/v1/collections/a/records/get", json={"ids": ["r1", "r2"]})
    ),
    ("PATCH", "/v1/collections/{name:str}/records"): NativeSpec("write", _update),
    ("POST", "/v1/collections/{name:str}/records/delete"): NativeSpec("write", _delete),
    ("POST", "/v1/collections/{name:str}/records/random"): NativeSpec(
        "read", _plain("/v1/collections/a/records/random", json={"count": 2})
    ),
    ("POST", "/v1/collections/{name:str}/search"): NativeSpec(
        "read", _plain("/v1/collections/a/search", json={"query": {"_id": "r1"}, "limit": 2})
    ),
    ("POST", "/v1/collections/{name:str}/search/upload"): NativeSpec(
        "read",
        _plain(
            "/v1/collections/a/search/upload",
            files=[("file", ("q.png", png(1), "image/png"))],
            data={"options": '{"limit": 2}'},
        ),
    ),
    ("POST", "/v1/collections/{name:str}/rank"): NativeSpec(
        "read", _plain("/v1/collections/a/rank", json={"query": {"_id": "r1"}, "ids": ["r1", "r2"]})
    ),
    ("POST", "/v1/collections/{name:str}/near-duplicates"): NativeSpec(
        "read", _plain("/v1/collections/a/near-duplicates", json={"threshold": 10.0})
    ),
    ("POST", "/v1/collections/{name:str}/jobs"): NativeSpec("write", _create_job),
    ("GET", "/v1/jobs"): NativeSpec("any", _list_jobs),
    # A job belongs to its collection: its tokens may read it, others may not.
    ("GET", "/v1/jobs/{job_id:str}"): NativeSpec(
        "read", lambda world, caller, allowed: (_request(f"/v1/jobs/{world.job_id}"), None)
    ),
}


def test_every_native_route_is_in_the_matrix() -> None:
    """A new route fails here until NATIVE says who may call it; a removed one too."""
    assert NATIVE_ROUTES, "no /v1 routes found in the route table"
    missing = sorted(set(NATIVE_ROUTES) - set(NATIVE))
    assert not missing, f"native routes without an auth matrix entry (add them to NATIVE): {missing}"
    stale = sorted(set(NATIVE) - set(NATIVE_ROUTES))
    assert not stale, f"NATIVE names routes the app does not have: {stale}"


@pytest.mark.parametrize(("method", "template"), NATIVE_ROUTES, ids=[f"{m} {p}" for m, p in NATIVE_ROUTES])
def test_native_route(world: World, method: str, template: str) -> None:
    spec = NATIVE.get((method, template))
    if spec is None:
        pytest.fail(f"{method} {template} is not in the auth matrix (NATIVE)")
    allowed = ALLOWED[spec.access]
    for caller in CALLERS:
        request, check = spec.prepare(world, caller, caller in allowed)
        path = request.pop("path")
        response = world.client.request(method, path, headers=world.headers(caller), **request)
        status = expected_status(caller, allowed)
        if status == 200:
            assert response.status_code < 300, (caller, response.text)
        else:
            assert_native_refusal(response, status)
        if check is not None:
            check(response)
    world.assert_intact()


def test_options_answers_carry_no_data(world: World) -> None:
    """Litestar answers OPTIONS itself; on /v1 it runs behind the same auth hook."""
    for path in ("/v1/collections", "/v1/collections/a/records", "/v1/tokens", "/v1/jobs"):
        for caller in ("no header", "wrong token", "read", "other"):
            response = world.client.options(path, headers=world.headers(caller))
            assert response.status_code in (200, 204, 401, 403), (path, caller, response.text)
            if response.status_code >= 400:
                assert_native_refusal(response, response.status_code)
            assert SECRET not in response.text and "r1" not in response.text


def test_a_token_of_another_collection_learns_nothing(world: World) -> None:
    """Not even whether a collection or a record exists: 403 alike."""
    for path in ("/v1/collections/a", "/v1/collections/nosuch", "/v1/collections/a/records/nosuch"):
        assert_native_refusal(world.client.get(path, headers=world.headers("other")), 403)
    for path in ("/v1/collections/nosuch", "/v1/collections/nosuch/records/r1"):
        assert_native_refusal(world.client.get(path, headers=world.headers("wrong token")), 401)
    unknown_job = world.client.get("/v1/jobs/nosuch", headers=world.headers("other"))
    assert unknown_job.status_code == 404  # job ids are random: knowing one is not a leak


def test_dropping_a_collection_revokes_its_tokens(world: World) -> None:
    """A collection dropped and created again under the same name does not honour old tokens."""
    name = world.unique("reborn")
    world.admin("POST", "/v1/collections", json={"name": name, "ndim": 2})
    token = world.admin("POST", "/v1/tokens", json={"collection": name, "scope": "write"}).json()["token"]
    headers = {"Authorization": f"Token {token}"}
    assert world.client.get(f"/v1/collections/{name}", headers=headers).status_code == 200
    world.admin("DELETE", f"/v1/collections/{name}")
    world.admin("POST", "/v1/collections", json={"name": name, "ndim": 2})
    assert_native_refusal(world.client.get(f"/v1/collections/{name}", headers=headers), 401)
    world.admin("DELETE", f"/v1/collections/{name}")


# -- the Ximilar-compatible API ----------------------------------------------------------------


def _present_is(world: World, record_id: str, expected: bool) -> Callable[[], None]:
    def check() -> None:
        assert (world.record("a", record_id) is not None) is expected, record_id

    return check


#: Bodies of the methods that only read (on collection "a").
XIMILAR_READS: dict[str, Any] = {
    "ping": {},
    "get": {"records": [{"_id": "r1"}], "fields_to_return": ["*"]},
    "visualKNN": {"query_record": {"_id": "r1"}, "k": 2, "fields_to_return": ["*"]},
    "visualTagsKNN": {"query_record": {"_id": "r1"}, "k": 2},
    "visualRankRecords": {"query_record": {"_id": "r1"}, "records": [{"_id": "r1"}, {"_id": "r2"}]},
    "random": {"count": 2, "fields_to_return": ["*"]},
    "allRecords": {"fields_to_return": ["*"]},
    "text": {"query_record": {"_text_data": "a red picture"}, "k": 2},
    "nearDuplicates": {"threshold": 10.0},
}
XIMILAR_WRITES = ("insert", "delete", "update")


def _ximilar_body(world: World, method: str, caller: str, allowed: bool) -> tuple[Any, Callable[[], None] | None]:
    """A valid body for `method` on collection "a" and a check of what it changed; a refused
    write aims at live records."""
    if method == "insert":
        record_id = world.unique(f"x-inserted-by-{caller}")
        return {"records": [{"_id": record_id, "_base64": IMAGE}]}, _present_is(world, record_id, allowed)
    if method == "delete":
        if not allowed:
            return {"records": [{"_id": "r1"}, {"_id": "r2"}]}, None  # assert_intact: still there
        record_id = world.unique("x-deletable")
        world.add("a", record_id)
        return {"records": [{"_id": record_id}]}, _present_is(world, record_id, False)
    if method == "update":
        mark = world.unique(f"x-touched-by-{caller}")

        def updated() -> None:
            record = world.record("a", "r2")
            assert record is not None and (record.get("touched") == mark) is allowed

        return {"records": [{"_id": "r2", "touched": mark}]}, updated
    return XIMILAR_READS[method], None


#: Which callers may use each method: ``None`` (ping) is any valid token, with no collection.
XIMILAR_ALLOWED = {method: ALLOWED["any" if scope is None else scope] for method, scope in METHODS.items()}
#: Each method on its own prefix, so every method and every prefix is walked with every caller.
XIMILAR_CASES = [(method, PREFIXES[i % len(PREFIXES)]) for i, method in enumerate(sorted(METHODS))]


def test_every_ximilar_route_and_method_is_in_the_matrix() -> None:
    paths = {path for _, path in XIMILAR_ROUTES}
    assert paths == XIMILAR_PATHS, paths ^ XIMILAR_PATHS
    assert {method for method, _ in XIMILAR_ROUTES} == {"POST"}
    assert {method for method, _ in XIMILAR_CASES} == set(METHODS)
    assert set(XIMILAR_READS) | set(XIMILAR_WRITES) == set(METHODS), "a new Ximilar method needs a body here"


@pytest.mark.parametrize(("method", "prefix"), XIMILAR_CASES, ids=[f"{p}/{m}" for m, p in XIMILAR_CASES])
def test_ximilar_method(world: World, method: str, prefix: str) -> None:
    allowed = XIMILAR_ALLOWED[method]
    for caller in CALLERS:
        body, check = _ximilar_body(world, method, caller, caller in allowed)
        headers = world.headers(caller, **{"collection-id": "a"})
        response = world.client.post(f"{prefix}/{method}", json=body, headers=headers)
        status = expected_status(caller, allowed)
        if status == 200:
            answer = response.json()
            assert response.status_code < 300 and answer["status"]["code"] < 300, (caller, response.text)
        else:
            assert_ximilar_refusal(response, status)
        if check is not None:
            check()
    world.assert_intact()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_ximilar_prefix_checks_tokens(world: World, prefix: str) -> None:
    body = {"records": [{"_id": "r1"}], "fields_to_return": ["*"]}
    for caller in ("no header", "wrong token", "revoked"):
        response = world.client.post(
            f"{prefix}/get", json=body, headers=world.headers(caller, **{"collection-id": "a"})
        )
        assert_ximilar_refusal(response, 401)
    for collection in ("a", "nosuch"):  # never says whether a collection exists
        response = world.client.post(
            f"{prefix}/get", json=body, headers=world.headers("other", **{"collection-id": collection})
        )
        assert_ximilar_refusal(response, 403)
    write = world.client.post(f"{prefix}/delete", json=body, headers=world.headers("read", **{"collection-id": "a"}))
    assert_ximilar_refusal(write, 403)
    ok = world.client.post(f"{prefix}/get", json=body, headers=world.headers("read", **{"collection-id": "a"}))
    assert ok.status_code == 200 and ok.json()["answer_records"][0]["secret"] == SECRET
    # Authentication comes first: an unknown method or a missing collection tells a stranger nothing.
    assert_ximilar_refusal(world.client.post(f"{prefix}/nosuchmethod", json={}), 401)
    assert_ximilar_refusal(world.client.post(f"{prefix}/get", json=body), 401)
    missing = world.client.post(f"{prefix}/get", json=body, headers=world.headers("read"))
    assert missing.status_code == 400 and missing.json()["code"] == "missing_collection"


# -- public routes -----------------------------------------------------------------------------

#: Routes that need no token (path template -> a path to fetch). They must not carry records.
PUBLIC = {
    "/": "/",
    "/health": "/health",
    "/metrics": "/metrics",
    "/ui": "/ui",
    "/ui/{file_path:path}": "/ui/index.html",
    "/docs": "/docs",
    "/docs/openapi.json": "/docs/openapi.json",
    "/docs/openapi.yaml": "/docs/openapi.yaml",
    "/docs/openapi.yml": "/docs/openapi.yml",
    "/docs/swagger": "/docs/swagger",
    "/docs/redoc": "/docs/redoc",
    "/docs/rapidoc": "/docs/rapidoc",
    "/docs/elements": "/docs/elements",
    "/docs/oauth2-redirect.html": "/docs/oauth2-redirect.html",
    "/docs/{path:str}": "/docs/nosuch",
}


def test_every_other_route_is_public_and_carries_no_data(world: World) -> None:
    others = {path for _, path in ROUTE_TABLE if not path.startswith("/v1/") and path not in XIMILAR_PATHS}
    assert others == set(PUBLIC), f"classify these routes (PUBLIC or an auth matrix): {others ^ set(PUBLIC)}"
    secrets = [SECRET, ADMIN_TOKEN, *world.tokens.values()]
    for path in PUBLIC.values():
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code < 500, (path, response.text)
        for secret in secrets:
            assert secret not in response.text, (path, secret)


# -- how tokens are compared -------------------------------------------------------------------


def test_token_comparison_is_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin token is checked with hmac.compare_digest over SHA-256 digests (constant time
    whatever the guess); collection tokens are found by their SHA-256 in an indexed column (a
    hashed lookup: the time depends on the digest, not on how much of the token is right) and
    are never stored in clear."""
    compared: list[tuple[str, str]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    store = TokenStore(tmp_path / "tokens.db", "the-admin-token")
    try:
        assert store.authenticate("Token the-admin-token").admin
        admin_digest = hashlib.sha256(b"the-admin-token").hexdigest()
        assert compared == [(admin_digest, admin_digest)]
        token, _ = store.create("a", "read")
        principal = store.authenticate(f"Token {token}")
        assert (principal.admin, principal.collection, principal.scope) == (False, "a", "read")
        assert len(compared) == 2  # every token is first compared with the admin digest, in constant time
        for guess in ("Token the-admin-toke", f"Token {token[:-1]}"):
            with pytest.raises(auth_module.Unauthorized):
                store.authenticate(guess)
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        stored = db.execute("SELECT digest FROM tokens").fetchall()
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]
    for name in ("tokens.db", "tokens.db-wal"):
        path = tmp_path / name
        if path.exists():
            assert token.encode() not in path.read_bytes()
