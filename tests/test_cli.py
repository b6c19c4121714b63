"""The ``lookalike`` command, run for real: ``python -m lookalike ...`` in a subprocess on a
temporary data folder, checking its output, its files and its exit status.

Most tests use ``vectors`` collections (no model); image records use the ``thumbnail`` example
type (a few pixels per image) and one test the default ``generic`` type with its real model.
The tests against a server are in ``server/tests/test_cli_remote.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest

import lookalike
import lookalike.cli as cli_module
from lookalike.cli import ExitCode
from lookalike.testing.fakes import fake_image

#: Every command, for the --help test.
COMMANDS = [
    [],
    ["insert"],
    ["search"],
    ["collections"],
    ["export"],
    ["models"],
    ["models", "pull"],
    ["models", "build"],
    ["models", "list"],
    ["models", "verify"],
    ["types"],
    ["demo"],
]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOKALIKE_SERVER", "LOOKALIKE_TOKEN", "LOOKALIKE_DATA")}
    env.update({"LOOKALIKE_MODEL_THREADS": "1", "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"})
    env.update(extra)
    return env


def lookalike_cli(
    *args: str | Path, cwd: Path | None = None, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m lookalike ARGS`` and returns what it did."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        env=environment(**env),
        timeout=600,
    )


def ok(result: subprocess.CompletedProcess[str], code: int = ExitCode.OK) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def has_type(name: str) -> bool:
    return any(point.name == name for point in metadata.entry_points(group="lookalike.collection_types"))


def vector_records(count: int, ndim: int = 8, start: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, ndim)).round(4)
    return [
        {
            "_id": f"r{start + i}",
            "_vector": vectors[i].tolist(),
            "category": "even" if (start + i) % 2 == 0 else "odd",
            "product_id": f"p{(start + i) // 3}",
        }
        for i in range(count)
    ]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def count(data: Path, collection: str) -> int:
    listed = json.loads(ok(lookalike_cli("collections", "--json", "--data", data)).stdout)
    return next(int(c["count"]) for c in listed["collections"] if c["name"] == collection)


def search(data: Path, collection: str, *args: str | Path, **env: str) -> list[dict[str, Any]]:
    """The hits of ``lookalike search -c COLLECTION ARGS --json``."""
    result = ok(lookalike_cli("search", "-c", collection, *args, "--json", "--data", data, **env))
    hits: list[dict[str, Any]] = json.loads(result.stdout)["hits"]
    return hits


def exported_ids(data: Path, collection: str) -> list[str]:
    lines = ok(lookalike_cli("export", "-c", collection, "--data", data, "-q")).stdout.splitlines()
    return [json.loads(line)["_id"] for line in lines]


def error_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


# -- help, version, the command itself --------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "lookalike")
def test_help_of_every_command(command: list[str]) -> None:
    result = ok(lookalike_cli(*command, "--help"))
    assert result.stdout.startswith(f"Usage: lookalike {' '.join(command)}".rstrip())
    assert "Exit codes:" in result.stdout and "130" in result.stdout


def test_help_lists_the_commands_of_other_distributions_without_importing_them() -> None:
    external = {point.name for point in metadata.entry_points(group="lookalike.commands")}
    code = (
        "import sys\n"
        "from lookalike.cli import main\n"
        "status = main(['--help'])\n"
        "print('LOADED' if [m for m in sys.modules if m.split('.')[0] == 'lookalike_server'] else 'LAZY', status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(), check=True)
    assert result.stdout.strip().endswith("LAZY 0")
    for name in ("insert", "search", "collections", "export", "models", "types", "demo", *external):
        assert f"\n  {name} " in result.stdout


def test_serve_comes_from_the_server_distribution() -> None:
    if "serve" not in {point.name for point in metadata.entry_points(group="lookalike.commands")}:
        pytest.skip("lookalike-server is not installed")
    result = ok(lookalike_cli("serve", "--help"))
    for option in ("--host", "--port", "--data", "--settings", "--workers", "--demo", "--allow-private-urls"):
        assert option in result.stdout
    assert "--log-level" in result.stdout


def test_python_m_lookalike_is_the_lookalike_command() -> None:
    script = Path(sys.executable).with_name("lookalike")
    if not script.exists():
        pytest.skip("no lookalike script beside this interpreter")
    via_module = ok(lookalike_cli("--version")).stdout
    via_script = subprocess.run([script, "--version"], capture_output=True, text=True, env=environment(), check=True)
    assert via_module == via_script.stdout and lookalike.__version__ in via_module


@click.command("hello")
@click.option("--name", default="world")
def hello_command(name: str) -> int:
    """Say hello (a command another distribution adds)."""
    click.echo(f"hello {name}")
    return 0


def legacy_hello(argv: list[str]) -> int:
    """An older style of added command: a function of the arguments, returning the exit status."""
    print("legacy", *argv)
    return 7


def test_other_distributions_add_commands_through_entry_points(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    points = {
        name: metadata.EntryPoint(name=name, value=value, group=cli_module.COMMANDS_GROUP)
        for name, value in (
            ("hello", f"{__name__}:hello_command"),
            ("legacy", f"{__name__}:legacy_hello"),
            ("broken", "no_such_module_here:command"),
            ("insert", f"{__name__}:hello_command"),  # cannot replace a built-in command
        )
    }
    monkeypatch.setattr(cli_module, "_external_commands", lambda: points)
    assert cli_module.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"\n  {name} " in listed for name in ("hello", "legacy", "broken"))
    assert cli_module.main(["hello", "--name", "there"]) == 0 and capsys.readouterr().out == "hello there\n"
    assert cli_module.main(["legacy", "--any", "thing"]) == 7 and capsys.readouterr().out == "legacy --any thing\n"
    assert cli_module.main(["broken", "x"]) == ExitCode.FAILED
    assert "no_such_module_here" in capsys.readouterr().err
    assert cli_module.main(["insert", "--help"]) == 0 and "RECORDS" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option"],
        ["no-such-command"],
        ["insert", "records.jsonl"],  # no --collection
        ["insert", "missing.jsonl", "-c", "c"],  # no such file
        ["insert", "records.jsonl", "-c", "c", "--ndim", "8"],  # --ndim without --create
        ["insert", "records.jsonl", "-c", "c", "--create", "--config", "{not json"],
        ["insert", "records.jsonl", "-c", "c", "--batch-size", "0"],
        ["insert", "records.jsonl", "-c", "c", "--no-checkpoint", "--restart"],
        ["search", "-c", "c"],  # no query
        ["search", "-c", "c", "--id", "a", "--vector", "1,2"],  # two queries
        ["search", "-c", "c", "--id", "a", "--filter", "[1]"],  # a filter is an object
        ["search", "-c", "c", "--image", "no-such-image.png"],
        ["search", "-c", "c", "--vector", "1,x"],
        ["search", "-c", "c", "--id", "a", "--limit", "0"],
        ["collections", "--server", "http://127.0.0.1:9"],  # no token
        ["collections", "--server", "127.0.0.1:9", "--token", "t"],  # not a URL
        ["collections", "--server", "http://127.0.0.1:9", "--token", "t", "--data", "d"],  # both
        ["export"],
        ["models", "pull", "name"],  # no --from
    ],
)
def test_usage_errors_exit_with_2(tmp_path: Path, args: list[str]) -> None:
    write_jsonl(tmp_path / "records.jsonl", vector_records(2))
    result = ok(lookalike_cli(*args, cwd=tmp_path), ExitCode.USAGE)
    assert "rror" in result.stderr
    assert "Traceback" not in result.stderr


# -- insert, search, collections, export in this process ------------------------------------------


def test_insert_json_lines_then_search_collections_and_export(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(300))
    create = ("--create", "--type", "vectors", "--metric", "cos", "--fields-to-index", "category")
    grouping = ("--product-id-field", "product_id")
    result = ok(lookalike_cli("insert", source, "-c", "vec", *create, *grouping, "--batch-size", "64", "--data", data,
                              "--json"))
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["failed"], summary["records"], summary["created"]) == (300, 0, 300, True)
    assert summary["complete"] and summary["errors_file"] is None
    assert "Created collection vec (type vectors, 8 dimensions)" in result.stderr
    assert "Inserted 300 of 300 records into vec" in result.stderr
    assert not (tmp_path / "records.jsonl.vec.errors.jsonl").exists()
    assert (tmp_path / "records.jsonl.vec.checkpoint").exists()

    listed = json.loads(ok(lookalike_cli("collections", "--json", "--data", data)).stdout)
    (described,) = listed["collections"]
    assert described["name"] == "vec" and described["type"] == "vectors" and described["count"] == 300
    assert (described["ndim"], described["metric"], described["fields_to_index"]) == (8, "cos", ["category"])
    table = ok(lookalike_cli("collections", "--data", data)).stdout
    assert "vec" in table and "vectors" in table and "300" in table

    hits = search(data, "vec", "--id", "r7", "-n", "5")
    assert [hit["_id"] for hit in hits][0] == "r7" and len(hits) == 5
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-5) and hits[0]["category"] == "odd"
    filtered = search(data, "vec", "--id", "r7", "--filter", '{"category": "even"}', "--fields", "category")
    assert filtered and all(set(hit) == {"_id", "distance", "category"} for hit in filtered)
    assert all(hit["category"] == "even" for hit in filtered)
    grouped = search(data, "vec", "--id", "r7", "--group-by", "product_id", "-n", "4")
    assert len({hit["_group"] for hit in grouped}) == len(grouped) == 4
    assert search(data, "vec", "--vector", json.dumps(vector_records(300)[11]["_vector"]))[0]["_id"] == "r11"
    shown = ok(lookalike_cli("search", "-c", "vec", "--id", "r7", "-n", "3", "--data", data)).stdout
    assert shown.splitlines()[0].split() == ["#", "_id", "distance", "metadata"]
    assert shown.splitlines()[1].split()[:3] == ["1", "r7", "0.0000"]

    lines = ok(lookalike_cli("export", "-c", "vec", "--data", data, "--page-size", "7")).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["_id"] for record in records] == [f"r{i}" for i in range(300)]
    assert records[5] == {"_id": "r5", "category": "odd", "product_id": "p1"}
    output = tmp_path / "even.jsonl"
    result = ok(lookalike_cli("export", "-c", "vec", "--filter", '{"category": "even"}', "-o", output, "--data", data))
    assert "Exported 150 records of vec to" in result.stderr
    assert len(output.read_text().splitlines()) == 150 and not list(tmp_path.glob(".even.jsonl.part"))


def test_insert_a_json_array_infers_ndim_and_a_rerun_skips_what_is_done(tmp_path: Path, data: Path) -> None:
    source = tmp_path / "records.json"
    source.write_text(json.dumps(vector_records(120, ndim=5), indent=2))
    args = ("insert", source, "-c", "arr", "--create", "--type", "vectors", "--batch-size", "50", "--data", data)
    first = json.loads(ok(lookalike_cli(*args, "--json")).stdout)
    assert (first["inserted"], first["records"]) == (120, 120)
    assert count(data, "arr") == 120
    described = json.loads(ok(lookalike_cli("collections", "--json", "--data", data)).stdout)["collections"][0]
    assert described["ndim"] == 5

    again = ok(lookalike_cli(*args, "--json"))
    assert json.loads(again.stdout)["inserted_now"] == 0
    assert "Nothing new to insert" in again.stderr

    restarted = json.loads(ok(lookalike_cli(*args, "--json", "--restart")).stdout)
    assert (restarted["inserted_now"], restarted["inserted"], restarted["resumed_at"]) == (120, 120, None)
    assert count(data, "arr") == 120  # replaced by _id, not duplicated


def test_bad_records_go_to_the_error_file_and_exit_with_1(tmp_path: Path, data: Path) -> None:
    good = vector_records(10)
    lines = [json.dumps(record) for record in good[:4]]
    lines += [
        json.dumps({"_id": "short", "_vector": [1.0, 2.0]}),  # position 4: wrong dimension
        "{this is not json",  # position 5
        "",  # a blank line is not a record
        json.dumps([1, 2, 3]),  # position 6: not an object
        json.dumps({"_vector": good[0]["_vector"]}),  # position 7: no _id
        json.dumps({"_id": "bad-field", "_vector": good[0]["_vector"], "_secret": 1}),  # position 8: reserved field
    ]
    lines += [json.dumps(record) for record in good[4:]]
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(lines) + "\n")
    create = ("--create", "--type", "vectors", "--ndim", "8", "--batch-size", "4")
    result = ok(lookalike_cli("insert", source, "-c", "vec", *create, "--data", data), ExitCode.PARTIAL)
    errors_file = tmp_path / "records.jsonl.vec.errors.jsonl"
    assert "5 records failed" in result.stderr and str(errors_file.name) in result.stderr
    errors = error_lines(errors_file)
    assert [(e["position"], e["line"], e["_id"], e["code"]) for e in errors] == [
        (4, 5, "short", "dimension_mismatch"),
        (5, 6, None, "invalid_json"),
        (6, 8, None, "invalid_record"),
        (7, 9, None, "invalid_record"),
        (8, 10, "bad-field", "invalid_record"),
    ]
    assert all(e["message"] and not e["message"].startswith("record ") for e in errors)
    assert "_secret" in errors[4]["message"]
    assert sorted(exported_ids(data, "vec")) == sorted(record["_id"] for record in good)

    custom = tmp_path / "failed.jsonl"
    ok(
        lookalike_cli("insert", source, "-c", "vec", "--data", data, "--restart", "--errors", custom, "-q"),
        ExitCode.PARTIAL,
    )
    assert len(error_lines(custom)) == 5


def test_a_broken_json_array_stops_after_inserting_what_came_before(tmp_path: Path, data: Path) -> None:
    text = json.dumps(vector_records(30))
    text = text.replace('{"_id": "r5",', '{"_id": "r5" "oops",')  # one bad record: reported, the rest goes on
    text = text.replace('}, {"_id": "r20"', '} {"_id": "r20"')  # no comma: the array cannot be read further
    source = tmp_path / "records.json"
    source.write_text(text)
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--data", data, "--batch-size", "8")
    result = ok(lookalike_cli(*args), ExitCode.FAILED)
    assert "cannot read" in result.stderr and "expected ',' or ']' after record 19" in result.stderr
    assert sorted(exported_ids(data, "vec")) == sorted(f"r{i}" for i in range(20) if i != 5)
    errors = error_lines(tmp_path / "records.json.vec.errors.jsonl")
    assert [(e["position"], e["code"]) for e in errors] == [(5, "invalid_json")]
    ok(lookalike_cli(*args), ExitCode.FAILED)  # resumes at the break, and stops there again
    assert count(data, "vec") == 19


@pytest.mark.parametrize("when", ["", ":before-checkpoint"])
def test_a_killed_insert_resumes_without_losing_or_repeating(tmp_path: Path, data: Path, when: str) -> None:
    records = vector_records(500)
    records[130]["_vector"] = [1.0]  # fails, in the third batch: the one the crash interrupts or follows
    source = write_jsonl(tmp_path / "records.jsonl", records)
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--batch-size", "50", "--data", data)
    crashed = lookalike_cli(*args, LOOKALIKE_INSERT_CRASH_AFTER=f"3{when}")
    assert crashed.returncode == -signal.SIGKILL
    checkpoint = json.loads((tmp_path / "records.jsonl.vec.checkpoint").read_text())
    assert checkpoint["position"] == (150 if not when else 100)
    assert count(data, "vec") == 149  # the third batch was written either way; the crash came after

    resumed = ok(lookalike_cli(*args, "--json"), ExitCode.PARTIAL)
    summary = json.loads(resumed.stdout)
    assert summary["resumed_at"] == checkpoint["position"]
    assert (summary["inserted"], summary["failed"], summary["records"]) == (499, 1, 500)
    assert f"Resuming at record {checkpoint['position']}" in resumed.stderr
    assert count(data, "vec") == 499
    errors = error_lines(tmp_path / "records.jsonl.vec.errors.jsonl")
    assert [(e["position"], e["_id"]) for e in errors] == [(130, "r130")]  # once, even though batch 3 ran twice


def test_an_insert_killed_at_any_moment_resumes(tmp_path: Path, data: Path) -> None:
    total = 20_000
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(total, ndim=16))
    checkpoint = tmp_path / "records.jsonl.vec.checkpoint"
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--batch-size", "100", "--data", data)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
    )
    try:
        while process.poll() is None and not checkpoint.exists():
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # wherever it is: mid-batch, mid-checkpoint, or done
    finally:
        process.wait(timeout=60)
    summary = json.loads(ok(lookalike_cli(*args, "--json")).stdout)
    assert (summary["inserted"], summary["failed"], summary["records"]) == (total, 0, total)
    assert count(data, "vec") == total


def test_ctrl_c_stops_after_the_batch_in_flight_and_a_rerun_resumes(tmp_path: Path, data: Path) -> None:
    total = 20_000
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(total, ndim=16))
    checkpoint = tmp_path / "records.jsonl.vec.checkpoint"
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--batch-size", "100", "--data", data)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    while process.poll() is None and not checkpoint.exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == ExitCode.INTERRUPTED:  # (unless it was done already)
        assert "Interrupted after" in stderr and "Run the same command again" in stderr
        assert "Traceback" not in stderr
        done = json.loads(checkpoint.read_text())["position"]
        assert 0 < done < total and count(data, "vec") == done  # exactly the checkpointed batches
    else:
        assert process.returncode == ExitCode.OK, stderr
    summary = json.loads(ok(lookalike_cli(*args, "--json")).stdout)
    assert (summary["inserted"], summary["records"]) == (total, total)
    assert count(data, "vec") == total


def test_a_changed_input_is_not_resumed_and_appended_lines_are(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(100))
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--batch-size", "30", "--data", data)
    ok(lookalike_cli(*args))
    with source.open("a") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in vector_records(25, start=100)))
    appended = json.loads(ok(lookalike_cli(*args, "--json")).stdout)
    assert (appended["inserted_now"], appended["inserted"], appended["resumed_at"]) == (25, 125, 100)
    assert count(data, "vec") == 125

    source.write_text(source.read_text().replace('"r0"', '"r00"', 1))
    changed = ok(lookalike_cli(*args), ExitCode.FAILED)
    assert "changed since the checkpoint" in changed.stderr and "--restart" in changed.stderr
    ok(lookalike_cli(*args, "--restart"))
    assert count(data, "vec") == 126


def test_a_checkpoint_of_another_destination_is_not_used(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(10))
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors")
    ok(lookalike_cli(*args, "--data", tmp_path / "one"))
    other = ok(lookalike_cli(*args, "--data", tmp_path / "two"), ExitCode.FAILED)
    assert "--checkpoint" in other.stderr
    ok(lookalike_cli(*args, "--data", tmp_path / "two", "--checkpoint", tmp_path / "two.checkpoint"))
    assert count(tmp_path / "two", "vec") == 10


def test_a_dropped_collection_is_filled_again_from_the_beginning(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(40))
    args = ("insert", source, "-c", "vec", "--create", "--type", "vectors", "--data", data)
    ok(lookalike_cli(*args))
    with lookalike.Engine(data) as engine:
        engine.drop_collection("vec")
    again = ok(lookalike_cli(*args))
    assert "does not exist any more" in again.stderr
    assert count(data, "vec") == 40


def test_insert_from_stdin(tmp_path: Path, data: Path) -> None:
    text = "".join(json.dumps(record) + "\n" for record in vector_records(30))
    args = ("insert", "-", "-c", "vec", "--create", "--type", "vectors", "--data", data, "--json")
    result = ok(lookalike_cli(*args, input=text, cwd=tmp_path))
    assert json.loads(result.stdout)["inserted"] == 30 and json.loads(result.stdout)["checkpoint"] is None
    assert count(data, "vec") == 30


def test_missing_things_exit_with_4(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(3))
    result = ok(lookalike_cli("collections", "--data", data), ExitCode.NOT_FOUND)
    assert "no data folder" in result.stderr
    assert not data.exists()  # reading commands never create the data folder
    ok(lookalike_cli("insert", source, "-c", "vec", "--create", "--type", "vectors", "--data", data))
    missing = ok(lookalike_cli("insert", source, "-c", "other", "--data", data), ExitCode.NOT_FOUND)
    assert "--create" in missing.stderr
    ok(lookalike_cli("search", "-c", "other", "--id", "r1", "--data", data), ExitCode.NOT_FOUND)
    ok(lookalike_cli("search", "-c", "vec", "--id", "nobody", "--data", data), ExitCode.NOT_FOUND)
    ok(lookalike_cli("export", "-c", "other", "--data", data), ExitCode.NOT_FOUND)


def test_bad_queries_and_types_are_usage_errors(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(5))
    ok(lookalike_cli("insert", source, "-c", "vec", "--create", "--type", "vectors", "--data", data))
    bad_filter = ok(lookalike_cli("search", "-c", "vec", "--id", "r1", "--filter", '{"$nope": 1}', "--data", data), 2)
    assert "$nope" in bad_filter.stderr
    ok(lookalike_cli("search", "-c", "vec", "--text", "a cat", "--data", data), ExitCode.USAGE)  # vectors: no text
    ok(lookalike_cli("search", "-c", "vec", "--vector", "1,2", "--data", data), ExitCode.USAGE)  # wrong dimension
    other_type = ok(lookalike_cli("insert", source, "-c", "vec", "--type", "colors", "--data", data), ExitCode.FAILED)
    assert "is of type 'vectors'" in other_type.stderr


def test_a_data_folder_in_use_exits_with_3(tmp_path: Path, data: Path) -> None:
    source = write_jsonl(tmp_path / "records.jsonl", vector_records(3))
    with lookalike.Engine(data):
        result = ok(lookalike_cli("insert", source, "-c", "vec", "--create", "--data", data), ExitCode.UNAVAILABLE)
        assert "in use" in result.stderr and "--server" in result.stderr
        ok(lookalike_cli("collections", "--data", data), ExitCode.UNAVAILABLE)


# -- images ---------------------------------------------------------------------------------------


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """A folder with six small pictures and records.jsonl naming them by relative `_file`, plus
    one record whose file does not exist."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    records: list[dict[str, Any]] = []
    for seed in range(6):
        fake_image(seed, 64).save(folder / f"{seed}.png")
        records.append({"_id": f"img-{seed}", "_file": f"{seed}.png", "seed": seed})
    records.append({"_id": "missing", "_file": "missing.png"})
    write_jsonl(folder / "records.jsonl", records)
    return folder


