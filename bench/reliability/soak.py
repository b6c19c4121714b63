"""Soak benchmark: a real server under steady mixed traffic for a bounded time, sampled in windows.

    .venv/bin/python bench/reliability/soak.py [--minutes 6] [--rate 150] [--records 100000] [--out bench/RESULTS.md]

It starts `lookalike serve` (one uvicorn process, as bench/http/run_http.py does) on a temporary
data folder holding a `vectors` collection (512-d, cosine, f32 graph; `bucket`, `category` and
`shop` indexed) of `--records` synthetic embeddings from bench/datasets.py, loaded through the
engine before the server starts. Then it sends `--rate` requests per second on a fixed schedule
(open loop: a slow server shows in the latency, which counts from the scheduled start, not in a
lower rate) over keep-alive connections (bench/http/loadgen.py), in a fixed mix: searches by
`_id`, by vector and by vector with a filter (80 %), adds of new records, removes of the oldest
ones, metadata updates. At `--heavy-at` of the run a heavy phase, alongside that traffic, removes
`--heavy-fraction` of the records in batches of 1,000 (which must set off the engine's
background compaction), waits for the compaction, and adds the same records back.

Every `--window` seconds it records, per operation kind, p50 / p99 latency and the non-2xx
answers, the achieved rate, the server process's RSS (/proc/<pid>/status), its CPU time, and
the collection's count, memory and compaction counters (`GET /v1/collections/{name}`).

Targets, checked at the end (exit status 1 and the failures printed when one is missed):

- no 5xx answer and no request without an answer (timeout, dropped connection);
- the collection holds exactly the records the acknowledged writes leave, and every write did
  what it said (added, removed or updated every record it named);
- memory growth after the first minute under 10 %: RSS at the end against RSS at the end of the
  first minute (the first fifth of shorter runs);
- p99 drift: every window outside the heavy phase within 2x of the first minute's p99 of that
  kind (kinds with fewer than 20 answers in a window are not judged there);
- compaction: it runs during the heavy phase, the collection's memory after it is below the
  memory before the removes, and after the records are back it is within 10 % of that again;
- the server logs no error.

`--json PATH` writes everything measured (the smoke test in server/tests reads it); `--out`
replaces the section between `<!-- soak:start -->` and `<!-- soak:end -->` of a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "http"))
sys.path.insert(0, str(ROOT))
from live_server import TOKEN, free_port, start_server, stop_server  # noqa: E402
from loadgen import Connection, request_bytes  # noqa: E402

import lookalike  # noqa: E402
from bench.datasets import CATEGORIES, NDIM, generate, make_metadata  # noqa: E402
from bench.sections import replace_section  # noqa: E402

#: uvicorn closes keep-alive connections idle for 5 s: a pool connection idle longer than this
#: is opened afresh before it is used.
IDLE_REOPEN_S = 4.0
MARK_START = "<!-- soak:start -->"
MARK_END = "<!-- soak:end -->"
COLLECTION = "soak"
FIELDS = ["bucket", "category", "shop"]

# The steady mix, in twentieths of the requests.
MIX = {"search_id": 8, "search_vector": 5, "search_filter": 3, "add": 2, "remove": 1, "update": 1}
STEADY_KINDS = tuple(MIX)
BULK_KINDS = ("bulk_remove", "bulk_add")
LABELS = {
    "search_id": "search by _id",
    "search_vector": "search by vector",
    "search_filter": "search by vector + filter",
    "add": "add",
    "remove": "remove",
    "update": "update",
    "bulk_remove": "heavy remove (1,000 ids)",
    "bulk_add": "heavy add back (500 records)",
}
ADD_BATCH = 5  # records per add request
REMOVE_BATCH = 10  # ids per remove request (the oldest records)
UPDATE_BATCH = 5  # records per update request
BULK_REMOVE_BATCH = 1_000  # the server's limit per request
BULK_ADD_BATCH = 500
FILTERS = [
    {"bucket": {"$lt": 100}},  # 10 %: filtered graph search
    {"category": "shoes"},
    {"bucket": {"$lt": 10}},  # 1 %: exact scan of the passing records
    {"shop": "s3"},  # the field the updates change
]
POOL = 4_096  # vectors the new records cycle through
QUERIES = 1_000
CONNECTIONS = 64
STABLE_SHARE = 0.2  # of the initial records: never removed, searched by _id
MEMORY_GROWTH_LIMIT = 0.10
DRIFT_LIMIT = 2.0
MIN_SAMPLES = 20


@dataclass(frozen=True, kw_only=True)
class Options:
    records: int = 100_000
    seconds: float = 300.0
    rate: float = 150.0
    window: float = 10.0
    heavy_at: float = 0.3
    heavy_fraction: float = 0.5
    seed: int = 7
    request_timeout: float = 60.0
    compaction_timeout: float = 240.0

    @property
    def baseline_seconds(self) -> float:
        """The "first minute": 60 s, or the first fifth of a shorter run."""
        return min(60.0, self.seconds / 5)


# -- data -------------------------------------------------------------------------------------


class Data:
    """The vectors and metadata of the initial records (rows 0..records-1) and of the pool that
    new records take theirs from (rows records..records+POOL-1), and pre-encoded queries."""

    def __init__(self, records: int, seed: int) -> None:
        self.records = records
        self.vectors, queries = generate(records + POOL, seed=seed, nq=QUERIES)
        self.bucket, self.category = make_metadata(records + POOL, seed)
        self.queries = [_vector_json(row) for row in queries]
        self.pool = [_vector_json(self.vectors[records + k]) for k in range(POOL)]

    def metadata(self, row: int) -> dict[str, Any]:
        return {
            "bucket": int(self.bucket[row]),
            "category": CATEGORIES[int(self.category[row])],
            "shop": f"s{row % 10}",
        }

    def row_of(self, id_: str) -> int:
        """`r<i>`: initial record i; `n<k>`: the k-th new record."""
        number = int(id_[1:])
        return number if id_[0] == "r" else self.records + number % POOL

    def record_json(self, id_: str) -> bytes:
        row = self.row_of(id_)
        vector = self.pool[row - self.records] if row >= self.records else _vector_json(self.vectors[row])
        head = msgspec.json.encode({"_id": id_, **self.metadata(row)})
        return head[:-1] + b',"_vector":' + vector + b"}"


def _vector_json(row: np.ndarray) -> bytes:
    return msgspec.json.encode(np.round(row.astype(np.float64), 6).tolist())


def load(data_folder: Path, data: Data) -> float:
    """Creates the collection and fills it through the engine; returns the seconds it took."""
    started = time.perf_counter()
    with lookalike.Engine(data_folder) as engine:
        col = engine.create_collection(COLLECTION, type="vectors", ndim=NDIM, metric="cos", fields_to_index=FIELDS)
        for start in range(0, data.records, 20_000):
            rows = range(start, min(data.records, start + 20_000))
            col.add_vectors(
                [f"r{i}" for i in rows], data.vectors[rows.start : rows.stop], [data.metadata(i) for i in rows]
            )
    return time.perf_counter() - started


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Window:
    start: float  # seconds since the traffic started
    end: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    probe: dict[str, Any] = field(default_factory=dict)
    heavy: bool = False
    server_cpu: float = 0.0  # CPU seconds per second

    def summary(self) -> dict[str, Any]:
        kinds = {}
        for kind, values in self.latencies.items():
            ms = np.asarray(values) * 1000
            kinds[kind] = {
                "n": len(values),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
        steady = sum(len(self.latencies.get(kind, ())) for kind in STEADY_KINDS)
        return {
            "start": round(self.start, 2),
            "end": round(self.end, 2),
            "heavy": self.heavy,
            "rate": steady / max(self.end - self.start, 1e-9),
            "kinds": kinds,
            "non_2xx": {f"{kind} {status}": n for (kind, status), n in sorted(self.statuses.items()) if status >= 300},
            "errors_5xx": sum(n for (_, status), n in self.statuses.items() if status >= 500),
            "no_answer": sum(n for (_, status), n in self.statuses.items() if status == 0),
            "server_cpu": self.server_cpu,
            **self.probe,
        }


def read_proc(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds used) of a process, from /proc."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def _needs_compaction(stats: dict[str, Any]) -> bool:
    """The engine's own rule (core `needs_rebuild`), from the collection's stats."""
    removed = int(stats["index"].get("removed_since_rebuild", 0))
    return removed > max(1_000, int(stats["count"]) // 4)


# -- the run ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, options: Options, data: Data, port: int, server_pid: int) -> None:
        self.options, self.data, self.port, self.server_pid = options, data, port, server_pid
        self.host = f"127.0.0.1:{port}"
        self.rng = random.Random(options.seed)
        stable = int(data.records * STABLE_SHARE)
        self.stable = [f"r{i}" for i in range(stable)]
        self.removable: collections.deque[str] = collections.deque(f"r{i}" for i in range(stable, data.records))
        self.busy: set[str] = set()  # ids with an update in flight: not removed meanwhile
        self.expected = data.records  # what the acknowledged writes leave
        self.next_new = 0
        self.written = collections.Counter[str]()  # records added, removed, updated (acknowledged)
        self.anomalies: list[str] = []
        self.last_used: dict[int, float] = {}
        self.windows: list[Window] = []
        self.window: Window | None = None
        self.heavy: dict[str, Any] = {}
        self.heavy_span: tuple[float, float] | None = None
        self.t0 = 0.0
        self.cpu_mark = 0.0  # the server's CPU seconds when the current window started
        self.final: dict[str, Any] = {}
        pattern = [kind for kind, share in MIX.items() for _ in range(share)]
        self.rng.shuffle(pattern)
        self.pattern = pattern

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def path(self, tail: str = "") -> str:
        return f"/v1/collections/{COLLECTION}{tail}"

    def request(self, method: str, tail: str, body: bytes = b"") -> bytes:
        return request_bytes(method, self.path(tail), self.host, body, token=TOKEN)

    def record(self, kind: str, latency: float, status: int) -> None:
        assert self.window is not None
        self.window.latencies[kind].append(latency)
        self.window.statuses[kind, status] += 1

    # -- the operations: each returns the request and what to do with a 2xx answer ----------

    def make(self, kind: str) -> tuple[bytes, Callable[[Any], None]] | None:
        if kind == "search_id":
            body = msgspec.json.encode({"query": {"_id": self.rng.choice(self.stable)}, "limit": 10})
            return self.request("POST", "/search", body), _ignore
        if kind in ("search_vector", "search_filter"):
            vector = self.rng.choice(self.data.queries)
            extra = b""
            if kind == "search_filter":
                extra = b',"filter":' + msgspec.json.encode(self.rng.choice(FILTERS))
            return self.request("POST", "/search", b'{"limit":10' + extra + b',"vector":' + vector + b"}"), _ignore
        if kind == "add":
            ids = [f"n{self.next_new + i}" for i in range(ADD_BATCH)]
            self.next_new += ADD_BATCH
            body = b'{"records":[' + b",".join(self.data.record_json(id_) for id_ in ids) + b"]}"
            return self.request("POST", "/records", body), lambda answer: self.added(ids, answer)
        if kind == "remove":
            ids = self.take_oldest(REMOVE_BATCH)
            if not ids:
                return None
            body = msgspec.json.encode({"ids": ids})
            return self.request("POST", "/records/delete", body), lambda answer: self.removed(ids, answer)
        if kind == "update":
            ids = self.pick_recent(UPDATE_BATCH)
            if not ids:
                return None
            self.busy.update(ids)
            shop = f"s{self.rng.randrange(10)}"
            body = msgspec.json.encode({"records": [{"_id": id_, "shop": shop, "touched": self.now()} for id_ in ids]})
            return self.request("PATCH", "/records", body), lambda answer: self.updated(ids, answer)
        raise ValueError(kind)

    def take_oldest(self, count: int) -> list[str]:
        taken: list[str] = []
        skipped: list[str] = []
        while self.removable and len(taken) < count:
            id_ = self.removable.popleft()
            (skipped if id_ in self.busy else taken).append(id_)
        self.removable.extendleft(reversed(skipped))
        return taken

    def pick_recent(self, count: int) -> list[str]:
        """Distinct ids from the newer half (far from the removes at the head)."""
        size = len(self.removable)
        if size < 4 * count:
            return []
        chosen: set[str] = set()
        for _ in range(8 * count):
            id_ = self.removable[self.rng.randrange(size // 2, size)]
            if id_ not in self.busy:
                chosen.add(id_)
            if len(chosen) == count:
                break
        return sorted(chosen)

    def added(self, ids: list[str], answer: Any) -> None:
        if answer is None:  # failed: whether it was written is unknown, the count check will tell
            return
        inserted = answer.get("inserted", [])
        if answer.get("errors") or inserted != ids:
            self.anomalies.append(f"add of {len(ids)} records answered {answer!r:.200}")
        self.expected += len(inserted)
        self.written["added"] += len(inserted)
        self.removable.extend(inserted)

    def removed(self, ids: list[str], answer: Any) -> None:
        if answer is None:
            return
        deleted = int(answer.get("deleted", 0))
        if deleted != len(ids):
            self.anomalies.append(f"remove of {len(ids)} ids deleted {deleted}")
        self.expected -= deleted
        self.written["removed"] += deleted

    def updated(self, ids: list[str], answer: Any) -> None:
        self.busy.difference_update(ids)
        if answer is None:
            return
        if int(answer.get("updated", 0)) != len(ids):
            self.anomalies.append(f"update of {len(ids)} records answered {answer!r:.200}")
        self.written["updated"] += int(answer.get("updated", 0))

    # -- sending -----------------------------------------------------------------------------

    async def exchange(self, connection: Connection, payload: bytes) -> tuple[int, bytes]:
        """Status 0: no answer in time, or the connection failed (the caller replaces it)."""
        try:
            return await asyncio.wait_for(connection.exchange(payload), self.options.request_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            self.anomalies.append(f"no answer: {type(error).__name__} {error}"[:200])
            return 0, b""

    async def send(
        self, pool: asyncio.Queue[Connection], kind: str, scheduled: float, payload: bytes, done: Callable[[Any], None]
    ) -> None:
        connection = await pool.get()
        if time.perf_counter() - self.last_used.get(id(connection), time.perf_counter()) > IDLE_REOPEN_S:
            await self.reopened(connection)  # the server has closed it (idle keep-alive)
        status, body = await self.exchange(connection, payload)
        self.last_used[id(connection)] = time.perf_counter()
        # the latency counts from the scheduled start: waiting for a connection is the server's fault too
        self.record(kind, time.perf_counter() - scheduled, status)
        if status == 0:
            connection.close()
            connection = Connection("127.0.0.1", self.port)
        pool.put_nowait(connection)
        self.settle(kind, status, body, done)

    def settle(self, kind: str, status: int, body: bytes, done: Callable[[Any], None]) -> None:
        if 200 <= status < 300:
            if done is not _ignore:  # search answers are not read: the client's CPU is the server's too
                done(json.loads(body) if body else {})
            return
        done(None)
        if status:
            self.anomalies.append(f"{kind}: status {status}: {body[:200]!r}")

    @staticmethod
    async def reopened(connection: Connection) -> Connection:
        """The server closes keep-alive connections idle for 5 s (uvicorn's default): the
        connections used now and then (probes, the heavy phase) are opened afresh each time."""
        connection.close()
        await connection.open()
        return connection

    async def bulk(self, connection: Connection, kind: str, payload: bytes) -> Any:
        await self.reopened(connection)
        started = time.perf_counter()
        status, body = await self.exchange(connection, payload)
        self.record(kind, time.perf_counter() - started, status)
        if not 200 <= status < 300:
            self.anomalies.append(f"{kind}: status {status}: {body[:200]!r}")
            return None
        return json.loads(body)

    async def traffic(self, pool: asyncio.Queue[Connection]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        for n in range(int(self.options.seconds * self.options.rate)):
            scheduled = started + n / self.options.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = self.pattern[n % len(self.pattern)]
            made = self.make(kind)
            if made is None:
                continue
            task = asyncio.create_task(self.send(pool, kind, scheduled, *made))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    # -- probes and windows ------------------------------------------------------------------

    async def stats(self, connection: Connection) -> dict[str, Any]:
        await self.reopened(connection)
        status, body = await self.exchange(connection, self.request("GET", ""))
        if status != 200:
            raise RuntimeError(f"GET {self.path()}: status {status}: {body[:200]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    async def probe(self, connection: Connection) -> dict[str, Any]:
        stats = await self.stats(connection)
        rss_mb, _ = read_proc(self.server_pid)
        index = stats["index"]
        return {
            "rss_mb": rss_mb,
            "count": int(stats["count"]),
            "memory_mb": int(stats["memory_bytes"]) / 2**20,
            "capacity": int(index.get("capacity", 0)),
            "removed_since_rebuild": int(index.get("removed_since_rebuild", 0)),
            "rebuilds": int(index.get("rebuilds", 0)),
            "load1": os.getloadavg()[0],
        }

    def close_window(self) -> Window:
        assert self.window is not None
        closed = self.window
        closed.end = self.now()
        cpu = read_proc(self.server_pid)[1]
        closed.server_cpu = (cpu - self.cpu_mark) / max(closed.end - closed.start, 1e-9)
        self.cpu_mark = cpu
        self.windows.append(closed)
        self.window = Window(start=closed.end, end=closed.end)
        return closed

    async def sampler(self, connection: Connection) -> None:
        tick = self.t0
        while True:
            tick += self.options.window
            if tick - self.t0 > self.options.seconds + 1e-6:
                return
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))
            closed = self.close_window()
            closed.probe = await self.probe(connection)
            line = closed.summary()
            print(
                f"{line['end']:7.1f} s  {line['rate']:6.1f} req/s  "
                + "  ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for k, v in line["kinds"].items())
                + f"  non-2xx {sum(line['non_2xx'].values())}  RSS {line['rss_mb']:.0f} MB"
                f"  count {line['count']}  index {line['memory_mb']:.0f} MB  rebuilds {line['rebuilds']}",
                flush=True,
            )

    # -- the heavy phase ---------------------------------------------------------------------

    async def heavy_phase(self, connection: Connection, probe_connection: Connection) -> None:
        """Removes a share of the records, waits for the compaction, adds them back."""
        await asyncio.sleep(max(0.0, self.t0 + self.options.heavy_at * self.options.seconds - time.perf_counter()))
        start = self.now()
        self.heavy_span = (start, float("inf"))
        before = await self.probe(probe_connection)
        want = min(int(self.options.heavy_fraction * self.expected), len(self.removable) - 4 * UPDATE_BATCH)
        positions = set(self.rng.sample(range(len(self.removable)), max(0, want)))
        chosen = [id_ for n, id_ in enumerate(self.removable) if n in positions and id_ not in self.busy]
        gone = set(chosen)
        self.removable = collections.deque(id_ for id_ in self.removable if id_ not in gone)
        for batch in _chunks(chosen, BULK_REMOVE_BATCH):
            answer = await self.bulk(connection, "bulk_remove", self.request("POST", "/records/delete", _ids(batch)))
            self.removed(batch, answer)
        removes_done = self.now()
        deadline = time.perf_counter() + self.options.compaction_timeout
        while True:
            stats = await self.stats(probe_connection)
            rebuilds = int(stats["index"].get("rebuilds", 0))
            if (
                rebuilds > before["rebuilds"]
                and not _needs_compaction(stats)
                and not stats["index"].get("compacting", False)
            ):
                break
            if time.perf_counter() > deadline:
                self.anomalies.append(f"no compaction within {self.options.compaction_timeout:.0f} s of the removes")
                break
            await asyncio.sleep(0.5)
        compacted = self.now()
        after_compaction = await self.probe(probe_connection)
        for batch in _chunks(chosen, BULK_ADD_BATCH):
            body = b'{"records":[' + b",".join(self.data.record_json(id_) for id_ in batch) + b"]}"
            answer = await self.bulk(connection, "bulk_add", self.request("POST", "/records", body))
            self.added(batch, answer)
        end = self.now()
        self.heavy_span = (start, end)
        after_add = await self.probe(probe_connection)
        self.heavy = {
            "records": len(chosen),
            "start": start,
            "removes_s": removes_done - start,
            "compaction_wait_s": compacted - removes_done,
            "add_back_s": end - compacted,
            "end": end,
            "before": before,
            "after_compaction": after_compaction,
            "after_add_back": after_add,
        }
        print(f"heavy phase: {json.dumps(self.heavy, default=str)}", flush=True)

    async def run(self) -> None:
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        connections = [Connection("127.0.0.1", self.port) for _ in range(CONNECTIONS + 3)]
        for connection in connections:
            await connection.open()
        for connection in connections[:CONNECTIONS]:
            pool.put_nowait(connection)
        bulk_connection, heavy_probe, probe_connection = connections[CONNECTIONS:]
        await self.stats(probe_connection)  # the server opens a collection on first use: not timed
        self.t0 = time.perf_counter()
        self.window = Window(start=0.0, end=0.0)
        self.cpu_mark = read_proc(self.server_pid)[1]
        try:
            heavy = asyncio.create_task(self.heavy_phase(bulk_connection, heavy_probe))
            sampler = asyncio.create_task(self.sampler(probe_connection))
            await self.traffic(pool)
            await sampler
            if not heavy.done():
                self.anomalies.append("the heavy phase was still running when the traffic ended")
            await heavy
            if self.window.latencies:  # answers after the last full window
                self.close_window().probe = await self.probe(probe_connection)
            final = await self.probe(probe_connection)
        finally:
            for connection in connections:
                connection.close()
            while not pool.empty():
                pool.get_nowait().close()
        if self.heavy_span is not None:
            first, last = self.heavy_span
            for window in self.windows:
                window.heavy = window.start < last and window.end > first
        self.final = final


def _ignore(answer: Any) -> None:
    del answer


def _ids(ids: Sequence[str]) -> bytes:
    return msgspec.json.encode({"ids": list(ids)})


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- verdicts and the report ------------------------------------------------------------------


def evaluate(options: Options, soak: Soak, server_log: str) -> tuple[dict[str, Any], list[str]]:
    """The figures the targets are judged on, and one line per missed target."""
    failures: list[str] = []
    windows = [w.summary() for w in soak.windows]
    baseline_end = options.baseline_seconds + options.window / 2  # window ends come a little late
    first = [w for w in soak.windows if w.end <= baseline_end] or soak.windows[:1]
    baseline_p99 = {}
    for kind in STEADY_KINDS:
        values = [v for w in first for v in w.latencies.get(kind, ())]
        if values:
            baseline_p99[kind] = float(np.percentile(np.asarray(values) * 1000, 99))
    five = sum(w["errors_5xx"] for w in windows)
    silent = sum(w["no_answer"] for w in windows)
    if five or silent:
        failures.append(f"5xx: {five} answers with a 5xx status, {silent} requests without an answer")
    final_count = int(soak.final["count"])
    held = len(soak.stable) + len(soak.removable)
    if final_count != soak.expected or held != soak.expected:
        failures.append(
            f"counts: the collection holds {final_count} records, the acknowledged writes leave {soak.expected}"
            f" ({held} tracked)"
        )
    if soak.anomalies:
        failures.append(f"writes: {len(soak.anomalies)} anomalies, first: {soak.anomalies[0]}")
    rss_baseline = first[-1].probe["rss_mb"]
    rss_end = soak.windows[-1].probe["rss_mb"]
    growth = rss_end / rss_baseline - 1
    if growth >= MEMORY_GROWTH_LIMIT:
        failures.append(
            f"memory growth: RSS {rss_baseline:.0f} MB after the first minute, {rss_end:.0f} MB at the end"
            f" (+{100 * growth:.1f} %, limit {100 * MEMORY_GROWTH_LIMIT:.0f} %)"
        )
    drift: dict[str, float] = {}
    for window in soak.windows:
        if window.heavy:
            continue
        summary = window.summary()
        for kind, base in baseline_p99.items():
            cell = summary["kinds"].get(kind)
            if cell is None or cell["n"] < MIN_SAMPLES:
                continue
            ratio = cell["p99_ms"] / base
            drift[kind] = max(drift.get(kind, 0.0), ratio)
            if ratio > DRIFT_LIMIT:
                failures.append(
                    f"p99 drift: {LABELS[kind]} at {window.end:.0f} s: p99 {cell['p99_ms']:.1f} ms,"
                    f" {ratio:.1f}x the first minute's {base:.1f} ms"
                )
    heavy = soak.heavy
    if not heavy:
        failures.append("compaction: the heavy phase did not run")
    else:
        before = heavy["before"]["memory_mb"]
        compacted = heavy["after_compaction"]
        back = heavy["after_add_back"]["memory_mb"]
        if compacted["rebuilds"] <= heavy["before"]["rebuilds"]:
            failures.append("compaction: no compaction ran after the heavy removes")
        if compacted["memory_mb"] >= before:
            failures.append(
                f"compaction: collection memory {before:.0f} MB before the removes, {compacted['memory_mb']:.0f} MB"
                " after them and the compaction: it did not come back"
            )
        if back > before * (1 + MEMORY_GROWTH_LIMIT):
            failures.append(
                f"compaction: collection memory {before:.0f} MB before the removes, {back:.0f} MB once the records"
                " were back"
            )
    errors = [line for line in server_log.splitlines() if "ERROR" in line or "Traceback" in line]
    if errors:
        failures.append(f"server log: {len(errors)} error lines, first: {errors[0][:200]}")
    figures = {
        "options": asdict(options),
        "windows": windows,
        "baseline_p99_ms": baseline_p99,
        "max_p99_ratio": drift,
        "rss_baseline_mb": rss_baseline,
        "rss_end_mb": rss_end,
        "rss_peak_mb": max(w.probe["rss_mb"] for w in soak.windows),
        "memory_growth": growth,
        "heavy": heavy,
        "expected_count": soak.expected,
        "final": soak.final,
        "written": dict(soak.written),
        "anomalies": soak.anomalies[:50],
        "server_log": server_log[-5000:],
        "failures": failures,
    }
    return figures, failures


def _cell(summary: dict[str, Any], kind: str) -> str:
    cell = summary["kinds"].get(kind)
    return "" if cell is None else f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f}"


def markdown(figures: dict[str, Any], command: str, context: dict[str, Any]) -> str:
    options = figures["options"]
    windows = figures["windows"]
    loads = [w["load1"] for w in windows]
    heavy = figures["heavy"]
    failures = figures["failures"]
    mix = ", ".join(f"{100 * share / 20:.0f} % {LABELS[kind]}" for kind, share in MIX.items())
    lines = [
        MARK_START,
        "## Soak: mixed traffic on a real server",
        "",
        f"Command: `{command}`, {context['date']} ({context['wall_s']:.0f} s in all, {context['load_s']:.0f} s of it"
        f" loading). Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other"
        f" work: 1-minute load average {context['load_before']:.2f} before the run, {min(loads):.2f} - {max(loads):.2f}"
        f" (mean {sum(loads) / len(loads):.2f}) while it ran; Python {platform.python_version()}. One uvicorn process,"
        " the load generator (asyncio, keep-alive, bench/http/loadgen.py) on the same machine over loopback.",
        "",
        f"Collection: `vectors`, {NDIM}-d cosine, f32 graph, {options['records']:,} records from bench/datasets.py"
        f" (`{'`, `'.join(FIELDS)}` indexed). Traffic: {options['rate']:g} requests/s on a fixed schedule (open loop;"
        f" latency counts from the scheduled start) for {options['seconds']:g} s: {mix}; adds of {ADD_BATCH} new"
        f" records, removes of the {REMOVE_BATCH} oldest, updates of {UPDATE_BATCH} records' `shop`. Windows of"
        f" {options['window']:g} s; cells are p50 / p99 in ms.",
        "",
    ]
    if heavy:
        lines += [
            f"Heavy phase ({heavy['start']:.0f} - {heavy['end']:.0f} s, rows marked **heavy**, alongside the traffic):"
            f" {heavy['records']:,} records removed in batches of {BULK_REMOVE_BATCH:,} in {heavy['removes_s']:.1f} s,"
            f" compaction done {heavy['compaction_wait_s']:.1f} s later, the same records added back in batches of"
            f" {BULK_ADD_BATCH} in {heavy['add_back_s']:.1f} s.",
            "",
            "| moment | records | collection memory MB | graph capacity | RSS MB | compactions |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, key in (
            ("before the removes", "before"),
            ("removed + compacted", "after_compaction"),
            ("added back", "after_add_back"),
        ):
            p = heavy[key]
            lines.append(
                f"| {name} | {p['count']:,} | {p['memory_mb']:.0f} | {p['capacity']:,} | {p['rss_mb']:.0f} | "
                f"{p['rebuilds']} |"
            )
        lines.append("")
    kinds = list(STEADY_KINDS) + [k for k in BULK_KINDS if any(k in w["kinds"] for w in windows)]
    lines += [
        "| t s | phase | req/s | " + " | ".join(LABELS[k] for k in kinds) + " | non-2xx | RSS MB | records"
        " | collection MB | compactions | server CPU | load |",
        "| ---: | --- | ---: | "
        + " | ".join("---:" for _ in kinds)
        + " | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in windows:
        cpu = f"{100 * w['server_cpu']:.0f} %"
        lines.append(
            f"| {w['end']:.0f} | {'**heavy**' if w['heavy'] else 'steady'} | {w['rate']:.0f} | "
            + " | ".join(_cell(w, k) for k in kinds)
            + f" | {sum(w['non_2xx'].values())} | {w['rss_mb']:.0f} | {w['count']:,} | {w['memory_mb']:.0f}"
            f" | {w['rebuilds']} | {cpu} | {w['load1']:.2f} |"
        )
    drift = ", ".join(f"{LABELS[k]} {v:.2f}x" for k, v in figures["max_p99_ratio"].items())
    base = ", ".join(f"{LABELS[k]} {v:.1f} ms" for k, v in figures["baseline_p99_ms"].items())
    written = figures["written"]
    lines += [
        "",
        f"Writes acknowledged: {written.get('added', 0):,} records added, {written.get('removed', 0):,} removed,"
        f" {written.get('updated', 0):,} updated; the collection ends with {figures['final']['count']:,} records,"
        f" {figures['expected_count']:,} expected.",
        "",
        "Targets:",
        "",
        f"- memory growth after the first minute < {100 * MEMORY_GROWTH_LIMIT:.0f} %: RSS"
        f" {figures['rss_baseline_mb']:.0f} MB at {options_baseline(options):.0f} s, {figures['rss_end_mb']:.0f} MB"
        f" at the end ({100 * figures['memory_growth']:+.1f} %; peak {figures['rss_peak_mb']:.0f} MB).",
        f"- p99 drift <= {DRIFT_LIMIT:g}x the first minute's ({base}), steady windows: worst {drift or 'n/a'}.",
        "- no 5xx, counts agree, compaction gives the memory back (table above), no server error logged.",
        "",
        ("**All targets met.**" if not failures else "**Missed:**"),
    ]
    lines += [f"- {failure}" for failure in failures[:20]]
    if len(failures) > 20:
        lines.append(f"- ... and {len(failures) - 20} more")
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def options_baseline(options: dict[str, Any]) -> float:
    return Options(**options).baseline_seconds


def write_section(out: Path, text: str) -> None:
    """Replaces the soak section of `out`."""
    replace_section(out, text, MARK_START, MARK_END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=6.0, help="how long the traffic runs")
    parser.add_argument("--seconds", type=float, help="the same in seconds (short runs)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second, all kinds together")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    parser.add_argument("--heavy-at", type=float, default=0.3, help="when the heavy phase starts (share of the run)")
    parser.add_argument("--heavy-fraction", type=float, default=0.5, help="share of the records it removes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="Markdown file whose soak section to replace")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * args.minutes
    if seconds < args.window:
        parser.error("the run must last at least one window")
    options = Options(
        records=args.records,
        seconds=seconds,
        rate=args.rate,
        window=args.window,
        heavy_at=args.heavy_at,
        heavy_fraction=args.heavy_fraction,
        seed=args.seed,
    )
    command = ".venv/bin/python bench/reliability/soak.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = Data(options.records, options.seed)
    with tempfile.TemporaryDirectory(prefix="lookalike-soak-") as folder:
        data_folder = Path(folder) / "data"
        load_s = load(data_folder, data)
        print(f"loaded {options.records} records in {load_s:.0f} s", flush=True)
        port = free_port()
        log_path = Path(folder) / "server.log"
        with open(log_path, "wb") as log:
            server = start_server(data_folder, port, stderr=log)
            soak = Soak(options, data, port, server.pid)
            broke: BaseException | None = None
            try:
                asyncio.run(soak.run())
            except (OSError, RuntimeError, KeyError, ValueError) as error:
                broke = error
            finally:
                alive = server.poll() is None
                stop_server(server)
        server_log = log_path.read_text(errors="replace")
    if broke is not None:
        print(server_log[-3000:], file=sys.stderr)
        print(f"FAILED: the run broke off: {type(broke).__name__}: {broke}", file=sys.stderr)
        return 1
    figures, failures = evaluate(options, soak, server_log)
    if not alive:
        failures.append(f"the server exited during the run (status {server.returncode})")
    context = {"date": date, "wall_s": time.perf_counter() - wall, "load_s": load_s, "load_before": load_before}
    figures["context"] = context
    figures["command"] = command
    text = markdown(figures, command, context)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    if args.out:
        write_section(args.out, text)
    if failures:
        print("FAILED:\n" + "\n".join(f"- {failure}" for failure in failures), file=sys.stderr)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
