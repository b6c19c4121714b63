"""Kills under load (bench/reliability/kill.py with three kills: one at a random moment, one in
the middle of a snapshot write, one in the middle of a compaction): after each restart every
acknowledged write is there, every acknowledged remove is gone, and the index agrees with the
stored records. ``python -m bench.reliability.kill`` runs the long version."""

from __future__ import annotations

from pathlib import Path

from bench.reliability import kill


def test_kills_under_load_lose_nothing(tmp_path: Path) -> None:
    report = kill.run(tmp_path, kills=3, clients=3, preload=4000, seed=3, snapshot_every=300)
    assert [r.kind for r in report.rounds] == ["random", "snapshot", "compaction", "final"]
    assert report.acknowledged_writes > 30
    assert report.failures == []
    # The aimed kills landed where they aimed (a snapshot folder was being written; the
    # collection reported a compaction under way).
    assert report.rounds[1].hit and report.rounds[2].hit, report.rounds
    assert all(r.present > 1000 for r in report.rounds)
    assert report.rounds[-1].removed_checked > 0  # the compaction round removed records
    assert report.graph_lookups > 100
