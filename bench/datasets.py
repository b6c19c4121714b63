"""Synthetic image-embedding-like data for the benchmarks, with cached exact ground truth.

The vectors are meant to look like CLIP-style image embeddings rather than uniform noise:

* ~N/100 cluster centres (at least 10, at most 10,000) on the unit sphere, drawn with an
  anisotropic spectrum (real embedding spaces are not isotropic) plus a shared mean direction
  (embeddings sit in a cone: random pairs have a positive mean cosine);
* cluster sizes follow a power law (weight of the r-th cluster ~ r^-0.7);
* a point is ``normalize(centre + sigma_c * noise)`` where the noise has a decaying spectrum
  (variance of the j-th direction ~ 1/j) in a per-cluster random order of a shared orthonormal
  basis, so every cluster is locally low-dimensional (participation ratio ~ 30) but clusters
  are stretched along different directions; sigma_c varies per cluster (log-normal);
* the query set (default 1,000) is drawn from the same distribution with a separate random
  stream, so no query is a member of the base set.

Metadata, independent of the vectors (for filtered search at fixed selectivities):

* ``bucket``: int in [0, 1000), an exact shuffle of ``arange(N) % 1000``, so ``bucket < 100``
  selects exactly 10 %, ``bucket < 10`` 1 % and ``bucket < 1`` 0.1 % (when 1000 divides N);
* ``category``: one of 20 strings with a skewed distribution (realism only).

Ground truth: exact top-100 by cosine (= inner product, everything is unit-norm), unfiltered
and per selectivity, computed with float32 BLAS in chunks of the base set (bounded memory),
ties broken by the lower row index. Everything is cached under ``bench/data/`` (git-ignored)
keyed by N, seed, the number of queries and the generator version; the base vectors are an
``.npy`` memory map, so N = 1,000,000 (2 GB of float32) never needs a second copy in memory.

Run ``python bench/datasets.py --n 100000`` to generate (or check) a cached dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
NDIM = 512
DEFAULT_SEED = 42
DEFAULT_NQ = 1000
GT_K = 100
CHUNK = 50_000  # rows generated / scanned per step; part of the definition of the data (RNG streams)

DATA_DIR = Path(__file__).resolve().parent / "data"

# name -> threshold t: the filter is ``bucket < t``
SELECTIVITIES: dict[str, int] = {"10%": 100, "1%": 10, "0.1%": 1}

CATEGORIES = [
    "tops",
    "dresses",
    "shoes",
    "bags",
    "jewelry",
    "watches",
    "furniture",
    "lighting",
    "kitchen",
    "toys",
    "books",
    "posters",
    "phones",
    "laptops",
    "cameras",
    "bikes",
    "garden",
    "beauty",
    "sports",
    "pets",
]


def set_threads(n: int) -> None:
    """Limit BLAS / OpenMP threads of everything loaded so far (numpy, faiss)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl is in the bench extras
        pass


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------


@dataclass
class _Model:
    centres: np.ndarray  # [C, d] float32 unit
    weights: np.ndarray  # [C] float64, sums to 1
    sigma: np.ndarray  # [C] float32 noise scale per cluster
    perm: np.ndarray  # [C, d] int16: per-cluster order of the basis directions
    basis: np.ndarray  # [d, d] float32 orthonormal (columns)
    spectrum: np.ndarray  # [d] float32, sum of squares 1


