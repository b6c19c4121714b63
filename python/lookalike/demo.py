"""`python -m lookalike.demo [DATA_DIR]`: builds a small demo collection and runs example queries.

The vectors are synthetic, clustered like image embeddings, with shop-like metadata, so the
demo needs no models or downloads. Image collection types and the HTTP server build on this.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from lookalike.engine import Engine

CATEGORIES = ("kitchen", "bath", "garden", "office", "bedroom")


def build(path: Path, n: int = 20_000, ndim: int = 128) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, ndim)).astype(np.float32)
    labels = rng.integers(0, 200, n)
    vectors = centres[labels] + 0.4 * rng.standard_normal((n, ndim)).astype(np.float32)
    with Engine(path) as engine:
        if "demo" in engine.list_collections():
            engine.drop_collection("demo")
        col = engine.create_collection(
            "demo", ndim=ndim, precision="i8", fields_to_index=["category", "price"], product_id_field="product_id"
        )
        metadata = [
            {
                "category": CATEGORIES[int(label) % len(CATEGORIES)],
                "price": round(float(rng.uniform(5, 500)), 2),
                "product_id": f"p{i // 4}",
            }
            for i, label in enumerate(labels)
        ]
        started = time.perf_counter()
        for start in range(0, n, 5000):
            col.add_vectors(
                [f"img{i}" for i in range(start, min(n, start + 5000))],
                vectors[start : start + 5000],
                metadata[start : start + 5000],
            )
        print(
            f"indexed {len(col)} records in {time.perf_counter() - started:.1f} s "
            f"({col.memory_usage() / 2**20:.1f} MiB in memory, SIMD: {col.stats()['simd']})"
        )
        examples = [
            ("by _id", dict(id="img42", limit=5)),
            (
                "by _id, kitchen under 100",
                dict(id="img42", limit=5, filter={"category": "kitchen", "price": {"$lt": 100}}),
            ),
            ("by _id, grouped by product", dict(id="img42", limit=3, group_by="product_id", group_size=2)),
        ]
        for title, query in examples:
            started = time.perf_counter()
            hits = col.search(fields=["category", "price", "product_id"], **query)  # type: ignore[arg-type]
            took = (time.perf_counter() - started) * 1000
            print(f"\nsearch {title} ({took:.2f} ms):")
            for hit in hits:
                print(
                    f"  {hit['_id']:>9}  distance {hit['distance']:.4f}  {hit.get('category')}  "
                    f"{hit.get('price')}  {hit.get('product_id')}"
                )
    print(f"\nThe collection is in {path}; open it with lookalike.Engine({str(path)!r}).collection('demo').")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "./data")
    build(path)


if __name__ == "__main__":
    main()
