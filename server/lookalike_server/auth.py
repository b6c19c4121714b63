"""Tokens: an admin token from the settings, and per-collection tokens with a read or write
scope that the admin creates and revokes. Tokens are random (256 bits) and stored only as their
SHA-256, so a leaked database reveals none; comparisons run in constant time.

Requests send ``Authorization: Token <token>`` (also ``Bearer`` and, as the Ximilar SDK does for
long tokens, ``JWT``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lookalike.storage import storage_error
from lookalike_server.errors import Forbidden, Unauthorized

__all__ = ["Principal", "TokenStore", "parse_authorization", "Scope"]

Scope = Literal["read", "write"]
SCHEMES = ("token", "bearer", "jwt")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    created REAL NOT NULL,
    revoked REAL,
    note TEXT NOT NULL DEFAULT ''
);
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or a token bound to one collection with a scope."""

    admin: bool
    collection: str | None = None
    scope: Scope | None = None
    token_id: str | None = None

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("this needs the admin token")

    def require(self, collection: str, scope: Scope) -> None:
        """Raises 403 unless this principal may act on `collection` with `scope`."""
        if self.admin:
            return
        if self.collection != collection:
            raise Forbidden(f"this token is not valid for collection {collection!r}")
        if scope == "write" and self.scope != "write":
            raise Forbidden("this token may only read; writing needs a token with the write scope")


def parse_authorization(header: str | None) -> str | None:
    """The token of an ``Authorization`` header (None when absent or malformed)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in SCHEMES or not value.strip():
        return None
    return value.strip()


class TokenStore:
    """Per-collection tokens in ``<data>/server.db`` (SQLite)."""

    def __init__(self, path: Path, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("an admin token is required")
        self._admin_digest = _digest(admin_token)
        self._path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def authenticate(self, header: str | None) -> Principal:
        token = parse_authorization(header)
        if token is None:
            raise Unauthorized()
        digest = _digest(token)
        if hmac.compare_digest(digest, self._admin_digest):
            return Principal(admin=True)
        with self._lock:
            row = self._db.execute(
                "SELECT id, collection, scope, revoked FROM tokens WHERE digest = ?", (digest,)
            ).fetchone()
        if row is None:
            raise Unauthorized("invalid token")
        if row[3] is not None:
            raise Unauthorized("this token was revoked")
        return Principal(admin=False, collection=row[1], scope=row[2], token_id=row[0])

    def create(self, collection: str, scope: Scope, note: str = "") -> tuple[str, dict[str, object]]:
        """A new token (returned once, never stored in clear) and its description."""
        token = "lk_" + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        created = time.time()
        with self._lock, _writing("cannot store the token"):
            self._db.execute(
                "INSERT INTO tokens (id, digest, collection, scope, created, note) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, _digest(token), collection, scope, created, note),
            )
        return token, self._describe((token_id, collection, scope, created, None, note))

    @staticmethod
    def _describe(row: tuple[object, ...]) -> dict[str, object]:
        token_id, collection, scope, created, revoked, note = row
        return {
            "id": token_id,
            "collection": collection,
            "scope": scope,
            "created": created,
            "revoked": revoked is not None,
            "note": note,
        }

    def list(self, collection: str | None = None) -> list[dict[str, object]]:
        query = "SELECT id, collection, scope, created, revoked, note FROM tokens"
        args: tuple[object, ...] = ()
        if collection is not None:
            query += " WHERE collection = ?"
            args = (collection,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
        return [self._describe(tuple(row)) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revokes a token; False when no such token exists."""
        with self._lock, _writing("cannot revoke the token"):
            cursor = self._db.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), token_id)
            )
            if cursor.rowcount:
                return True
            return self._db.execute("SELECT 1 FROM tokens WHERE id = ?", (token_id,)).fetchone() is not None

    def revoke_collection(self, collection: str) -> None:
        """Revokes every token of a collection (when it is dropped)."""
        with self._lock, _writing("cannot revoke the collection's tokens"):
            self._db.execute(
                "UPDATE tokens SET revoked = ? WHERE collection = ? AND revoked IS NULL", (time.time(), collection)
            )


@contextlib.contextmanager
def _writing(what: str) -> Iterator[None]:
    """A token write that fails on the disk (full, read-only) raises the typed storage error."""
    try:
        yield
    except sqlite3.Error as error:
        raise storage_error(error, what) from error