def n_clusters_for(n: int) -> int:
    return int(min(10_000, max(10, n // 100)))


def _model(n: int, seed: int, ndim: int = NDIM) -> _Model:
    rng = np.random.default_rng([seed, 0])
    c = n_clusters_for(n)
    # shared orthonormal basis for the noise, and another one for the centres' spectrum
    basis = np.linalg.qr(rng.standard_normal((ndim, ndim)))[0].astype(np.float32)
    cbasis = np.linalg.qr(rng.standard_normal((ndim, ndim)))[0].astype(np.float32)
    j = np.arange(1, ndim + 1, dtype=np.float64)
    cspec = j**-0.25
    cspec /= np.sqrt((cspec**2).sum())
    mean_dir = rng.standard_normal(ndim)
    mean_dir /= np.linalg.norm(mean_dir)
    g = rng.standard_normal((c, ndim)) * cspec
    centres = g @ cbasis.T.astype(np.float64)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres += 0.6 * mean_dir  # the cone: mean pairwise cosine of centres ~0.25
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ranks = rng.permutation(c) + 1
    weights = ranks.astype(np.float64) ** -0.7
    weights /= weights.sum()
    sigma = (0.9 * np.exp(0.25 * rng.standard_normal(c))).astype(np.float32)
    spectrum = j**-0.5
    spectrum /= np.sqrt((spectrum**2).sum())
    perm = np.argsort(rng.random((c, ndim)), axis=1).astype(np.int16)
    return _Model(
        centres=centres.astype(np.float32),
        weights=weights,
        sigma=sigma,
        perm=perm,
        basis=basis,
        spectrum=spectrum.astype(np.float32),
    )


def _sample(model: _Model, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m, d = len(labels), model.basis.shape[0]
    z = rng.standard_normal((m, d), dtype=np.float32)
    z *= model.spectrum[model.perm[labels]]  # per-cluster order of the decaying spectrum
    z *= model.sigma[labels, None]
    x = z @ model.basis.T  # into the shared basis
    x += model.centres[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)


def generate_into(out: np.ndarray, seed: int, stream: int, model: _Model) -> np.ndarray:
    """Fill ``out`` [m, d] chunk by chunk; returns the cluster labels."""
    m = out.shape[0]
    rng = np.random.default_rng([seed, stream])
    labels = rng.choice(len(model.weights), size=m, p=model.weights).astype(np.int32)
    for ci, a in enumerate(range(0, m, CHUNK)):
        b = min(m, a + CHUNK)
        out[a:b] = _sample(model, labels[a:b], np.random.default_rng([seed, stream, ci]))
    return labels


def generate(n: int, seed: int = DEFAULT_SEED, nq: int = DEFAULT_NQ) -> tuple[np.ndarray, np.ndarray]:
    """In-memory (base, queries) without caching; for small N (tests)."""
    model = _model(n, seed)
    base = np.empty((n, NDIM), np.float32)
    generate_into(base, seed, 1, model)
    queries = np.empty((nq, NDIM), np.float32)
    generate_into(queries, seed, 2, model)
    return base, queries


def make_metadata(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket int32 [n] in [0, 1000), category codes uint8 [n] into CATEGORIES)."""
    rng = np.random.default_rng([seed, 3])
    bucket = rng.permutation(np.arange(n, dtype=np.int32) % 1000).astype(np.int32)
    p = np.arange(1, len(CATEGORIES) + 1, dtype=np.float64) ** -0.8
    p /= p.sum()
    category = rng.choice(len(CATEGORIES), size=n, p=p).astype(np.uint8)
    return bucket, category


# --------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------


def _lexsort_rows(s: np.ndarray, i: np.ndarray) -> np.ndarray:
    out = np.empty(s.shape, np.int64)
    for r in range(s.shape[0]):
        out[r] = np.lexsort((i[r], -s[r]))
    return out


def exact_topk(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    masks: dict[str, np.ndarray | None],
    chunk: int = CHUNK,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact top-k by inner product for several row masks at once, one pass over ``base``.

    Returns name -> (ids int64 [nq, k] padded with -1, scores float32 [nq, k] padded with -inf).
    """
    nq = queries.shape[0]
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best = {name: (np.full((nq, 0), -np.inf, np.float32), np.full((nq, 0), -1, np.int64)) for name in masks}
    n = base.shape[0]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        block = np.asarray(base[a:b], dtype=np.float32)
        scores = q @ block.T  # [nq, b-a] float32 BLAS
        for name, mask in masks.items():
            ids = np.arange(a, b, dtype=np.int64)
            s = scores
            if mask is not None:
                sel = np.flatnonzero(mask[a:b])
                if sel.size == 0:
                    continue
                ids = ids[sel]
                s = scores[:, sel]
            # pre-select top-k of the block before merging (cheap)
            if s.shape[1] > k:
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]
                s = np.take_along_axis(s, part, axis=1)
                ids_b = ids[part]
            else:
                ids_b = np.broadcast_to(ids, s.shape)
            bs, bi = best[name]
            cat_s = np.concatenate([bs, s], axis=1)
            cat_i = np.concatenate([bi, ids_b], axis=1)
            kk = min(k, cat_s.shape[1])
            if cat_s.shape[1] > kk:
                part = np.argpartition(-cat_s, kk - 1, axis=1)[:, :kk]
                cat_s = np.take_along_axis(cat_s, part, axis=1)
                cat_i = np.take_along_axis(cat_i, part, axis=1)
            best[name] = (cat_s, cat_i)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (s, i) in best.items():
        order = _lexsort_rows(s, i)
        s = np.take_along_axis(s, order, axis=1)
        i = np.take_along_axis(i, order, axis=1)
        if s.shape[1] < k:  # fewer allowed rows than k
            pad = k - s.shape[1]
            s = np.concatenate([s, np.full((nq, pad), -np.inf, np.float32)], axis=1)
            i = np.concatenate([i, np.full((nq, pad), -1, np.int64)], axis=1)
        out[name] = (i.astype(np.int64), s.astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------
# the cached dataset
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    n: int
    seed: int
    base: np.ndarray  # [n, 512] float32, unit norm (np.memmap when loaded from the cache)
    queries: np.ndarray  # [nq, 512] float32, unit norm
    bucket: np.ndarray  # [n] int32 in [0, 1000)
    category: np.ndarray  # [n] uint8 codes into CATEGORIES
    gt: dict[str, np.ndarray] = field(default_factory=dict)  # "all" / "10%" / ... -> ids [nq, 100]
    gt_scores: dict[str, np.ndarray] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def ndim(self) -> int:
        return int(self.base.shape[1])

    def mask(self, selectivity: str) -> np.ndarray:
        return self.bucket < SELECTIVITIES[selectivity]

    def filter_threshold(self, selectivity: str) -> int:
        return SELECTIVITIES[selectivity]

    def category_names(self) -> np.ndarray:
        return np.asarray(CATEGORIES, dtype=object)[self.category]


def dataset_folder(n: int, seed: int, nq: int, data_dir: Path = DATA_DIR) -> Path:
    return data_dir / f"v{GENERATOR_VERSION}_n{n}_s{seed}_q{nq}"


def load_dataset(
    n: int,
    seed: int = DEFAULT_SEED,
    nq: int = DEFAULT_NQ,
    data_dir: Path = DATA_DIR,
    threads: int = 2,
    verbose: bool = True,
) -> Dataset:
    """Load the cached dataset, generating whatever is missing (vectors, metadata, ground truth)."""
    set_threads(threads)
    folder = dataset_folder(n, seed, nq, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "complete.json"

    def log(msg: str) -> None:
        if verbose:
            print(f"[data n={n} seed={seed}] {msg}", flush=True)

    if not done.exists():
        t0 = time.perf_counter()
        model = _model(n, seed)
        tmp = folder / "base.npy.tmp"
        base_w = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, NDIM))
        generate_into(base_w, seed, 1, model)
        base_w.flush()
        del base_w
        os.replace(tmp, folder / "base.npy")
        queries = np.empty((nq, NDIM), np.float32)
        generate_into(queries, seed, 2, model)
        np.save(folder / "queries.npy", queries)
        bucket, category = make_metadata(n, seed)
        np.save(folder / "bucket.npy", bucket)
        np.save(folder / "category.npy", category)
        log(f"generated {n} x {NDIM} vectors + {nq} queries in {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
        base_r = np.load(folder / "base.npy", mmap_mode="r")
        masks: dict[str, np.ndarray | None] = {"all": None}
        for name, t in SELECTIVITIES.items():
            masks[name] = bucket < t
        gt = exact_topk(base_r, queries, GT_K, masks)
        for name, (ids, scores) in gt.items():
            np.save(folder / f"gt_{_fname(name)}_ids.npy", ids)
            np.save(folder / f"gt_{_fname(name)}_scores.npy", scores)
        del base_r
        log(f"exact ground truth (top-{GT_K}, {len(masks)} masks) in {time.perf_counter() - t0:.1f}s")
        done.write_text(
            json.dumps({"n": n, "seed": seed, "nq": nq, "ndim": NDIM, "version": GENERATOR_VERSION, "gt_k": GT_K})
        )
    ds = Dataset(
        n=n,
        seed=seed,
        base=np.load(folder / "base.npy", mmap_mode="r"),
        queries=np.load(folder / "queries.npy"),
        bucket=np.load(folder / "bucket.npy"),
        category=np.load(folder / "category.npy"),
        folder=folder,
    )
    for name in ["all", *SELECTIVITIES]:
        ds.gt[name] = np.load(folder / f"gt_{_fname(name)}_ids.npy")
        ds.gt_scores[name] = np.load(folder / f"gt_{_fname(name)}_scores.npy")
    return ds


def _fname(name: str) -> str:
    return name.replace("%", "pct").replace(".", "_")


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:, :k] ∩ truth[:, :k]| / |truth[:, :k] valid| (truth may be -1 padded)."""
    hits = 0
    total = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        tv = t[t >= 0]
        if tv.size == 0:
            continue
        hits += np.intersect1d(f[f >= 0], tv).size
        total += tv.size
    return hits / total if total else float("nan")


def describe(ds: Dataset, sample: int = 2000) -> dict[str, float]:
    """A few statistics that tell whether the data looks like embeddings (printed by the CLI)."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(ds.n, size=min(sample, ds.n), replace=False))
    x = np.asarray(ds.base[idx])
    g = x @ x.T
    off = g[~np.eye(len(idx), dtype=bool)]
    s = ds.gt_scores["all"]
    # local intrinsic dimensionality (MLE, Levina-Bickel) from the query kNN distances
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s[:, :20].astype(np.float64)))
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:] + 1e-12), axis=1)
    return {
        "mean_cos_random_pairs": float(off.mean()),
        "mean_cos_query_nn1": float(s[:, 0].mean()),
        "mean_cos_query_nn10": float(s[:, 9].mean()),
        "mean_cos_query_nn100": float(s[:, 99].mean()),
        "lid_mle_k20_median": float(np.median(lid)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, action="append", required=True)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--nq", type=int, default=DEFAULT_NQ)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for n in args.n:
        ds = load_dataset(n, args.seed, args.nq, threads=args.threads)
        print(json.dumps({"n": n, "folder": str(ds.folder), **describe(ds)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
