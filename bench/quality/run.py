"""Retrieval quality and ingest throughput of Lookalike's collection types, with baselines.

    .venv/bin/python bench/quality/run.py [--quick] [--out bench/RESULTS.md] [--only instance,text]

Suites (see ``suites.py``): instance retrieval on augmented views of real photos, Fashion-MNIST
class retrieval, near-duplicate matching, colour search, text search, ingest throughput. Prints
Markdown; with ``--out`` writes it between ``<!-- quality:start -->`` and ``<!-- quality:end -->``
(appending the section if the markers are absent). Seeded and deterministic (the timings aside).
All data is generated into a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lookalike  # noqa: E402
from bench.quality import suites  # noqa: E402
from bench.quality.report import Section, write_marked  # noqa: E402

SUITES = {
    "instance": suites.instance,
    "fashion": suites.fashion,
    "matching": suites.matching,
    "colours": suites.colours,
    "text": suites.text,
    "throughput": suites.throughput,
}
PACKAGES = (
    "lookalike", "lookalike-generic", "lookalike-products", "lookalike-colors", "lookalike-matching", "numpy",
    "pillow", "onnxruntime", "scikit-image", "scikit-learn",
)  # fmt: skip


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {usable} cores, {ram} RAM; Python {platform.python_version()}"


def versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def available_types() -> tuple[list[str], dict[str, str]]:
    from lookalike.sdk.registry import Registry

    registry = Registry.discover()
    return [n for n in suites.IMAGE_TYPES if n in registry.names()], dict(registry.errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data sets (about 2 minutes)")
    parser.add_argument("--out", type=Path, help="Markdown file to write the section into")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", help=f"comma-separated suites ({', '.join(SUITES)}); default all")
    args = parser.parse_args(argv)
    chosen = list(SUITES) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")

    started = time.perf_counter()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = loadavg()
    types, errors = available_types()
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/quality/run.py", *sys.argv[1:]])
    threads = os.environ.get("LOOKALIKE_MODEL_THREADS")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="lookalike-quality-") as folder:
        engine = lookalike.Engine(Path(folder) / "data")
        ctx = suites.Context(engine=engine, seed=args.seed, quick=args.quick, types=types, log=log)
        try:
            for name in chosen:
                log(f"[{time.perf_counter() - started:6.0f} s] {name} ...")
                suite_started = time.perf_counter()
                section = SUITES[name](ctx)
                section.title += f" ({time.perf_counter() - suite_started:.0f} s)"
                sections.append(section)
                print(section.markdown(), flush=True)
        finally:
            engine.close()
    wall = time.perf_counter() - started

    header = [
        "## Retrieval quality and ingest throughput" + (" (quick)" if args.quick else ""),
        "",
        "Written by `bench/quality/run.py` (all measurements and baselines from one run; see its docstring).",
        "",
        f"- Date: {date}; wall time {wall / 60:.1f} min",
        f"- Command: `{command}` (seed {args.seed})",
        f"- Machine: {machine()}; load average at start {load_start}, at end {loadavg()}",
        f"- Versions: {versions()}",
        f"- Collection types: {', '.join(types) or 'none'}"
        + (f"; failed to load: {errors}" if errors else "")
        + f"; `LOOKALIKE_MODEL_THREADS` {'= ' + threads if threads else 'unset (default threads)'}",
        "",
    ]
    text = "\n".join(header) + "\n" + "\n".join(section.markdown() for section in sections)
    print("\n".join(header), flush=True)
    if args.out is not None:
        write_marked(args.out, text)
        log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
