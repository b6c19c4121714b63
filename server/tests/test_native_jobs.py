"""Native API: asynchronous insert jobs (progress while running, per-record errors, auth,
limits) and their Prometheus gauges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from conftest import ADMIN, ClientFactory, TinyColour, auth, b64
from lookalike.sdk.registry import Registry

Client = TestClient[Litestar]


class Gated(TinyColour):
    """The tiny type, but each model call waits for a permit: the test steps a job chunk by chunk."""

    name = "gated"
    permits = threading.Semaphore(0)

    def embed_images(self, batch: Sequence[Any]) -> np.ndarray:
        assert self.permits.acquire(timeout=30), "the test gave no permit"
        return super().embed_images(batch)


def wait_for(client: Client, job_id: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()
        if ready(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("done", "failed")


@pytest.fixture
def gated(registry: Registry, client_factory: ClientFactory) -> Iterator[Client]:
    registry.register(Gated)
    Gated.permits = threading.Semaphore(0)
    client = client_factory(batch_size=64)
    response = client.post("/v1/collections", json={"name": "gated", "type": "gated"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    yield client
    Gated.permits.release(1_000)  # never leave the worker waiting


def test_job_progress_and_errors(gated: Client) -> None:
    records: list[dict[str, Any]] = [{"_id": f"i{i}", "_base64": b64(i % 5, size=16), "n": i} for i in range(150)]
    records[3] = {"_id": "bad-image", "_base64": "bm90IGFuIGltYWdl"}
    records[70] = {"_id": 70}
    records[149] = {"_id": "no-image"}
    response = gated.post("/v1/collections/gated/jobs", json={"records": records}, headers=ADMIN)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["total"] == 150 and job["collection"] == "gated"
    job_id = job["id"]

    running = wait_for(gated, job_id, lambda j: j["status"] == "running")
    assert running["processed"] == 0 and running["started"] is not None and running["finished"] is None
    Gated.permits.release()  # the first chunk of 64
    first = wait_for(gated, job_id, lambda j: j["processed"] >= 64)
    assert first["status"] == "running"
    assert (first["processed"], first["inserted"], first["failed"]) == (64, 63, 1)
    assert first["errors"][0]["_id"] == "bad-image"
    metrics = gated.get("/metrics").text
    assert 'lookalike_insert_jobs{status="running"} 1' in metrics
    assert "lookalike_insert_job_pending_records 86" in metrics

    Gated.permits.release(10)
    done = wait_for(gated, job_id, finished)
    assert done["status"] == "done" and done["message"] is None
    assert (done["processed"], done["inserted"], done["failed"]) == (150, 147, 3)
    assert [(e["position"], e["_id"], e["code"]) for e in done["errors"]] == [
        (3, "bad-image", "invalid_image"),
        (70, None, "invalid_record"),
        (149, "no-image", "invalid_record"),
    ]
    assert done["errors"][1]["message"].startswith("record 70:")
    assert done["errors_truncated"] is False
    assert done["finished"] >= done["started"] >= done["created"]
    assert gated.get("/v1/collections/gated", headers=ADMIN).json()["count"] == 147
    assert gated.get("/v1/collections/gated/records/i149", headers=ADMIN).status_code == 404
    assert gated.get("/v1/collections/gated/records/i148", headers=ADMIN).json()["n"] == 148
    assert 'lookalike_insert_jobs{status="done"} 1' in gated.get("/metrics").text
    assert [j["id"] for j in gated.get("/v1/jobs", headers=ADMIN).json()["jobs"]] == [job_id]


def test_jobs_run_in_order(client: Client) -> None:
    client.post("/v1/collections", json={"name": "vec", "ndim": 3}, headers=ADMIN)
    ids = []
    for batch in range(3):
        records = [{"_id": f"{batch}-{i}", "_vector": [1, batch, i]} for i in range(100)]
        response = client.post("/v1/collections/vec/jobs", json={"records": records}, headers=ADMIN)
        assert response.status_code == 202
        ids.append(response.json()["id"])
    jobs = [wait_for(client, job_id, finished) for job_id in ids]
    assert [j["status"] for j in jobs] == ["done"] * 3
    assert all(j["inserted"] == 100 for j in jobs)
    assert jobs[0]["finished"] <= jobs[1]["started"] and jobs[1]["finished"] <= jobs[2]["started"]
    assert client.get("/v1/collections/vec", headers=ADMIN).json()["count"] == 300
    empty = client.post("/v1/collections/vec/jobs", json={"records": []}, headers=ADMIN).json()
    assert wait_for(client, empty["id"], finished)["status"] == "done"


def test_job_auth_and_limits(client: Client) -> None:
    for name in ("a", "b"):
        client.post("/v1/collections", json={"name": name, "ndim": 2}, headers=ADMIN)
    tokens = {
        (c, scope): client.post("/v1/tokens", json={"collection": c, "scope": scope}, headers=ADMIN).json()["token"]
        for c in ("a", "b")
        for scope in ("read", "write")
    }
    records = [{"_id": "x", "_vector": [1, 0]}]
    read_only = client.post("/v1/collections/a/jobs", json={"records": records}, headers=auth(tokens["a", "read"]))
    assert read_only.status_code == 403 and read_only.json()["code"] == "forbidden"
    response = client.post("/v1/collections/a/jobs", json={"records": records}, headers=auth(tokens["a", "write"]))
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(tokens["a", "read"])).status_code == 200
    other = client.get(f"/v1/jobs/{job_id}", headers=auth(tokens["b", "write"]))
    assert other.status_code == 403 and other.json()["code"] == "forbidden" and "collection" not in other.json()
    assert client.get("/v1/jobs", headers=auth(tokens["b", "read"])).json() == {"jobs": []}
    assert len(client.get("/v1/jobs", headers=auth(tokens["a", "read"])).json()["jobs"]) == 1
    assert client.get(f"/v1/jobs/{job_id}", headers={}).status_code == 401

    unknown = client.get("/v1/jobs/nope", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "job_not_found"
    no_collection = client.post("/v1/collections/zzz/jobs", json={"records": records}, headers=ADMIN)
    assert no_collection.status_code == 404 and no_collection.json()["code"] == "collection_not_found"
    too_many = client.post("/v1/collections/a/jobs", json={"records": [{}] * 100_001}, headers=ADMIN)
    assert too_many.status_code == 400 and too_many.json()["code"] == "too_many_records"


def test_job_of_a_dropped_collection_fails(gated: Client) -> None:
    records = [{"_id": f"i{i}", "_base64": b64(i, size=16)} for i in range(100)]
    job_id = gated.post("/v1/collections/gated/jobs", json={"records": records}, headers=ADMIN).json()["id"]
    wait_for(gated, job_id, lambda j: j["status"] == "running")
    assert gated.delete("/v1/collections/gated", headers=ADMIN).status_code == 204
    Gated.permits.release(10)
    job = wait_for(gated, job_id, finished)
    assert job["status"] == "failed" and "dropped" in job["message"], job
    assert job["inserted"] < 100