@pytest.mark.skipif(not has_type("thumbnail"), reason="the thumbnail example type is not installed")
def test_image_records_by_file(pictures: Path, data: Path) -> None:
    create = ("--create", "--type", "thumbnail")
    records = pictures / "records.jsonl"
    result = ok(lookalike_cli("insert", records, "-c", "thumbs", *create, "--data", data), ExitCode.PARTIAL)
    assert "Inserted 6 of 7 records" in result.stderr
    (error,) = error_lines(pictures / "records.jsonl.thumbs.errors.jsonl")
    assert (error["_id"], error["code"], error["position"]) == ("missing", "invalid_image", 6)
    assert "missing.png" in error["message"]
    hits = search(data, "thumbs", "--image", pictures / "3.png", "-n", "2")
    assert hits[0]["_id"] == "img-3" and hits[0]["distance"] == pytest.approx(0.0, abs=1e-4)
    assert ok(lookalike_cli("export", "-c", "thumbs", "--data", data, "-q")).stdout.count("\n") == 6


def test_the_default_type_is_generic_with_its_real_model(pictures: Path, data: Path) -> None:
    if not has_type("generic"):
        pytest.skip("the generic type is not installed")
    records = pictures / "records.jsonl"
    records.write_text("".join(line + "\n" for line in records.read_text().splitlines()[:3]))
    ok(lookalike_cli("insert", records, "-c", "photos", "--create", "--fields-to-index", "seed", "--data", data))
    described = json.loads(ok(lookalike_cli("collections", "--json", "--data", data)).stdout)["collections"][0]
    assert (described["type"], described["count"], described["ndim"]) == ("generic", 3, 1280)
    assert search(data, "photos", "--image", pictures / "1.png")[0]["_id"] == "img-1"
    assert len(search(data, "photos", "--text", "a tabby cat")) == 3


