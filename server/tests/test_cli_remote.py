"""The ``lookalike`` command against a real server process (``python -m lookalike serve``):
``insert``, ``search``, ``collections`` and ``export`` with ``--server URL --token TOKEN``,
``_file`` images sent as base64, batches split under the server's body limit, tokens and their
exit codes, and a resumed insert. The in-process runs are in ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ximilar_fixtures import ADMIN_TOKEN, Server, free_port, start_server

import lookalike
from lookalike.cli import ExitCode
from lookalike.testing.fakes import fake_image
from lookalike_server.auth import TokenStore

#: The server refuses bodies larger than this, so that batches of images must be split.
MAX_BODY_BYTES = 64 * 1024


def lookalike_cli(
    *args: str | Path, server: Server | None = None, token: str | None = ADMIN_TOKEN, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m lookalike ARGS`` against `server` (``--server``, ``--token``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    environment.update({"COLUMNS": "200", "PYTHONIOENCODING": "utf-8", **env})
    target: list[str] = []
    if server is not None:
        target += ["--server", server.base]
    if token is not None:
        target += ["--token", token]
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *map(str, args), *target],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def ok(result: subprocess.CompletedProcess[str], code: int = ExitCode.OK) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def vector_records(count: int, ndim: int = 4, start: int = 0) -> list[dict[str, Any]]:
    vectors = np.random.default_rng(start).standard_normal((count, ndim)).round(4)
    return [{"_id": f"r{start + i}", "_vector": vectors[i].tolist(), "part": (start + i) % 3} for i in range(count)]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def search(server: Server, collection: str, *args: str | Path) -> list[dict[str, Any]]:
    """The hits of ``lookalike search -c COLLECTION ARGS --json`` on the server."""
    result = ok(lookalike_cli("search", "-c", collection, *args, "--json", server=server))
    hits: list[dict[str, Any]] = json.loads(result.stdout)["hits"]
    return hits


def described(server: Server, name: str) -> dict[str, Any]:
    listed = json.loads(ok(lookalike_cli("collections", "--json", server=server)).stdout)
    found: dict[str, Any] = next(c for c in listed["collections"] if c["name"] == name)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a ``shared`` collection and a read and a write token of it."""
    data = tmp_path_factory.mktemp("cli-remote") / "data"
    data.mkdir()
    with lookalike.Engine(data) as engine:
        engine.create_collection("shared", type="vectors", ndim=4)
    store = TokenStore(data / "server.db", ADMIN_TOKEN)
    try:
        tokens = {scope: store.create("shared", scope)[0] for scope in ("read", "write")}  # type: ignore[arg-type]
    finally:
        store.close()
    running = start_server(data, env={"LOOKALIKE_MAX_BODY_BYTES": str(MAX_BODY_BYTES)})
    running.tokens = tokens
    try:
        yield running
    finally:
        running.stop()


def test_insert_search_collections_and_export_through_the_server(server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(700))
    create = ("--create", "--type", "vectors", "--fields-to-index", "part", "--batch-size", "100")
    result = ok(lookalike_cli("insert", source, "-c", "remote", *create, "--json", server=server))
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["failed"], summary["target"]) == (700, 0, server.base)
    assert "Created collection remote (type vectors, 4 dimensions)" in result.stderr
    info = described(server, "remote")
    assert (info["type"], info["count"], info["ndim"], info["fields_to_index"]) == ("vectors", 700, 4, ["part"])
    assert "remote" in ok(lookalike_cli("collections", server=server)).stdout

    hits = search(server, "remote", "--id", "r5", "--filter", '{"part": 2}')
    assert hits[0]["_id"] == "r5" and all(hit["part"] == 2 for hit in hits) and len(hits) == 10
    vector = json.dumps(vector_records(700)[42]["_vector"])
    assert search(server, "remote", "--vector", vector, "-n", "1")[0]["_id"] == "r42"
    table = ok(lookalike_cli("search", "-c", "remote", "--id", "r5", "-n", "2", server=server)).stdout
    assert table.splitlines()[1].split()[:3] == ["1", "r5", "0.0000"]

    exported = ok(lookalike_cli("export", "-c", "remote", "--page-size", "64", server=server)).stdout.splitlines()
    assert [json.loads(line)["_id"] for line in exported] == [f"r{i}" for i in range(700)]
    part = ok(lookalike_cli("export", "-c", "remote", "--filter", '{"part": 0}', "-q", server=server)).stdout
    assert len(part.splitlines()) == 234

    bad = ok(lookalike_cli("search", "-c", "remote", "--id", "r5", "--filter", '{"$no": 1}', server=server), 2)
    assert "invalid_filter" in bad.stderr


