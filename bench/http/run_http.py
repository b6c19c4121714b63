"""HTTP load benchmark: search by `_id`, search by image and insert over HTTP against a real
uvicorn process, at 100k records, with the in-process figures measured in the same run.

    .venv/bin/python bench/http/run_http.py [--records 100000] [--seconds 15] [--out bench/RESULTS.md]

The collection is a `generic` one (EfficientNet-Lite0, 1280-d) filled with 100k synthetic
clustered embeddings through the engine before the server starts (embedding 100k real photos
would take a quarter of an hour on 2 cores and measure the model, not the server); queries by
image run the real model on a real photo. The load generator runs on loopback on the same
machine: it takes CPU from the server, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.sections import replace_section  # noqa: E402
from live_server import TOKEN, free_port, start_server, stop_server  # noqa: E402
from loadgen import closed_loop, cycle, open_loop, request_bytes  # noqa: E402

import lookalike  # noqa: E402

MARK_START = "<!-- http:start -->"
MARK_END = "<!-- http:end -->"


def photos() -> list[Image.Image]:
    from skimage import data as skdata

    return [Image.fromarray(loader()).convert("RGB") for loader in (skdata.chelsea, skdata.coffee, skdata.rocket)]


def jpeg_b64(image: Image.Image, side: int = 320) -> str:
    small = image.copy()
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def load(data: Path, records: int, precision: str = "f32") -> None:
    rng = np.random.default_rng(0)
    centres = np.abs(rng.standard_normal((500, 1280))).astype(np.float32)
    started = time.perf_counter()
    with lookalike.Engine(data) as engine:
        col = engine.create_collection("bench", type="generic", fields_to_index=["shop"], precision=precision)
        for start in range(0, records, 20_000):
            n = min(20_000, records - start)
            labels = rng.integers(0, 500, n)
            vectors = centres[labels] + 0.5 * np.abs(rng.standard_normal((n, 1280))).astype(np.float32)
            ids = [f"r{i}" for i in range(start, start + n)]
            col.add_vectors(ids, vectors, [{"shop": f"s{i % 10}"} for i in range(start, start + n)])
        engine.create_collection("inserts", type="generic")
    print(f"loaded {records} records in {time.perf_counter() - started:.0f} s", flush=True)


def in_process(data: Path, records: int, queries: list[str], image: str) -> dict[str, Any]:
    with lookalike.Engine(data) as engine:
        col = engine.collection("bench")
        for id_ in queries[:50]:
            col.search(id=id_, limit=10)
        times = []
        for id_ in queries[:2000]:
            started = time.perf_counter()
            col.search(id=id_, limit=10)
            times.append(time.perf_counter() - started)
        image_times = []
        for _ in range(30):
            started = time.perf_counter()
            col.search(record={"_base64": image}, limit=10)
            image_times.append(time.perf_counter() - started)
        inserts = engine.collection("inserts")
        batch = [{"_id": f"x{i}", "_base64": image} for i in range(64)]
        inserts.add(batch)
        started = time.perf_counter()
        for round_ in range(4):
            inserts.add([{"_id": f"y{round_}-{i}", "_base64": image} for i in range(64)])
        insert_rate = 256 / (time.perf_counter() - started)
        engine.drop_collection("inserts")
        engine.create_collection("inserts", type="generic")
    ms = np.asarray(times) * 1000
    return {
        "id_p50_ms": float(np.percentile(ms, 50)),
        "id_p99_ms": float(np.percentile(ms, 99)),
        "id_qps": 1000 / float(np.mean(ms)),
        "image_p50_ms": float(np.percentile(np.asarray(image_times) * 1000, 50)),
        "insert_images_per_s": insert_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--precision", default="f32", choices=["f32", "f16", "i8"], help="graph precision")
    args = parser.parse_args()
    wall = time.perf_counter()
    rng = np.random.default_rng(1)
    queries = [f"r{int(i)}" for i in rng.integers(0, args.records, 5000)]
    image = jpeg_b64(photos()[0])
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        load(data, args.records, args.precision)
        local = in_process(data, args.records, queries, image)
        print("in-process:", json.dumps(local), flush=True)
        port = free_port()
        server = start_server(data, port)
        host = f"127.0.0.1:{port}"
        path = "/v1/collections/bench/search"
        by_id = [
            request_bytes("POST", path, host, json.dumps({"query": {"_id": q}, "limit": 10}).encode(), token=TOKEN)
            for q in queries
        ]
        by_image = [
            request_bytes(
                "POST", path, host, json.dumps({"query": {"_base64": image}, "limit": 10}).encode(), token=TOKEN
            )
        ]
        boundary = "lookalikebenchboundary"
        upload_body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + base64.b64decode(image)
            + (
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="options"\r\n\r\n'
                '{"limit": 10}'
                f"\r\n--{boundary}--\r\n"
            ).encode()
        )
        by_upload = [
            request_bytes(
                "POST",
                path + "/upload",
                host,
                upload_body,
                content_type=f"multipart/form-data; boundary={boundary}",
                token=TOKEN,
            )
        ]
        counter = iter(range(10**9))

        def insert_request() -> bytes:
            n = next(counter)
            body = {"records": [{"_id": f"h{n}-{i}", "_base64": image} for i in range(8)]}
            payload = json.dumps(body).encode()
            return request_bytes("POST", "/v1/collections/inserts/records", host, payload, token=TOKEN)

        try:
            closed_loop("127.0.0.1", port, cycle(by_id[:200]), 4, 3)  # warm up
            results = {
                "search by _id, open loop 200 req/s": open_loop("127.0.0.1", port, cycle(by_id), 200, args.seconds),
                "search by _id, 8 connections (saturation)": closed_loop(
                    "127.0.0.1", port, cycle(by_id), 8, args.seconds
                ),
                "search by image (base64 JPEG), 4 connections": closed_loop(
                    "127.0.0.1", port, cycle(by_image), 4, args.seconds
                ),
                "search by image (multipart upload), 4 connections": closed_loop(
                    "127.0.0.1", port, cycle(by_upload), 4, args.seconds
                ),
                "insert, 8 images per request, 4 connections": closed_loop(
                    "127.0.0.1", port, insert_request, 4, args.seconds
                ),
            }
        finally:
            stop_server(server)
    suffix = "" if args.precision == "f32" else f"-{args.precision}"
    mark_start, mark_end = MARK_START.replace("http", "http" + suffix), MARK_END.replace("http", "http" + suffix)
    lines = [
        mark_start,
        "## HTTP server under load" + ("" if args.precision == "f32" else f" ({args.precision} graph)"),
        "",
        f"Command: `.venv/bin/python bench/http/run_http.py --records {args.records} --seconds {args.seconds:g}"
        f" --precision {args.precision}`"
        f" ({time.perf_counter() - wall:.0f} s). Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}. One uvicorn process (uvloop, httptools), the "
        "load generator (bench/http/loadgen.py, asyncio, keep-alive) on the same machine over loopback.",
        f"Collection: `generic` (1280-d, {args.precision} graph + exact f32 re-rank), {args.records:,} records;"
        " k = 10.",
        "",
        "| scenario | requests | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        s = result.summary()
        lines.append(f"| {name} | {s['requests']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} |")
    insert = results["insert, 8 images per request, 4 connections"]
    lines += [
        "",
        f"Insert over HTTP: {insert.throughput * 8:.0f} images/s (decode + embed + index + commit).",
        "",
        "In-process, same data, same run (one thread):",
        "",
        f"- search by `_id`: p50 {local['id_p50_ms']:.2f} ms, p99 {local['id_p99_ms']:.2f} ms "
        f"({local['id_qps']:.0f} queries/s)",
        f"- search by image: p50 {local['image_p50_ms']:.1f} ms",
        f"- insert: {local['insert_images_per_s']:.0f} images/s",
        mark_end,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        replace_section(args.out, text, mark_start, mark_end)


if __name__ == "__main__":
    main()
