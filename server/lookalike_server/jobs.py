"""Asynchronous insert jobs: large batches of records inserted in the background, with progress.

One worker thread per server takes jobs from a queue in order and feeds each through
:meth:`lookalike.engine.Collection.insert` in chunks of :data:`CHUNK` records, so progress
(``processed``, ``inserted``, per-record ``errors``) is visible while a job runs and a bad
record never fails the job. Job state lives in memory only: a restart forgets the jobs (the
records a job inserted stay, they are durable once counted in ``inserted``). The last
:data:`KEEP_FINISHED` finished jobs are kept for their status.
"""

from __future__ import annotations

import collections
import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lookalike import Engine
from lookalike import errors as lk
from lookalike_server.errors import ApiError
from lookalike_server.schemas import JobInfo, JobStatus, RecordErrorOut

__all__ = ["Job", "JobQueue", "CHUNK", "MAX_QUEUED", "KEEP_FINISHED", "MAX_ERRORS"]

logger = logging.getLogger("lookalike.server.jobs")

#: Records per call to ``Collection.insert``.
CHUNK = 64
#: Jobs waiting at most (their records are held in memory); more are refused with 429.
MAX_QUEUED = 32
#: Finished jobs remembered for ``GET /v1/jobs/{id}``.
KEEP_FINISHED = 1_000
#: Per-record errors kept per job (the count of skipped records is always exact).
MAX_ERRORS = 1_000

STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")


@dataclass
class Job:
    """One insert job; its counters change under :attr:`JobQueue.lock` only."""

    id: str
    collection: str
    total: int
    records: list[dict[str, Any]] | None
    status: JobStatus = "queued"
    processed: int = 0
    inserted: int = 0
    failed: int = 0
    errors: list[RecordErrorOut] = field(default_factory=list)
    message: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            collection=self.collection,
            status=self.status,
            total=self.total,
            processed=self.processed,
            inserted=self.inserted,
            failed=self.failed,
            errors=list(self.errors),
            errors_truncated=self.failed > len(self.errors),
            message=self.message,
            created=self.created,
            started=self.started,
            finished=self.finished,
        )


class JobQueue:
    """The insert jobs of one server and the worker thread that runs them."""

    def __init__(self, engine: Engine, *, chunk: int = CHUNK, max_queued: int = MAX_QUEUED) -> None:
        self._engine = engine
        self._chunk = chunk
        self._max_queued = max_queued
        self.lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="lookalike-insert-jobs", daemon=True)
        self._thread.start()

    # -- the API the routes use --------------------------------------------------------------

    def submit(self, collection: str, records: list[dict[str, Any]]) -> JobInfo:
        """Queues a job; raises 429 ``too_many_jobs`` when :data:`MAX_QUEUED` jobs wait already."""
        with self.lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down")
            waiting = sum(1 for job in self._jobs.values() if job.status == "queued")
            if waiting >= self._max_queued:
                raise ApiError(
                    429, "too_many_jobs", f"{waiting} insert jobs are waiting already; retry when some are done"
                )
            job = Job(id=secrets.token_hex(8), collection=collection, total=len(records), records=records)
            self._jobs[job.id] = job
            info = job.info()
        self._queue.put(job)
        return info

    def get(self, job_id: str) -> JobInfo | None:
        with self.lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.info()

    def list(self, collection: str | None = None) -> list[JobInfo]:
        """Jobs (of one collection), newest first."""
        with self.lock:
            jobs = [job for job in self._jobs.values() if collection is None or job.collection == collection]
            return [job.info() for job in sorted(jobs, key=lambda job: job.created, reverse=True)]

    def wait(self, job_id: str, timeout: float = 30.0) -> JobInfo | None:
        """The job once it has finished, or as it is after `timeout` seconds (tests, tools)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get(job_id)
            if info is None or info.status in ("done", "failed") or time.monotonic() >= deadline:
                return info
            time.sleep(0.01)

    def gauges(self) -> Iterable[tuple[str, str, dict[str, str], float]]:
        """Prometheus gauges: jobs by status, and records still to process."""
        with self.lock:
            counts = dict.fromkeys(STATUSES, 0)
            pending = 0
            for job in self._jobs.values():
                counts[job.status] += 1
                if job.status in ("queued", "running"):
                    pending += job.total - job.processed
        out: list[tuple[str, str, dict[str, str], float]] = [
            ("lookalike_insert_jobs", "Insert jobs known to this server, by status.", {"status": status}, count)
            for status, count in counts.items()
        ]
        out.append(("lookalike_insert_job_pending_records", "Records of queued and running insert jobs.", {}, pending))
        return out

    def close(self, timeout: float = 60.0) -> None:
        """Stops the worker after the chunk it is on; jobs not finished are marked failed."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        with self.lock:
            for job in self._jobs.values():
                if job.status in ("queued", "running"):
                    self._finish(job, "failed", "the server shut down before the job finished")

    # -- the worker --------------------------------------------------------------------------

    def _finish(self, job: Job, status: JobStatus, message: str | None = None) -> None:
        """Marks a job finished (under the lock) and forgets the oldest finished ones."""
        job.status = status
        job.message = message
        job.finished = time.time()
        job.records = None
        self._finished.append(job.id)
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as error:  # the worker must survive any job
                logger.exception("insert job %s failed", job.id)
                with self.lock:
                    if job.status in ("queued", "running"):
                        self._finish(job, "failed", f"the job failed: {error}")

    def _run(self, job: Job) -> None:
        with self.lock:
            if self._closed or job.status != "queued":
                return
            records = job.records or []
            job.status = "running"
            job.started = time.time()
        try:
            collection = self._engine.collection(job.collection)
        except lk.LookalikeError as error:
            with self.lock:
                self._finish(job, "failed", str(error))
            return
        for start in range(0, len(records), self._chunk):
            with self.lock:
                if self._closed:
                    return
            chunk = records[start : start + self._chunk]
            try:
                result = collection.insert(chunk)
            except lk.ClosedError:
                with self.lock:
                    self._finish(job, "failed", f"collection {job.collection!r} was closed or dropped")
                return
            except lk.LookalikeError as error:
                with self.lock:
                    self._finish(job, "failed", f"records {start} to {start + len(chunk) - 1}: {error}")
                return
            with self.lock:
                job.processed += len(chunk)
                job.inserted += len(result.ids)
                job.failed += len(result.errors)
                for failure in result.errors:
                    if len(job.errors) >= MAX_ERRORS:
                        break
                    job.errors.append(
                        RecordErrorOut(
                            position=start + failure.position,
                            id=failure.id,
                            code=failure.code,
                            message=_renumber(failure.message, failure.position, start + failure.position),
                        )
                    )
        with self.lock:
            self._finish(job, "done")


def _renumber(message: str, position: int, absolute: int) -> str:
    """The engine numbers records within a chunk ("record 3: ..."); a job numbers them within
    the job."""
    prefix = f"record {position}:"
    if message.startswith(prefix):
        return f"record {absolute}:" + message[len(prefix) :]
    return message
