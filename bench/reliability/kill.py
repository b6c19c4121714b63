"""Kill test: the server under concurrent writes and searches from several client processes is
SIGKILLed at random moments, in the middle of a snapshot write and in the middle of a
compaction, restarted, and checked every time: each acknowledged write is present and
searchable, each acknowledged remove is gone, and the index agrees with the stored records.

    .venv/bin/python -m bench.reliability.kill [--kills 30] [--clients 4] [--preload 20000] [--out bench/RESULTS.md]

How it decides what must be there. Each client process owns its ids and changes them one
request at a time, keeping what the server acknowledged (a 2xx). A request cut by the kill may
or may not have been written: its ids become *uncertain* (either state is right) and the client
leaves them alone from then on. A refused connection was not written at all. The preloaded
records (owned by the harness) are removed in bulk to start compactions.

The checks after each restart, all against the acknowledged state:
- every record listed through the cursor pages is one that should be there, with the metadata
  of its last acknowledged write; every one that should be there is listed; removed ones are not;
- the collection's count equals the listed records;
- each sampled present record is its own nearest neighbour in an exact scan and among its own
  ten nearest through the graph; sampled removed records are found by neither;
- graph searches against exact scans for random queries: recall@10 at least ``MIN_RECALL``.

The test suite runs it with three kills (tests/test_kill.py); the benchmark runs more and
writes the "Reliability: kill test" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.sections import replace_section

TOKEN = "kill-test-admin"
HEADERS = {"Authorization": f"Token {TOKEN}"}
COLLECTION = "k"
NDIM = 16
MIN_RECALL = 0.9
MAX_GRAPH_MISSES = 0.005
MARK_START = "<!-- kill:start -->"
MARK_END = "<!-- kill:end -->"
KINDS = ("random", "snapshot", "compaction")
#: The harness's own records come in blocks (their ``v``), removed a few blocks at a time.
BLOCK = 500


def vector(id_: str) -> list[float]:
    """A record's vector, derived from its id (so any process can recompute it)."""
    seed = int.from_bytes(hashlib.blake2b(id_.encode(), digest_size=8).digest(), "little")
    return [round(float(v), 5) for v in np.random.default_rng(seed).standard_normal(NDIM)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the server -------------------------------------------------------------------------------


class Server:
    """One ``lookalike serve`` process on a data folder, started again after each kill."""

    def __init__(self, data: Path, port: int, snapshot_every: int) -> None:
        self.data = data
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.snapshot_every = snapshot_every
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / "server.log"

    def start(self, timeout: float = 120.0) -> float:
        """Starts the server and waits until it answers; returns the seconds that took."""
        env = dict(
            os.environ,
            LOOKALIKE_ADMIN_TOKEN=TOKEN,
            LOOKALIKE_LOG_LEVEL="warning",
            LOOKALIKE_SNAPSHOT_EVERY=str(self.snapshot_every),
            LOOKALIKE_COLLECTION_TYPES="colors",  # no model to load: the test is about storage
        )
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lookalike", "serve", "--data", str(self.data), "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(self.base + "/health", timeout=1.0).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"the server did not answer within {timeout} s; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


# -- the clients ------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What one writer was told: ``present`` id -> the ``v`` of its last acknowledged write;
    ``absent``: acknowledged removes; ``uncertain`` id -> the states a cut request may have left
    (a ``v``, or None for absent)."""

    present: dict[str, int] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    uncertain: dict[str, list[int | None]] = field(default_factory=dict)
    acknowledged: int = 0
    cut: int = 0
    server_errors: list[str] = field(default_factory=list)
    searches: int = 0
    #: Searches (through the graph) for a present record of this writer that did not return it.
    misses: list[str] = field(default_factory=list)

    def state(self, id_: str) -> int | None:
        return self.present.get(id_)

    def set(self, id_: str, v: int | None) -> None:
        if v is None:
            self.present.pop(id_, None)
            self.absent.add(id_)
        else:
            self.absent.discard(id_)
            self.present[id_] = v

    def mark_uncertain(self, ids: list[str], new: int | None) -> None:
        for id_ in ids:
            self.uncertain[id_] = [self.state(id_), new]
            self.present.pop(id_, None)
            self.absent.discard(id_)

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "absent": sorted(self.absent),
            "uncertain": self.uncertain,
            "acknowledged": self.acknowledged,
            "cut": self.cut,
            "server_errors": self.server_errors,
            "searches": self.searches,
            "misses": self.misses,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        return cls(
            present={k: int(v) for k, v in data["present"].items()},
            absent=set(data["absent"]),
            uncertain={k: list(v) for k, v in data["uncertain"].items()},
            acknowledged=int(data["acknowledged"]),
            cut=int(data["cut"]),
            server_errors=list(data["server_errors"]),
            searches=int(data["searches"]),
            misses=list(data["misses"]),
        )

    def merge(self, other: Ledger) -> None:
        self.present.update(other.present)
        self.absent |= other.absent
        self.uncertain.update(other.uncertain)
        self.acknowledged += other.acknowledged
        self.cut += other.cut
        self.server_errors += other.server_errors
        self.searches += other.searches
        self.misses += other.misses


class Client:
    """One writer process: inserts, updates, removes and searches its own records."""

    def __init__(self, number: int, base: str, folder: Path, seed: int) -> None:
        self.number = number
        self.http = httpx.Client(base_url=base, headers=HEADERS, timeout=30.0)
        self.folder = folder
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.next_id = 0
        self.version = 0
        self.path = f"/v1/collections/{COLLECTION}"

    def save(self) -> None:
        target = self.folder / f"client-{self.number}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.ledger.to_json()))
        os.replace(temporary, target)

    def pick(self, most: int) -> list[str]:
        live = list(self.ledger.present)
        return self.rng.sample(live, min(len(live), self.rng.randint(1, most))) if live else []

    def step(self) -> bool:
        """One request; False when the server is gone (the caller waits for it)."""
        roll = self.rng.random()
        self.version += 1
        v = self.version
        if roll < 0.35 or len(self.ledger.present) < 20:
            ids = [f"c{self.number}-{self.next_id + i}" for i in range(self.rng.randint(1, 10))]
            self.next_id += len(ids)
            body: Any = {"records": [{"_id": i, "_vector": vector(i), "owner": self.number, "v": v} for i in ids]}
            return self.send("POST", "/records", body, ids, v)
        if roll < 0.55:
            ids = self.pick(5)
            body = {"records": [{"_id": i, "v": v} for i in ids]}
            return self.send("PATCH", "/records", body, ids, v)
        if roll < 0.70:
            ids = self.pick(5)
            return self.send("POST", "/records/delete", {"ids": ids}, ids, None)
        ids = self.pick(1)
        body = {"vector": vector(ids[0]) if ids else vector("x"), "limit": 10, "fields": []}
        return self.send("POST", "/search", body, [], None, search=ids)

    def send(
        self, method: str, path: str, body: Any, ids: list[str], v: int | None, search: list[str] | None = None
    ) -> bool:
        try:
            response = self.http.request(method, self.path + path, json=body)
        except httpx.ConnectError:
            return False  # nothing was sent: nothing was written
        except httpx.TransportError:
            self.ledger.cut += 1
            self.ledger.mark_uncertain(ids, v)
            return False
        if response.status_code >= 500:
            self.ledger.server_errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            self.ledger.mark_uncertain(ids, v)
            return True
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} was refused: {response.status_code} {response.text[:300]}")
        answer = response.json()
        if search:
            self.ledger.searches += 1
            if search[0] not in [hit["_id"] for hit in answer["hits"]]:
                self.ledger.misses.append(f"{search[0]} (nearest: {answer['hits'][:1]})")
        if path == "/records" and answer.get("errors"):
            raise RuntimeError(f"records were refused: {answer['errors'][:3]}")
        if ids:
            self.ledger.acknowledged += 1
            for id_ in ids:
                self.ledger.set(id_, v)
        return True


def client_main(number: int, base: str, folder: str, seed: int, pause: Event, parked: Event, stop: Event) -> None:
    """A client process: works until `stop`, parks (saving its ledger) whenever `pause` is set
    or the server is gone."""
    client = Client(number, base, Path(folder), seed)
    try:
        while not stop.is_set():
            if pause.is_set():
                client.save()
                parked.set()
                while pause.is_set() and not stop.is_set():
                    time.sleep(0.01)
                parked.clear()
                continue
            if not client.step():
                while not pause.is_set() and not stop.is_set():
                    time.sleep(0.01)  # the harness killed the server; it pauses everyone next
    finally:
        client.save()
        parked.set()


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Round:
    kind: str
    hit: bool  # whether the kill landed where it aimed (a snapshot or compaction under way)
    restart_s: float
    present: int
    removed_checked: int
    uncertain: int
    recall: float


@dataclass
class Report:
    rounds: list[Round] = field(default_factory=list)
    acknowledged_writes: int = 0
    cut_requests: int = 0
    lost: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    index_errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    #: Records looked up by their own vector through the graph (after restarts and live), and
    #: those it did not return in the top 10: HNSW is approximate, so a few may be missed;
    #: more than ``MAX_GRAPH_MISSES`` of them is a failure.
    graph_lookups: int = 0
    graph_misses: list[str] = field(default_factory=list)

    @property
    def graph_miss_rate(self) -> float:
        return len(self.graph_misses) / max(1, self.graph_lookups)

    @property
    def failures(self) -> list[str]:
        failures = self.lost + self.resurrected + self.wrong + self.index_errors + self.server_errors
        if self.graph_miss_rate > MAX_GRAPH_MISSES:
            failures.append(f"the graph missed {len(self.graph_misses)} of {self.graph_lookups} records")
        return failures

    @property
    def ok(self) -> bool:
        return not self.failures


class Harness:
    def __init__(self, folder: Path, clients: int, preload: int, seed: int, snapshot_every: int) -> None:
        self.folder = folder
        self.server = Server(folder / "data", free_port(), snapshot_every)
        self.clients = clients
        self.preload = preload
        self.rng = random.Random(seed)
        self.seed = seed
        self.http = httpx.Client(base_url=self.server.base, headers=HEADERS, timeout=60.0)
        self.graph_lookups = 0
        self.graph_misses: list[str] = []
        self.own = Ledger()  # the preloaded records
        self.next_own = 0
        self.report = Report()
        context = multiprocessing.get_context("spawn")
        self.pause = context.Event()
        self.stop = context.Event()
        self.parked = [context.Event() for _ in range(clients)]
        self.processes = [
            context.Process(
                target=client_main,
                args=(n, self.server.base, str(folder), seed * 1000 + n, self.pause, self.parked[n], self.stop),
                daemon=True,
            )
            for n in range(clients)
        ]

    # -- set-up --------------------------------------------------------------------------

    def setup(self) -> None:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        self.server.start()
        created = self.http.post(
            "/v1/collections", json={"name": COLLECTION, "ndim": NDIM, "fields_to_index": ["owner", "v"]}
        )
        created.raise_for_status()
        self.add_own(self.preload)
        for process in self.processes:
            process.start()

    def add_own(self, count: int) -> None:
        """Adds `count` records of the harness's own (acknowledged before it goes on)."""
        while count > 0:
            ids = [f"p-{self.next_own + i}" for i in range(min(count, BLOCK))]
            block = self.next_own // BLOCK
            self.next_own += BLOCK
            count -= len(ids)
            records = [{"_id": i, "_vector": vector(i), "owner": -1, "v": block} for i in ids]
            answer = self.http.post(f"/v1/collections/{COLLECTION}/records", json={"records": records})
            answer.raise_for_status()
            if answer.json()["errors"]:
                raise RuntimeError(f"preloading failed: {answer.text[:300]}")
            for id_ in ids:
                self.own.set(id_, block)

    # -- kills ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get(f"/v1/collections/{COLLECTION}", timeout=5.0).json()
        return answer

    def wait_for_snapshot(self, seconds: float) -> bool:
        """Polls for a snapshot being written (its temporary folder) and returns at once when
        one is; False when none began within `seconds`."""
        folder = self.server.data / "collections" / COLLECTION / "snapshots"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with os.scandir(folder) as entries:
                    if any(entry.name.startswith("tmp-") for entry in entries):
                        return True
            except FileNotFoundError:
                pass
            time.sleep(0.0005)
        return False

    def start_compaction(self) -> None:
        """Removes enough preloaded records (acknowledged, through the API) to start one."""
        wanted = max(1100, self.stats()["count"] // 4 + 100)
        if len(self.own.present) < wanted + BLOCK:  # the preload is used up: add more first
            self.add_own(wanted + 2 * BLOCK)
        blocks = sorted({v for v in self.own.present.values()})
        self.rng.shuffle(blocks)
        chosen = blocks[: -(-wanted // BLOCK) + 1]
        # One request (by filter): a compaction makes writers wait, so a second request would
        # end after it.
        flt = {"owner": -1, "v": {"$in": chosen}}
        answer = self.http.post(f"/v1/collections/{COLLECTION}/records/delete", json={"filter": flt})
        answer.raise_for_status()
        removed = [id_ for id_, v in self.own.present.items() if v in chosen]
        if answer.json()["deleted"] != len(removed):
            self.report.wrong.append(f"removing blocks {chosen} deleted {answer.json()['deleted']}, not {len(removed)}")
        for id_ in removed:
            self.own.set(id_, None)

    def wait_for_compaction(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if self.stats()["index"].get("compacting"):
                    time.sleep(self.rng.uniform(0.0, 0.05))
                    return True
            except httpx.HTTPError:
                return False
            time.sleep(0.005)
        return False

    def kill_once(self, kind: str) -> bool:
        if kind == "random":
            time.sleep(self.rng.uniform(0.2, 2.0))
            hit = True
        elif kind == "snapshot":
            hit = self.wait_for_snapshot(30.0)
        else:
            self.start_compaction()
            hit = self.wait_for_compaction(10.0)
        self.server.kill()
        return hit

    # -- checks --------------------------------------------------------------------------

    def gather(self) -> Ledger:
        self.pause.set()
        for event in self.parked:
            if not event.wait(60):
                raise RuntimeError("a client did not park")
        expected = Ledger()
        expected.merge(self.own)
        for n in range(self.clients):
            expected.merge(Ledger.from_json(json.loads((self.folder / f"client-{n}.json").read_text())))
        return expected

    def listed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self.http.get(f"/v1/collections/{COLLECTION}/records", params=params)
            page.raise_for_status()
            body = page.json()
            for record in body["records"]:
                out[record["_id"]] = int(record["v"])
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def search(self, vector_: list[float], limit: int, exact: bool) -> list[str]:
        body = {"vector": vector_, "limit": limit, "exact": exact, "fields": []}
        answer = self.http.post(f"/v1/collections/{COLLECTION}/search", json=body)
        answer.raise_for_status()
        return [hit["_id"] for hit in answer.json()["hits"]]

    def check(self, expected: Ledger, kind: str, hit: bool, restart_s: float) -> None:
        report = self.report
        stored = self.listed()
        for id_, v in expected.present.items():
            if id_ not in stored:
                report.lost.append(f"{kind}: acknowledged {id_} (v={v}) is missing")
            elif stored[id_] != v:
                report.wrong.append(f"{kind}: {id_} has v={stored[id_]}, acknowledged v={v}")
        for id_ in expected.absent:
            if id_ in stored:
                report.resurrected.append(f"{kind}: removed {id_} is back")
        for id_, possible in expected.uncertain.items():
            if stored.get(id_) not in possible:
                report.wrong.append(f"{kind}: cut write of {id_} left {stored.get(id_)}, expected one of {possible}")
        known = set(expected.present) | expected.absent | set(expected.uncertain)
        for id_ in stored.keys() - known:
            report.wrong.append(f"{kind}: {id_} is stored but was never written")
        count = self.stats()["count"]
        if count != len(stored):
            report.index_errors.append(f"{kind}: count {count} but {len(stored)} records listed")
        present = sorted(set(expected.present) & stored.keys())
        for id_ in self.rng.sample(present, min(40, len(present))):
            if self.search(vector(id_), 1, True) != [id_]:
                report.index_errors.append(f"{kind}: {id_} is not its own nearest in an exact scan")
            self.graph_lookups += 1
            if id_ not in self.search(vector(id_), 10, False):
                self.graph_misses.append(f"{kind}: {id_}")
        removed = sorted(expected.absent)
        sample = self.rng.sample(removed, min(20, len(removed)))
        for id_ in sample:
            for exact in (False, True):
                if id_ in self.search(vector(id_), 5, exact):
                    report.index_errors.append(f"{kind}: removed {id_} is found by search (exact={exact})")
        overlap = 0
        queries = 20
        for q in range(queries):
            query = vector(f"query-{self.rng.random()}-{q}")
            overlap += len(set(self.search(query, 10, False)) & set(self.search(query, 10, True)))
        recall = overlap / (queries * 10)
        if recall < MIN_RECALL:
            report.index_errors.append(f"{kind}: graph recall@10 against exact scans is {recall:.2f}")
        report.rounds.append(
            Round(kind, hit, restart_s, len(stored), len(sample), len(expected.uncertain), round(recall, 3))
        )
        report.acknowledged_writes = expected.acknowledged
        report.cut_requests = expected.cut
        report.server_errors = list(expected.server_errors)
        report.graph_lookups = self.graph_lookups + expected.searches
        report.graph_misses = self.graph_misses + [f"live: {miss}" for miss in expected.misses]

    # -- the run -------------------------------------------------------------------------

    def run(self, kills: int) -> Report:
        try:
            self.setup()
            for number in range(kills):
                kind = KINDS[number % len(KINDS)]
                self.pause.clear()
                hit = self.kill_once(kind)
                expected = self.gather()
                restart_s = self.server.start()
                self.check(expected, kind, hit, restart_s)
            self.pause.clear()
            time.sleep(0.5)
            expected = self.gather()
            self.check(expected, "final", True, 0.0)
        finally:
            self.stop.set()
            self.pause.clear()
            for process in self.processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
            self.server.stop()
            self.http.close()
        return self.report


def run(
    folder: Path, kills: int = 3, clients: int = 3, preload: int = 5000, seed: int = 7, snapshot_every: int = 500
) -> Report:
    return Harness(folder, clients, preload, seed, snapshot_every).run(kills)


# -- the benchmark ----------------------------------------------------------------------------


def markdown(report: Report, command: str, seconds: float, args: argparse.Namespace) -> str:
    lines = [
        MARK_START,
        "## Reliability: kill test",
        "",
        f"Command: `{command}` ({seconds:.0f} s, {time.strftime('%Y-%m-%d')}). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end. {args.clients} client processes "
        f"(insert, update, remove, search of their own records), {args.preload:,} preloaded records, "
        f"`vectors` collection ({NDIM}-d, fields `owner` and `v` indexed), "
        f"a snapshot every {args.snapshot_every} changes.",
        "",
        f"- kills: {len(report.rounds) - 1} (SIGKILL), each followed by a restart and the full check;",
        f"- acknowledged writes checked: {report.acknowledged_writes:,}; requests cut by a kill: {report.cut_requests}",
        f"- **lost acknowledged writes: {len(report.lost)}**; removed records back: {len(report.resurrected)}; "
        f"wrong values: {len(report.wrong)}; index disagreements: {len(report.index_errors)}; "
        f"5xx: {len(report.server_errors)}",
        f"- records looked up by their own vector through the graph (top 10): {report.graph_lookups:,}, "
        f"missed: {len(report.graph_misses)} ({100 * report.graph_miss_rate:.3f} %; HNSW is approximate; "
        "exact scans found every sampled record)",
        "",
        "| kind | kills | landed in it | restart s (median) | records at the end | lowest recall@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in KINDS:
        rounds = [r for r in report.rounds if r.kind == kind]
        if not rounds:
            continue
        lines.append(
            f"| {kind} | {len(rounds)} | {sum(r.hit for r in rounds)} | "
            f"{float(np.median([r.restart_s for r in rounds])):.2f} | {rounds[-1].present:,} | "
            f"{min(r.recall for r in rounds):.3f} |"
        )
    lines += [
        "",
        "A kill lands in a snapshot when the snapshot's temporary folder existed at the kill, and in a "
        "compaction when the collection reported `compacting` (the graph rebuild) just before it.",
    ]
    for failure in report.failures[:20]:
        lines.append(f"- failure: {failure}")
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    replace_section(path, section, MARK_START, MARK_END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--preload", type=int, default=20_000)
    parser.add_argument("--snapshot-every", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lookalike-kill-") as folder:
        report = run(Path(folder), args.kills, args.clients, args.preload, args.seed, args.snapshot_every)
    seconds = time.perf_counter() - started
    command = "python -m bench.reliability.kill " + " ".join(sys.argv[1:])
    section = markdown(report, command.strip(), seconds, args)
    print(section)
    if args.out:
        write_section(args.out, section)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
