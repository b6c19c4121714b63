"""A few seconds of the soak benchmark (bench/reliability/soak.py, the same code as the long run)
on 2,000 records against a real server process: it produces windows, no 5xx, every write does
what it said, the collection's count is what the acknowledged adds and removes leave, and the
heavy phase sets off a compaction. The speed and memory targets need minutes and a quiet machine
to mean anything, so here they are reported, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "bench" / "reliability" / "soak.py"
RECORDS = 2_000
# Judged only by the long run: a few seconds on a shared machine measure noise.
TIMING_TARGETS = ("memory growth", "p99 drift")


def test_a_short_soak_keeps_counts_and_compacts(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(SOAK),
        f"--records={RECORDS}",
        "--seconds=8",
        "--window=1",
        "--rate=100",
        "--heavy-at=0.25",
        "--heavy-fraction=0.6",  # 1,200 removes: past the compaction threshold (1,000) for sure
        f"--json={report}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert report.exists(), result.stdout + result.stderr
    figures = json.loads(report.read_text())
    failures = figures["failures"]
    assert [f for f in failures if not f.startswith(TIMING_TARGETS)] == [], result.stdout + result.stderr
    assert result.returncode == (1 if failures else 0), result.stderr

    windows = figures["windows"]
    assert len(windows) >= 7
    assert all(window["kinds"] for window in windows)
    assert sum(window["errors_5xx"] + window["no_answer"] for window in windows) == 0
    seen = {kind for window in windows for kind in window["kinds"]}
    assert {"search_id", "search_vector", "search_filter", "add", "remove", "update", "bulk_remove", "bulk_add"} <= seen

    written = figures["written"]
    assert written["added"] > 0 and written["removed"] > 0 and written["updated"] > 0
    assert figures["final"]["count"] == figures["expected_count"] == RECORDS + written["added"] - written["removed"]

    heavy = figures["heavy"]
    assert heavy["records"] >= 1_000
    assert heavy["after_compaction"]["rebuilds"] > heavy["before"]["rebuilds"]
    assert heavy["after_compaction"]["count"] < heavy["before"]["count"] - 900