@pytest.mark.skipif(
    not any(p.name == "thumbnail" for p in metadata.entry_points(group="lookalike.collection_types")),
    reason="the thumbnail example type is not installed",
)
def test_image_files_are_read_here_and_batches_fit_the_body_limit(server: Server, tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    for seed in range(8):
        fake_image(seed, 80).save(tmp_path / f"{seed}.png")  # about 20 KB each, 27 KB in base64
        records.append({"_id": f"img-{seed}", "_file": f"{seed}.png", "seed": seed})
    records.insert(3, {"_id": "missing", "_file": "missing.png"})
    records.insert(5, {"_id": "huge", "_file": "0.png", "notes": "x" * MAX_BODY_BYTES})
    source = write_jsonl(tmp_path / "records.jsonl", records)
    create = ("--create", "--type", "thumbnail")
    result = ok(lookalike_cli("insert", source, "-c", "thumbs", *create, server=server), ExitCode.PARTIAL)
    assert "Inserted 8 of 10 records" in result.stderr
    errors = [json.loads(line) for line in (tmp_path / "records.jsonl.thumbs.errors.jsonl").read_text().splitlines()]
    assert [(e["position"], e["_id"], e["code"]) for e in errors] == [
        (3, "missing", "invalid_image"),
        (5, "huge", "body_too_large"),
    ]
    assert described(server, "thumbs")["count"] == 8
    assert search(server, "thumbs", "--image", tmp_path / "6.png", "-n", "1")[0]["_id"] == "img-6"


def test_tokens_and_reaching_the_server(server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(20))
    refused = ok(lookalike_cli("collections", server=server, token="not-a-token"), ExitCode.UNAVAILABLE)
    assert "unauthorized" in refused.stderr
    read_only = lookalike_cli("insert", source, "-c", "shared", server=server, token=server.tokens["read"])
    ok(read_only, ExitCode.UNAVAILABLE)
    assert "forbidden" in read_only.stderr
    ok(lookalike_cli("insert", source, "-c", "shared", "--restart", server=server, token=server.tokens["write"]))
    mine = json.loads(ok(lookalike_cli("collections", "--json", server=server, token=server.tokens["read"])).stdout)
    assert [c["name"] for c in mine["collections"]] == ["shared"] and mine["collections"][0]["count"] == 20
    other = ok(lookalike_cli("search", "-c", "remote", "--id", "r1", server=server, token=server.tokens["read"]), 3)
    assert "forbidden" in other.stderr

    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = ok(lookalike_cli("collections", "--server", nobody, token="t"), ExitCode.UNAVAILABLE)
    assert "cannot reach the server" in unreachable.stderr

    environment = {"LOOKALIKE_SERVER": server.base, "LOOKALIKE_TOKEN": ADMIN_TOKEN}
    assert "shared" in ok(lookalike_cli("collections", "--json", token=None, **environment)).stdout


def test_missing_collection_exits_with_4(server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(3))
    missing = ok(lookalike_cli("insert", source, "-c", "nowhere", server=server), ExitCode.NOT_FOUND)
    assert "--create" in missing.stderr
    ok(lookalike_cli("search", "-c", "nowhere", "--id", "r1", server=server), ExitCode.NOT_FOUND)
    ok(lookalike_cli("export", "-c", "nowhere", server=server), ExitCode.NOT_FOUND)


def test_an_insert_through_the_server_resumes(server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(400))
    args = ("insert", source, "-c", "resumed", "--create", "--type", "vectors", "--batch-size", "50")
    crashed = lookalike_cli(*args, server=server, LOOKALIKE_INSERT_CRASH_AFTER="4:before-checkpoint")
    assert crashed.returncode == -signal.SIGKILL
    assert described(server, "resumed")["count"] == 200
    summary = json.loads(ok(lookalike_cli(*args, "--json", server=server)).stdout)
    assert (summary["resumed_at"], summary["inserted_now"], summary["inserted"]) == (150, 250, 400)
    assert described(server, "resumed")["count"] == 400


def test_in_process_on_the_servers_data_folder_says_it_is_in_use(server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(3))
    result = lookalike_cli("insert", source, "-c", "shared", "--data", server.data, token=None)
    assert ok(result, ExitCode.UNAVAILABLE) and "lookalike serve" in result.stderr
