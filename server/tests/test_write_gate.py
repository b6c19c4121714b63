"""Searches keep answering while a collection's writes wait: a long write (here: the write lock
held by another thread, as a snapshot or a compaction does) must not let queued write requests
take every worker thread of the server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from conftest import ADMIN
from lookalike_server.app import create_app
from lookalike_server.gate import WRITERS_PER_COLLECTION
from lookalike_server.settings import Settings

WAITING_WRITES = 80  # twice the worker threads anyio gives sync handlers by default


async def scenario(app: Any, base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        created = await client.post("/v1/collections", json={"name": "c", "ndim": 2}, headers=ADMIN)
        assert created.status_code == 201, created.text
        first = [{"_id": "a", "_vector": [1.0, 0.0]}]
        inserted = await client.post("/v1/collections/c/records", json={"records": first}, headers=ADMIN)
        assert inserted.status_code == 200, inserted.text
        services: Any = app.state["services"]
        lock = services.engine.collection("c")._store.write_lock
        held, release = threading.Event(), threading.Event()

        def long_write() -> None:
            with lock:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=long_write)
        holder.start()
        held.wait(10)
        try:
            writes = [
                asyncio.create_task(
                    client.post(
                        "/v1/collections/c/records",
                        json={"records": [{"_id": f"w{n}", "_vector": [1.0, float(n)]}]},
                        headers=ADMIN,
                    )
                )
                for n in range(WAITING_WRITES)
            ]
            await asyncio.sleep(0.5)
            assert sum(task.done() for task in writes) == 0  # they all wait for the lock
            # Reads keep answering meanwhile, on both APIs.
            search = client.post("/v1/collections/c/search", json={"vector": [1.0, 0.0], "limit": 1}, headers=ADMIN)
            answer = await asyncio.wait_for(search, timeout=30)
            assert answer.status_code == 200 and answer.json()["hits"][0]["_id"] == "a"
            knn = client.post(
                "/similarity/photos/v2/visualKNN",
                json={"query_record": {"_id": "a"}, "k": 1},
                headers={**ADMIN, "collection-id": "c"},
            )
            assert (await asyncio.wait_for(knn, timeout=30)).status_code == 200
            listed = await asyncio.wait_for(client.get("/v1/collections/c", headers=ADMIN), timeout=30)
            assert listed.json()["count"] == 1
        finally:
            release.set()
            holder.join()
        answers = await asyncio.wait_for(asyncio.gather(*writes), timeout=60)
        assert [a.status_code for a in answers] == [200] * WAITING_WRITES
        assert (await client.get("/v1/collections/c", headers=ADMIN)).json()["count"] == WAITING_WRITES + 1


def test_reads_answer_while_writes_wait(tmp_path: Path) -> None:
    """A real uvicorn server in this process (so the test can hold the collection's lock)."""
    assert WRITERS_PER_COLLECTION < 40
    app = create_app(Settings(data=str(tmp_path / "data"), admin_token="admin"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        asyncio.run(scenario(app, f"http://127.0.0.1:{port}"))
    finally:
        server.should_exit = True
        thread.join(60)
