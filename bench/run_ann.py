"""ANN benchmark: Lookalike against faiss, hnswlib, usearch, exact search, chromadb and lancedb.

    python bench/run_ann.py --n 100000 [--n 1000000] --out bench/RESULTS.md --engines all

For each N: generate (or load the cached) data set and exact ground truth (bench/datasets.py),
then for each engine, one at a time and each in its own worker process (so that its memory is
freed before the next one and the RSS delta of the build is clean):

* build, timed, on 2 threads; memory = RSS delta of the build (and the library's own count);
* unfiltered sweep of the search parameter (ef = 16 ... 512): recall@10 against the exact
  top-10, single-query QPS on 1 thread (queries one at a time in a Python loop, as an
  application calls it) and batched QPS on 2 threads (the whole query matrix in one call);
* filtered search at 10 %, 1 % and 0.1 % selectivity (``bucket < 100 / 10 / 1``): recall@10
  against the exact filtered top-10, single-query QPS.

Tables are printed as they come and written as Markdown into ``--out`` between
``<!-- ann:begin N=... -->`` and ``<!-- ann:end -->``, so a rerun replaces only its own section.
Engines whose package is not importable are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import datasets as D  # noqa: E402

K = 10
TARGET = 0.95

# group name -> (python module that must import, what it measures)
GROUPS: dict[str, str] = {
    "lookalike-i8": "lookalike",
    "lookalike-f16": "lookalike",
    "lookalike-f32": "lookalike",
    "faiss": "faiss",
    "hnswlib": "hnswlib",
    "usearch-f32": "usearch",
    "usearch-i8": "usearch",
    "exact": "numpy",
    "chromadb": "chromadb",
    "lancedb": "lancedb",
}
ALIASES: dict[str, list[str]] = {
    "all": [
        "lookalike-i8",
        "lookalike-f32",
        "faiss",
        "hnswlib",
        "usearch-f32",
        "usearch-i8",
        "exact",
        "chromadb",
        "lancedb",
    ],  # fmt: skip
    "peers": ["faiss", "hnswlib", "usearch-f32", "usearch-i8", "exact", "chromadb", "lancedb"],
    "lookalike": ["lookalike-i8", "lookalike-f32"],
    "usearch": ["usearch-f32", "usearch-i8"],
    "slow": ["chromadb", "lancedb"],
}
SLOW_GROUPS = {"chromadb", "lancedb"}
RESULTS_DIR = HERE / ".results"  # raw results per N (git-ignored), merged across partial reruns

DEFAULT_EF = "16,24,32,48,64,96,128,192,256,384,512"
DEFAULT_FILTERED_EF = "32,64,128,256,512,1024,2048,4096"
DEFAULT_CHROMA_EF = "16,32,64,128,256"
DEFAULT_CHROMA_FILTERED_EF = "16,64,256"
# lancedb IVF_PQ: nprobes / refine_factor
DEFAULT_LANCE = "20/0,20/10,20/20,20/50,20/100,80/100"
DEFAULT_LANCE_FILTERED = "20/10,20/50,20/100,80/100"
DEFAULT_POSTFILTER = "10,100,1000"

THREAD_ENV = {
    "OMP_NUM_THREADS": "2",
    "OPENBLAS_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "RAYON_NUM_THREADS": "2",
    "LANCE_CPU_THREADS": "2",
    "LANCE_IO_THREADS": "2",
    "TOKIO_WORKER_THREADS": "2",
    "ANONYMIZED_TELEMETRY": "False",
    "RUST_LOG": "error",
}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("?", "", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                f = set(line.split(":", 1)[1].split())
                flags = " ".join(x for x in ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"] if x in f)
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "flags": flags,
        "python": platform.python_version(),
    }


def parse_list(s: str) -> list[Any]:
    out: list[Any] = []
    for tok in s.split(","):
        tok = tok.strip()
        if not tok:
            continue
        if "/" in tok:
            a, b = tok.split("/")
            out.append((int(a), int(b)))
        else:
            out.append(int(tok))
    return out


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def fmt_param(p: Any) -> str:
    if isinstance(p, list | tuple):
        return "/".join(str(x) for x in p)
    return str(p)


def fmt_int(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:,.0f}"


def fmt_bytes_per(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f} B"


# --------------------------------------------------------------------------------------------
# the worker: one engine group, one process
# --------------------------------------------------------------------------------------------


def make_peer(group: str, workdir: Path) -> Any:
    from bench import peers as P

    if group.startswith("lookalike-"):
        return P.Lookalike(workdir / f"lookalike-{os.getpid()}", precision=group.split("-", 1)[1])
    if group == "faiss":
        return P.FaissHNSW()
    if group == "hnswlib":
        return P.HnswLib()
    if group.startswith("usearch-"):
        return P.USearch(group.split("-", 1)[1])
    if group == "exact":
        return P.Exact()
    if group == "chromadb":
        return P.Chroma(workdir / f"chroma-{os.getpid()}")
    if group == "lancedb":
        return P.Lance(workdir / f"lance-{os.getpid()}")
    raise SystemExit(f"unknown engine {group!r}")


def time_single(peer: Any, queries: np.ndarray, k: int, budget_s: float) -> tuple[np.ndarray, float, int]:
    """Queries one at a time; stops early (at a multiple of 16 queries) past ``budget_s``."""
    nq = queries.shape[0]
    out = np.full((nq, k), -1, np.int64)
    for i in range(min(10, nq)):  # warm-up, untimed
        peer.search_one(queries[i], k)
    done = 0
    t0 = time.perf_counter()
    for i in range(nq):
        r = peer.search_one(queries[i], k)
        out[i, : len(r)] = r[:k]
        done = i + 1
        if (done & 15) == 0 and time.perf_counter() - t0 > budget_s:
            break
    el = time.perf_counter() - t0
    return out[:done], done / el, done


def time_batch(peer: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    best = float("inf")
    ids = None
    for rep in range(3):
        t0 = time.perf_counter()
        ids = peer.search_batch(queries, k)
        el = time.perf_counter() - t0
        best = min(best, el)
        if el > 2.0 or rep == 2:
            break
    assert ids is not None
    return ids, queries.shape[0] / best


def row_line(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=False))


def worker(args: argparse.Namespace) -> int:
    group = args.worker
    D.set_threads(2)
    ds = D.load_dataset(args.n, args.seed, args.nq, data_dir=Path(args.data_dir), verbose=True)
    x = np.ascontiguousarray(ds.base, dtype=np.float32).copy()  # anonymous memory, not the map
    queries = np.ascontiguousarray(ds.queries[: args.nq])
    cats = ds.category_names()
    gc.collect()
    malloc_trim()
    workdir = Path(args.work_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "group": group,
        "n": args.n,
        "builds": [],
        "ann": [],
        "filtered": [],
        "notes": [],
    }

    def save() -> None:
        Path(args.result_file).write_text(json.dumps(result, indent=1, default=_json_default))

    peer = make_peer(group, workdir)
    name = peer.name
    print(f"\n=== {name}: build n={args.n:,} (load {loadavg()})", flush=True)
    rss0 = rss_bytes()
    build_s = peer.build(x, ds.bucket, cats)
    gc.collect()
    malloc_trim()
    rss1 = rss_bytes()
    lib = peer.memory_bytes()
    disk = peer.disk_bytes()
    b = {
        "engine": name,
        "build_s": build_s,
        "rss_delta": rss1 - rss0,
        "lib_bytes": lib,
        "disk_bytes": disk,
        "n": args.n,
        "note": peer.index_note,
        "load_before": loadavg(),
    }
    result["builds"].append(b)
    lib_s = f"{lib / args.n:,.0f} B/rec" if lib else "-"
    disk_s = f", disk {disk / args.n:,.0f} B/rec" if disk else ""
    print(
        f"    build {build_s:.1f}s, RSS delta {(rss1 - rss0) / args.n:,.0f} B/rec, library {lib_s}{disk_s}",
        flush=True,
    )
    if peer.index_note:
        print(f"    {peer.index_note}", flush=True)
    save()

    # --- unfiltered sweep
    if group == "exact":
        params: list[Any] = ["-"]
    elif group == "chromadb":
        params = parse_list(args.chroma_ef)
    elif group == "lancedb":
        params = parse_list(args.lance)
    else:
        params = parse_list(args.ef)
    widths = [18, 10, 10, 12, 12, 10]
    print(row_line(["engine", peer.param_name, "recall@10", "QPS 1 thr", "QPS batch", "b.recall"], widths))
    truth = ds.gt["all"]
    for p in params:
        peer.set_param(p)
        peer.single_thread()
        ids, qps1, done = time_single(peer, queries, K, args.time_budget)
        rec = D.recall_at_k(ids, truth[:done], K)
        row: dict[str, Any] = {
            "engine": name,
            "n": args.n,
            "param": p,
            "param_name": peer.param_name,
            "recall": rec,
            "qps1": qps1,
            "nq": done,
        }
        if peer.batch and not args.no_batch:
            peer.batch_threads()
            bids, qpsb = time_batch(peer, queries, K)
            row["qps_batch"] = qpsb
            row["recall_batch"] = D.recall_at_k(bids, truth[: queries.shape[0]], K)
        result["ann"].append(row)
        print(
            row_line(
                [
                    name,
                    fmt_param(p),
                    f"{rec:.4f}",
                    f"{qps1:,.0f}",
                    fmt_int(row.get("qps_batch")),
                    f"{row['recall_batch']:.4f}" if "recall_batch" in row else "-",
                ],
                widths,
            )
            + (f"   ({done} queries)" if done < queries.shape[0] else ""),
            flush=True,
        )
        save()

    # --- filtered
    if not args.no_filtered:
        modes: list[tuple[str, str, list[Any]]] = []
        if group == "faiss":
            modes = [
                ("faiss-hnsw+bitmap", "bitmap", parse_list(args.filtered_ef)),
                ("faiss-hnsw post-filter", "postfilter", parse_list(args.postfilter)),
            ]
        elif group == "exact":
            modes = [("exact pre-filtered", "", ["-"])]
        elif group == "chromadb":
            modes = [(name, "", parse_list(args.chroma_filtered_ef))]
        elif group == "lancedb":
            modes = [(name, "", parse_list(args.lance_filtered))]
        elif group.startswith("lookalike"):
            modes = [(name, "", parse_list(args.filtered_ef))]
        for label, mode, fparams in modes:
            pname = "f (over-fetch)" if mode == "postfilter" else peer.param_name
            print(f"--- filtered: {label}", flush=True)
            fw = [24, 6, 14, 10, 10, 8]
            print(row_line(["engine", "sel", pname, "recall@10", "QPS 1 thr", "queries"], fw))
            for sel, threshold in D.SELECTIVITIES.items():
                mask = ds.mask(sel)
                if mode:
                    peer.set_filter(threshold, mask, mode=mode)
                else:
                    peer.set_filter(threshold, mask)
                ftruth = ds.gt[sel]
                for p in fparams:
                    peer.set_param(p)
                    peer.single_thread()
                    ids, qps1, done = time_single(peer, queries, K, args.time_budget)
                    allowed = ids[ids >= 0]
                    violations = int((~mask[allowed]).sum()) if allowed.size else 0
                    rec = D.recall_at_k(ids, ftruth[:done], K)
                    frow = {
                        "engine": label,
                        "n": args.n,
                        "selectivity": sel,
                        "param": p,
                        "param_name": pname,
                        "recall": rec,
                        "qps1": qps1,
                        "nq": done,
                        "violations": violations,
                        "mean_hits": float((ids >= 0).sum(axis=1).mean()),
                    }
                    result["filtered"].append(frow)
                    pl = fmt_param(p)
                    if mode == "postfilter":
                        pl = f"{p} (ef={max(16, K * int(p))})"
                    print(
                        row_line([label, sel, pl, f"{rec:.4f}", f"{qps1:,.0f}", str(done)], fw)
                        + (f"  VIOLATIONS {violations}" if violations else ""),
                        flush=True,
                    )
                    save()
            peer.set_filter(None, None)
    if group.startswith("usearch"):
        result["notes"].append(f"{name}: usearch SIMD target {peer.index.hardware_acceleration}.")
    peer.close()
    save()
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------


def importable(python: str, module: str) -> bool:
    r = subprocess.run(
        [python, "-c", f"import {module}"],
        capture_output=True,
        cwd=str(ROOT),
        env={**os.environ, **THREAD_ENV},
    )
    return r.returncode == 0


def expand_engines(spec: str) -> list[str]:
    out: list[str] = []
    for tok in spec.split(","):
        tok = tok.strip()
        if not tok:
            continue
        names = ALIASES.get(tok, [tok])
        for nm in names:
            if nm not in GROUPS:
                raise SystemExit(f"unknown engine {nm!r}; known: {', '.join(GROUPS)} and {', '.join(ALIASES)}")
            if nm not in out:
                out.append(nm)
    return out


def best_at(rows: list[dict[str, Any]], key_qps: str, key_rec: str, target: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r.get(key_rec) is not None and r[key_rec] >= target and r.get(key_qps)]
    if not ok:
        return None
    return max(ok, key=lambda r: r[key_qps])


def _provenance(runs: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """One line per earlier invocation whose results are merged into this section."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    wall: dict[tuple[str, str, str], float] = {}
    for r in runs:
        rm = r.get("meta") or {}
        if rm.get("command") == meta["command"] and rm.get("date") == meta["date"]:
            continue
        key = (str(rm.get("date", "?")), str(rm.get("command", "?")), str(rm.get("load_start", "?")))
        groups.setdefault(key, []).append(r.get("group", "?"))
        wall[key] = wall.get(key, 0.0) + float(rm.get("wall_s") or 0.0)
    return [
        f"- Kept from an earlier run ({date}, load {load}, `{cmd}`): {', '.join(gs)}"
        + (f" ({wall[(date, cmd, load)] / 60:.1f} min for these)" if wall[(date, cmd, load)] else "")
        for (date, cmd, load), gs in groups.items()
    ]