# -- models, types, demo --------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "cache"
    (folder / "models" / "tiny").mkdir(parents=True)
    model = folder / "model-v1.onnx"
    model.write_bytes(b"weights")
    (folder / "model-v1.onnx.sha256").write_text(f"{hashlib.sha256(b'weights').hexdigest()}  model-v1.onnx\n")
    pulled = folder / "models" / "tiny"
    (pulled / "model.json").write_text("{}")
    manifest = {"files": {"model.json": hashlib.sha256(b"{}").hexdigest()}}
    (pulled / "manifest.json").write_text(json.dumps(manifest))
    yield folder


def test_models_list_and_verify(cache: Path) -> None:
    listed = json.loads(ok(lookalike_cli("models", "list", "--json", LOOKALIKE_CACHE_DIR=str(cache))).stdout)
    assert {f["path"] for f in listed["files"]} >= {"model-v1.onnx", "models/tiny/model.json"}
    assert "model-v1.onnx" in ok(lookalike_cli("models", "list", LOOKALIKE_CACHE_DIR=str(cache))).stdout

    verified = json.loads(ok(lookalike_cli("models", "verify", "--json", LOOKALIKE_CACHE_DIR=str(cache))).stdout)
    assert {(f["path"], f["status"]) for f in verified["files"]} == {
        ("model-v1.onnx", "ok"),
        ("models/tiny/model.json", "ok"),
    }
    (cache / "model-v1.onnx").write_bytes(b"weightz")
    (cache / "models" / "tiny" / "model.json").unlink()
    broken = ok(lookalike_cli("models", "verify", LOOKALIKE_CACHE_DIR=str(cache)), ExitCode.PARTIAL)
    assert "mismatch" in broken.stdout and "missing" in broken.stdout


