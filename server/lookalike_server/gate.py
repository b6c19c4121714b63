"""The write gate: a collection's write requests wait for their turn on the event loop, not in
worker threads.

The engine runs one write per collection at a time (its write lock), and a write can take long:
a snapshot, or any write while a compaction rebuilds the graph. Without the gate, each waiting
write request would hold one of the server's worker threads while it blocks on that lock; under
steady write traffic they soon hold every thread, and searches (which never wait for writers in
the engine) would wait for a thread. With it, at most ``WRITERS_PER_COLLECTION`` write requests of a
collection run at once; the others wait here, costing a coroutine each, and reads keep their threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["write_gate_middleware", "WRITERS_PER_COLLECTION"]

#: Write requests of one collection that may hold worker threads at once: one writing, one
#: decoding and embedding its images meanwhile (the slow part of an image insert, done before
#: the write lock).
WRITERS_PER_COLLECTION = 2
_XIMILAR_WRITES = frozenset({"insert", "update", "delete"})


def _target(scope: Scope) -> str | None:
    """The collection a write request changes, or None for any other request."""
    handler = scope.get("route_handler")
    if handler is None:
        return None
    params: dict[str, Any] = scope.get("path_params") or {}
    if handler.opt.get("access") == "write":
        name = params.get("name")
        return name if isinstance(name, str) else None
    if handler.name == "ximilar" and params.get("method") in _XIMILAR_WRITES:
        for key, value in scope.get("headers") or ():
            if key == b"collection-id":
                return value.decode("latin-1")
    return None


def write_gate_middleware(app: ASGIApp) -> ASGIApp:
    gates: dict[str, asyncio.Semaphore] = {}

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        name = _target(scope) if str(scope["type"]) == "http" else None
        if name is None:
            await app(scope, receive, send)
            return
        gate = gates.get(name)
        if gate is None:
            gate = gates.setdefault(name, asyncio.Semaphore(WRITERS_PER_COLLECTION))
        async with gate:
            await app(scope, receive, send)

    return middleware