def render_section(n: int, runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        f"<!-- ann:begin N={n} -->",
        f"## N = {n:,}",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM ({m['flags']}); Python {m['python']}",
        f"- Load average at start: {meta['load_start']} (the machine is shared; concurrent builds skew timings)",
        f"- Command: `{meta['command']}`",
        *_provenance(runs, meta),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- Data: {n:,} x 512 float32 clustered unit vectors (bench/datasets.py, seed {meta['seed']}), "
        f"{meta['nq']:,} queries not in the base set; recall@10 against the exact top-10 by cosine.",
        "- Build: HNSW M / connectivity 16, efConstruction / expansion_add 200 for every graph "
        "(faiss' default efConstruction would be 40), 2 threads. Single-query QPS: one query per call "
        "in a Python loop on 1 thread; batch QPS: the whole query matrix in one call on 2 threads "
        "(best of up to 3 calls). Memory: RSS delta over the build, per record, and the library's "
        "own count where it has one.",
        "",
    ]
    builds = [b for r in runs for b in r.get("builds", [])]
    ann = [a for r in runs for a in r.get("ann", [])]
    filt = [f for r in runs for f in r.get("filtered", [])]

    def label(engine: str, at: int) -> str:
        return f"{engine} (at N={at:,})" if at != n else engine

    lines += [
        f"### Summary: best QPS at recall@10 >= {TARGET}",
        "",
        "| engine | build (s) | memory / record (RSS delta) | memory / record (library) | "
        "param | recall@10 | single-query QPS (1 thread) | batch QPS (2 threads) at >= 0.95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in builds:
        e = b["engine"]
        rows = [a for a in ann if a["engine"] == e]
        best1 = best_at(rows, "qps1", "recall", TARGET)
        bestb = best_at(rows, "qps_batch", "recall_batch", TARGET)
        if best1 is None and rows:
            top = max(rows, key=lambda r: r["recall"])
            p_s, r_s, q_s = fmt_param(top["param"]), f"max {top['recall']:.4f}", "not reached"
        elif best1 is None:
            p_s, r_s, q_s = "-", "-", "-"
        else:
            p_s, r_s, q_s = fmt_param(best1["param"]), f"{best1['recall']:.4f}", fmt_int(best1["qps1"])
        lib = b.get("lib_bytes")
        lib_s = fmt_bytes_per(lib / b["n"]) if lib else "-"
        if b.get("disk_bytes"):
            lib_s += f" (disk {b['disk_bytes'] / b['n']:,.0f} B)"
        bq = (
            (
                fmt_int(bestb["qps_batch"])
                if bestb.get("param_name") == "-"
                else f"{fmt_int(bestb['qps_batch'])} ({bestb.get('param_name', 'ef')} {fmt_param(bestb['param'])})"
            )
            if bestb
            else ("-" if not any("qps_batch" in r for r in rows) else "not reached")
        )
        lines.append(
            md_row(
                [
                    label(e, b["n"]),
                    f"{b['build_s']:.1f}",
                    fmt_bytes_per(b["rss_delta"] / b["n"]),
                    lib_s,
                    p_s,
                    r_s,
                    q_s,
                    bq,
                ]
            )
        )
    lines.append("")

    fengines = list(dict.fromkeys(f["engine"] for f in filt))
    if fengines:
        sels = list(D.SELECTIVITIES)
        lines += [
            "### Filtered search: best single-query QPS at recall@10 >= 0.95 (bucket < t)",
            "",
            "Each cell: the best QPS among the settings reaching 0.95 (that setting, its recall); "
            "if none reaches it, the best recall seen and its QPS.",
            "",
            "| engine | " + " | ".join(sels) + " |",
            "|---|" + "---:|" * len(sels),
        ]
        for e in fengines:
            cells = []
            for s in sels:
                rows = [f for f in filt if f["engine"] == e and f["selectivity"] == s]
                if not rows:
                    cells.append("-")
                    continue
                bst = best_at(rows, "qps1", "recall", TARGET)
                if bst:
                    cells.append(f"{fmt_int(bst['qps1'])} ({fmt_param(bst['param'])}, {bst['recall']:.3f})")
                else:
                    top = max(rows, key=lambda r: (r["recall"], r["qps1"]))
                    cells.append(f"max recall {top['recall']:.3f} at {fmt_int(top['qps1'])} QPS")
            lab = label(e, next(f["n"] for f in filt if f["engine"] == e))
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += [
        "### Recall vs QPS, unfiltered",
        "",
        md_row(
            [
                "engine",
                "param",
                "recall@10",
                "single-query QPS (1 thread)",
                "batch QPS (2 threads)",
                "batch recall@10",
            ]
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a in ann:
        nq_s = f" ({a['nq']} q)" if a["nq"] < meta["nq"] else ""
        lines.append(
            md_row(
                [
                    label(a["engine"], a["n"]),
                    fmt_param(a["param"]),
                    f"{a['recall']:.4f}{nq_s}",
                    fmt_int(a["qps1"]),
                    fmt_int(a.get("qps_batch")),
                    format(a["recall_batch"], ".4f") if "recall_batch" in a else "-",
                ]
            )
        )
    lines.append("")
    if filt:
        lines += [
            "### Filtered search, all settings",
            "",
            "Recall@10 against the exact filtered top-10; `hits` = mean number of results returned "
            "(of 10); `q` = queries measured (fewer when the per-setting time budget ran out).",
            "",
            "| engine | selectivity | param | recall@10 | single-query QPS (1 thread) | hits | q |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for f in filt:
            p = fmt_param(f["param"])
            if f.get("param_name", "").startswith("f "):
                p = f"f={p} (ef={max(16, K * int(f['param']))})"
            elif f.get("param_name") and p != "-":
                p = f"{f['param_name']}={p}"
            viol = f" **{f['violations']} violations**" if f.get("violations") else ""
            lines.append(
                md_row(
                    [
                        label(f["engine"], f["n"]),
                        f["selectivity"],
                        p,
                        f"{f['recall']:.4f}{viol}",
                        fmt_int(f["qps1"]),
                        f"{f['mean_hits']:.1f}",
                        str(f["nq"]),
                    ]
                )
            )
        lines.append("")
    notes = list(meta.get("notes", []))
    for b in builds:
        if b.get("note"):
            notes.append(f"{b['engine']}: {b['note']}.")
    for r in runs:
        notes += r.get("notes", [])
    if notes:
        lines += ["### Notes", ""] + [f"- {x}" for x in dict.fromkeys(notes)] + [""]
    lines.append("<!-- ann:end -->")
    return "\n".join(lines)


HEADER = """# Lookalike ANN benchmark results

Written by `bench/run_ann.py` (see `bench/README.md`). Each `N = ...` section is replaced by a
rerun for the same N; everything else in this file is kept.
"""


def write_section(out: Path, n: int, text: str) -> None:
    body = out.read_text() if out.exists() else HEADER
    begin = f"<!-- ann:begin N={n} -->"
    end = "<!-- ann:end -->"
    i = body.find(begin)
    if i >= 0:
        j = body.find(end, i)
        j = len(body) if j < 0 else j + len(end)
        body = body[:i] + text + body[j:]
    else:
        body = body.rstrip("\n") + "\n\n" + text + "\n"
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(body)
    os.replace(tmp, out)


def find_lookalike_python(explicit: str | None) -> str | None:
    cands = [explicit] if explicit else [sys.executable, str(ROOT / ".venv" / "bin" / "python")]
    for c in cands:
        if c and Path(c).exists() and importable(c, "lookalike"):
            return c
    return None


def results_file(n: int, seed: int, nq: int) -> Path:
    return RESULTS_DIR / f"ann_n{n}_s{seed}_q{nq}.json"


def order_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(runs, key=lambda r: order.get(r.get("group", ""), len(order)))


def publish(
    out: Path,
    n: int,
    rpath: Path,
    kept: dict[str, dict[str, Any]],
    runs: list[dict[str, Any]],
    meta: dict[str, Any],
) -> list[dict[str, Any]]:
    """Save the raw results (kept earlier runs + this invocation's) and rewrite the section."""
    all_runs = order_runs([*kept.values(), *runs])
    rpath.parent.mkdir(parents=True, exist_ok=True)
    rpath.write_text(json.dumps({"runs": all_runs}, indent=1, default=_json_default))
    write_section(out, n, render_section(n, all_runs, meta))
    return all_runs


def render_only(args: argparse.Namespace) -> int:
    """Rewrite the sections from the kept raw results (bench/.results), running nothing."""
    from bench.peers import versions

    for n in args.n:
        rpath = results_file(n, args.seed, args.nq)
        runs = order_runs(json.loads(rpath.read_text())["runs"])
        newest = max((r.get("meta") or {} for r in runs), key=lambda m: str(m.get("date", "")))
        same = [r for r in runs if (r.get("meta") or {}).get("date") == newest.get("date")]
        wall = sum(float((r.get("meta") or {}).get("wall_s") or 0.0) for r in same)
        meta: dict[str, Any] = {
            "machine": machine(),
            "command": newest.get("command", "?"),
            "versions": newest.get("versions") or versions(),
            "seed": args.seed,
            "nq": args.nq,
            "date": newest.get("date", "?"),
            "load_start": newest.get("load_start", "?"),
            "notes": [
                f"Wall time of `{newest.get('command', '?')}`: {wall / 60:.1f} min "
                f"({', '.join(r['group'] for r in same)})."
            ],
        }
        write_section(Path(args.out), n, render_section(n, runs, meta))
        print(f"rewrote N={n} in {args.out} from {rpath}")
    return 0


def driver(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.peers import versions

    engines = expand_engines(args.engines)
    command = "python bench/run_ann.py " + " ".join(shlex.quote(a) for a in argv)
    vers = versions()
    out = Path(args.out)
    look_py = None
    if any(e.startswith("lookalike") for e in engines):
        look_py = find_lookalike_python(args.lookalike_python)
        if look_py is None:
            print("NOTE: lookalike is not importable; skipping the lookalike engines", flush=True)
        elif look_py != sys.executable:
            print(f"NOTE: running the lookalike engines with {look_py}", flush=True)
            r = subprocess.run(
                [look_py, "-c", "import importlib.metadata as m; print(m.version('lookalike'))"],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                vers["lookalike"] = r.stdout.strip()
    for n in args.n:
        t_start = time.perf_counter()
        D.load_dataset(n, args.seed, args.nq, data_dir=Path(args.data_dir))
        meta: dict[str, Any] = {
            "machine": machine(),
            "command": command,
            "versions": vers,
            "seed": args.seed,
            "nq": args.nq,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_start": loadavg(),
            "notes": [],
        }
        run_meta = {"date": meta["date"], "command": command, "load_start": meta["load_start"]}
        rpath = results_file(n, args.seed, args.nq)
        kept: dict[str, dict[str, Any]] = {}
        if args.merge and rpath.exists():
            try:
                kept = {r["group"]: r for r in json.loads(rpath.read_text())["runs"]}
            except (OSError, json.JSONDecodeError, KeyError):
                kept = {}
        kept = {g: r for g, r in kept.items() if g not in engines}
        if kept:
            print(f"NOTE: keeping earlier results of {', '.join(kept)} from {rpath}", flush=True)
        runs: list[dict[str, Any]] = []

        for g in engines:
            python = sys.executable
            if g.startswith("lookalike"):
                if look_py is None:
                    meta["notes"].append(f"{g}: skipped, `import lookalike` fails in this environment.")
                    continue
                python = look_py
            elif not importable(python, GROUPS[g]):
                msg = f"{g}: skipped, `import {GROUPS[g]}` fails in this environment."
                print("NOTE: " + msg, flush=True)
                meta["notes"].append(msg)
                continue
            n_eff = n
            slow_note = None
            if g in SLOW_GROUPS and n > args.slow_max_n:
                n_eff = args.slow_max_n
                slow_note = f"{g}: measured at N={n_eff:,} (--slow-max-n), not {n:,}: its full ingest is too slow here."
                D.load_dataset(n_eff, args.seed, args.nq, data_dir=Path(args.data_dir))
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
                rfile = tf.name
            cmd = [
                python,
                str(HERE / "run_ann.py"),
                "--worker",
                g,
                "--n",
                str(n_eff),
                "--result-file",
                rfile,
                *worker_args(args),
            ]
            env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, cwd=str(ROOT), timeout=args.engine_timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = -999
            el = time.perf_counter() - t0
            try:
                res = json.loads(Path(rfile).read_text())
            except (OSError, json.JSONDecodeError):
                res = {"group": g, "builds": [], "ann": [], "filtered": [], "notes": []}
            finally:
                Path(rfile).unlink(missing_ok=True)
            res["meta"] = {**run_meta, "wall_s": el, "versions": vers}
            if slow_note:
                res.setdefault("notes", []).append(slow_note)
            if rc != 0:
                why = "timed out" if rc == -999 else f"exited with {rc}"
                res.setdefault("notes", []).append(f"{g}: the worker {why} after {el:.0f}s; partial results.")
                print(f"NOTE: {g} {why}", flush=True)
            print(f"    [{g}: {el:.0f}s]", flush=True)
            runs.append(res)
            publish(out, n, rpath, kept, runs, meta)
        total = time.perf_counter() - t_start
        meta["notes"].append(
            f"Wall time of `{command}`: {total / 60:.1f} min ({', '.join(r['group'] for r in runs) or 'nothing run'})."
        )
        all_runs = publish(out, n, rpath, kept, runs, meta)
        print("\n" + render_section(n, all_runs, meta), flush=True)
    return 0


def worker_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--seed", str(args.seed), "--nq", str(args.nq), "--data-dir", args.data_dir,
        "--work-dir", args.work_dir, "--time-budget", str(args.time_budget), "--ef", args.ef,
        "--filtered-ef", args.filtered_ef, "--postfilter", args.postfilter,
        "--chroma-ef", args.chroma_ef, "--chroma-filtered-ef", args.chroma_filtered_ef,
        "--lance", args.lance, "--lance-filtered", args.lance_filtered,
    ]  # fmt: skip
    if args.no_filtered:
        out.append("--no-filtered")
    if args.no_batch:
        out.append("--no-batch")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, action="append", help="base set size; repeat for several")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--engines", default="all", help=f"comma list of {', '.join(GROUPS)} or {', '.join(ALIASES)}")
    ap.add_argument("--seed", type=int, default=D.DEFAULT_SEED)
    ap.add_argument("--nq", type=int, default=D.DEFAULT_NQ)
    ap.add_argument("--ef", default=DEFAULT_EF, help="HNSW ef sweep (unfiltered)")
    ap.add_argument("--filtered-ef", default=DEFAULT_FILTERED_EF, help="ef sweep for filtered HNSW search")
    ap.add_argument("--postfilter", default=DEFAULT_POSTFILTER, help="over-fetch factors f (k*f candidates)")
    ap.add_argument("--chroma-ef", default=DEFAULT_CHROMA_EF)
    ap.add_argument("--chroma-filtered-ef", default=DEFAULT_CHROMA_FILTERED_EF)
    ap.add_argument("--lance", default=DEFAULT_LANCE, help="lancedb nprobes/refine_factor sweep")
    ap.add_argument("--lance-filtered", default=DEFAULT_LANCE_FILTERED)
    ap.add_argument("--time-budget", type=float, default=20.0, help="seconds per sweep point (single-query loop)")
    ap.add_argument("--slow-max-n", type=int, default=100_000, help="largest N for chromadb / lancedb")
    ap.add_argument("--engine-timeout", type=float, default=3 * 3600.0, help="seconds per engine worker")
    ap.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="forget earlier results of engines not run now (default: keep them, from bench/.results/)",
    )
    ap.add_argument("--render-only", action="store_true", help="rewrite the sections from bench/.results, run nothing")
    ap.add_argument("--no-filtered", action="store_true")
    ap.add_argument("--no-batch", action="store_true")
    ap.add_argument("--lookalike-python", default=None, help="interpreter that imports lookalike")
    ap.add_argument("--data-dir", default=str(D.DATA_DIR))
    ap.add_argument("--work-dir", default=str(D.DATA_DIR / "work"), help="engine folders (deleted after)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.n:
        ap.error("--n is required")
    if args.worker:
        args.n = args.n[0]
        return worker(args)
    if args.render_only:
        return render_only(args)
    return driver(args, argv)


if __name__ == "__main__":
    sys.exit(main())