def test_models_verify_on_an_empty_cache(tmp_path: Path) -> None:
    result = ok(lookalike_cli("models", "verify", LOOKALIKE_CACHE_DIR=str(tmp_path)))
    assert "No model files with checksums" in result.stderr


def test_types() -> None:
    listed = json.loads(ok(lookalike_cli("types", "--json")).stdout)
    names = {row["name"] for row in listed["types"]}
    assert "vectors" in names and (not has_type("thumbnail") or "thumbnail" in names)
    assert all(row["query_kinds"] for row in listed["types"])
    table = ok(lookalike_cli("types")).stdout
    assert "vectors" in table and "query kinds" in table


def test_demo_builds_collections_and_prints_example_queries(tmp_path: Path, data: Path) -> None:
    pytest.importorskip("skimage")
    if not has_type("colors"):
        pytest.skip("the colors type is not installed")
    # Only the colors type (no model to load), to keep the test quick; the queries are the same.
    result = ok(lookalike_cli("demo", data, LOOKALIKE_COLLECTION_TYPES="colors"))
    assert "colors (colors):" in result.stdout and "mostly blue with some white" in result.stdout
    assert f'lookalike search -c colors --colors "#1f4fb4:0.7,#ffffff:0.3" --limit 3 --data {data}' in result.stdout
    hits = search(data, "colors", "--colors", "#1f4fb4:0.7,#ffffff:0.3", LOOKALIKE_COLLECTION_TYPES="colors")
    assert len(hits) == 10 and all("_colors" in hit for hit in hits)
