"""Adapters with one common shape for every engine the benchmark compares.

Every adapter has:

* ``build(vectors, bucket, category) -> seconds``: index the rows; row ``i`` has id ``i``
  (vectors are float32 unit-norm [n, 512]; metadata is used only by engines that filter);
* ``set_param(p)``: the search-time knob of the sweep (HNSW ``ef``, IVF ``nprobes``, ...);
* ``search_one(q, k) -> ids [k]`` (int64, -1 padded): one query, one call, one thread, the way
  an application calls it; ``search_batch(Q, k) -> ids [nq, k]`` where the library has a batch
  call (``batch`` is True), on ``BATCH_THREADS`` threads;
* ``set_filter(threshold, mask)``: for adapters with ``filtered = True``; afterwards
  ``search_one`` only returns rows with ``bucket < threshold`` (``None`` clears the filter);
* ``memory_bytes() -> int | None``: the library's own count of what it holds (or an estimate
  from its data structures, see each adapter), ``disk_bytes()`` for engines that persist;
* ``close()``: drop everything.

Libraries are imported lazily, so a worker process only needs the one it runs.

Build parameters (the same for every HNSW): M / connectivity = 16, efConstruction /
expansion_add = 200 (faiss' own default efConstruction is 40; we set 200 explicitly).
"""

from __future__ import annotations

import abc
import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

M = 16
EF_CONSTRUCTION = 200
BATCH_THREADS = 2
BUILD_THREADS = 2

ADD_BATCH = 50_000  # rows per add call for engines with a bulk path


def dir_size(path: Path | str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _pad(ids: np.ndarray, k: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).ravel()[:k]
    if ids.size < k:
        ids = np.concatenate([ids, np.full(k - ids.size, -1, np.int64)])
    return ids


class Peer(abc.ABC):
    name = "peer"
    param_name = "ef"
    batch = True
    filtered = False
    index_note = ""

    @abc.abstractmethod
    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        """vectors float32 [n, d]; bucket int [n]; category str (object) [n]. Returns seconds."""

    def set_param(self, p: Any) -> None:
        self.param = p

    def set_filter(self, threshold: int | None, mask: np.ndarray | None) -> None:
        raise TypeError(f"{self.name} has no filtered search (filtered = False)")

    @abc.abstractmethod
    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        """Ids of the k nearest to one query."""

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Ids [nq, k] of the k nearest to each query (engines with `batch = True`)."""
        raise TypeError(f"{self.name} has no batch search (batch = False)")

    def memory_bytes(self) -> int | None:
        return None

    def disk_bytes(self) -> int | None:
        return None

    def single_thread(self) -> None:
        """Called before single-query timing (optional hook)."""
        return None

    def batch_threads(self) -> None:
        """Called before batched timing (optional hook)."""
        return None

    def close(self) -> None:
        gc.collect()


# --------------------------------------------------------------------------------------------
# faiss
# --------------------------------------------------------------------------------------------


class FaissHNSW(Peer):
    """faiss ``IndexHNSWFlat(d, 16, METRIC_INNER_PRODUCT)``, efConstruction 200 (set explicitly).

    Filtering (``set_filter``) has two modes: ``"bitmap"`` passes ``IDSelectorBitmap`` through
    ``SearchParametersHNSW(sel=..., efSearch=ef)`` (the graph search skips rejected ids);
    ``"postfilter"`` searches ``k * f`` unfiltered with ``efSearch = max(ef, k * f)`` and keeps
    the passing ones (``set_param(f)`` then sets the over-fetch factor).
    """

    name = "faiss-hnsw"

    def __init__(self) -> None:
        import faiss

        self.faiss = faiss
        self.index: Any = None
        self.param: Any = 64
        self.mode = "none"
        self.mask: np.ndarray | None = None
        self._bits: np.ndarray | None = None
        self._params: Any = None

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        faiss = self.faiss
        faiss.omp_set_num_threads(BUILD_THREADS)
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.index = index
        return time.perf_counter() - t0

    def set_param(self, p: Any) -> None:
        self.param = p
        if self.mode == "postfilter":
            return
        self.index.hnsw.efSearch = int(p)
        if self.mode == "bitmap":
            self._params = self.faiss.SearchParametersHNSW(sel=self._sel, efSearch=int(p))

    def set_filter(self, threshold: int | None, mask: np.ndarray | None, mode: str = "bitmap") -> None:
        if mask is None:
            self.mode, self.mask, self._bits, self._params = "none", None, None, None
            return
        self.mode = mode
        self.mask = mask
        if mode == "bitmap":
            self._bits = np.packbits(mask.astype(np.uint8), bitorder="little")
            self._sel = self.faiss.IDSelectorBitmap(len(mask), self.faiss.swig_ptr(self._bits))

    def single_thread(self) -> None:
        self.faiss.omp_set_num_threads(1)

    def batch_threads(self) -> None:
        self.faiss.omp_set_num_threads(BATCH_THREADS)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        x = q.reshape(1, -1)
        if self.mode == "bitmap":
            _, ids = self.index.search(x, k, params=self._params)
            return ids[0]
        if self.mode == "postfilter":
            kk = k * int(self.param)
            self.index.hnsw.efSearch = max(kk, 16)
            _, ids = self.index.search(x, kk)
            ids = ids[0]
            ids = ids[ids >= 0]
            assert self.mask is not None
            return _pad(ids[self.mask[ids]], k)
        _, ids = self.index.search(x, k)
        return ids[0]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        _, ids = self.index.search(queries, k)
        return ids

    def memory_bytes(self) -> int | None:
        """Estimate from faiss' own arrays: flat storage + neighbour lists + offsets + levels."""
        if self.index is None:
            return None
        h = self.index.hnsw
        return int(
            self.index.ntotal * self.index.d * 4 + h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
        )

    def close(self) -> None:
        self.index = None
        self._params = None
        self._bits = None
        super().close()


# --------------------------------------------------------------------------------------------
# hnswlib
# --------------------------------------------------------------------------------------------


class HnswLib(Peer):
    """hnswlib ``Index(space='ip')``, M=16, ef_construction=200."""

    name = "hnswlib"

    def __init__(self) -> None:
        import hnswlib

        self.hnswlib = hnswlib
        self.index: Any = None

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        n, d = vectors.shape
        t0 = time.perf_counter()
        index = self.hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=100)
        index.set_num_threads(BUILD_THREADS)
        index.add_items(vectors, np.arange(n), num_threads=BUILD_THREADS)
        self.index = index
        return time.perf_counter() - t0

    def set_param(self, p: Any) -> None:
        self.param = p
        self.index.set_ef(int(p))

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        return labels[0].astype(np.int64)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(queries, k=k, num_threads=BATCH_THREADS)
        return labels.astype(np.int64)

    def memory_bytes(self) -> int | None:
        """``index_file_size()``: vectors + level-0 links + labels + upper levels (its own count,
        without the per-element mutexes, ~40 B/element more in RAM)."""
        return int(self.index.index_file_size()) if self.index is not None else None

    def close(self) -> None:
        self.index = None
        super().close()


# --------------------------------------------------------------------------------------------
# usearch (the Python package, directly)
# --------------------------------------------------------------------------------------------


class USearch(Peer):
    """``usearch.index.Index(ndim, metric='cos', dtype=..., connectivity=16, expansion_add=200)``.

    No re-ranking: with dtype='i8' the distances (and so the ranking) come from the int8 copy.
    """

    def __init__(self, dtype: str = "f32") -> None:
        from usearch.index import Index

        self.Index = Index
        self.dtype = dtype
        self.name = f"usearch-{dtype}"
        self.index: Any = None
        self.threads = 1

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        n, d = vectors.shape
        t0 = time.perf_counter()
        index = self.Index(ndim=d, metric="cos", dtype=self.dtype, connectivity=M, expansion_add=EF_CONSTRUCTION)
        for a in range(0, n, ADD_BATCH):
            b = min(n, a + ADD_BATCH)
            index.add(np.arange(a, b, dtype=np.uint64), vectors[a:b], threads=BUILD_THREADS)
        self.index = index
        return time.perf_counter() - t0

    def set_param(self, p: Any) -> None:
        self.param = p
        self.index.expansion_search = int(p)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        m = self.index.search(q, k, threads=1)
        return _pad(m.keys.astype(np.int64), k)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        m = self.index.search(queries, k, threads=BATCH_THREADS)
        keys = np.asarray(m.keys).astype(np.int64)
        counts = np.asarray(m.counts)
        keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = -1
        return keys

    def memory_bytes(self) -> int | None:
        return int(self.index.memory_usage) if self.index is not None else None

    def close(self) -> None:
        self.index = None
        super().close()


# --------------------------------------------------------------------------------------------
# exact brute force (numpy)
# --------------------------------------------------------------------------------------------


def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first."""
    if scores.shape[-1] <= k:
        order = np.argsort(-scores, axis=-1, kind="stable")
        return order
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    sub = np.take_along_axis(scores, part, axis=-1)
    return np.take_along_axis(part, np.argsort(-sub, axis=-1, kind="stable"), axis=-1)


class Exact(Peer):
    """Exact search: one float32 matmul (OpenBLAS) over the contiguous matrix, then top-k.

    Filtered (``set_filter``): exact *pre-filtered* search over just the allowed rows, gathered
    once per selectivity into their own contiguous matrix outside the timing, as a database with
    a precomputed partition would.
    """

    name = "exact"
    param_name = "-"

    def __init__(self) -> None:
        self.x: np.ndarray | None = None
        self.sub: np.ndarray | None = None
        self.sub_ids: np.ndarray | None = None
        self.filtered = True

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
        return time.perf_counter() - t0

    def set_filter(self, threshold: int | None, mask: np.ndarray | None) -> None:
        if mask is None:
            self.sub = self.sub_ids = None
            return
        assert self.x is not None
        self.sub_ids = np.flatnonzero(mask).astype(np.int64)
        self.sub = np.ascontiguousarray(self.x[self.sub_ids])

    def single_thread(self) -> None:
        from threadpoolctl import threadpool_limits

        self._limit = threadpool_limits(1)

    def batch_threads(self) -> None:
        from threadpoolctl import threadpool_limits

        self._limit = threadpool_limits(BATCH_THREADS)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.sub is not None:
            assert self.sub_ids is not None
            return _pad(self.sub_ids[_topk_rows(self.sub @ q, k)], k)
        assert self.x is not None
        return _topk_rows(self.x @ q, k).astype(np.int64)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        assert self.x is not None
        out = np.empty((queries.shape[0], k), np.int64)
        step = 100
        for a in range(0, queries.shape[0], step):
            out[a : a + step] = _topk_rows(queries[a : a + step] @ self.x.T, k)
        return out

    def memory_bytes(self) -> int | None:
        return int(self.x.nbytes) if self.x is not None else None

    def close(self) -> None:
        self.x = self.sub = self.sub_ids = None
        super().close()


# --------------------------------------------------------------------------------------------
# chromadb (embedded)
# --------------------------------------------------------------------------------------------


class Chroma(Peer):
    """chromadb ``PersistentClient`` (embedded, on disk), HNSW space cosine, max_neighbors 16,
    ef_construction 200, num_threads 2; ``where={"bucket": {"$lt": t}}`` for the filter.
    ``set_param`` changes ``ef_search`` with ``collection.modify(configuration=...)``."""

    name = "chromadb"
    filtered = True
    param_name = "ef_search"

    def __init__(self, folder: Path) -> None:
        import chromadb
        from chromadb.config import Settings

        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.settings = Settings(anonymized_telemetry=False)
        self.client = chromadb.PersistentClient(path=str(self.folder), settings=self.settings)
        self.col: Any = None
        self.where: dict[str, Any] | None = None
        self.param: Any = 100  # chromadb's default ef_search

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        n = vectors.shape[0]
        t0 = time.perf_counter()
        self.col = self.client.create_collection(
            "bench",
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "max_neighbors": M,
                    "ef_construction": EF_CONSTRUCTION,
                    "ef_search": 100,
                    "num_threads": BUILD_THREADS,
                }
            },
            embedding_function=None,
        )
        step = min(ADD_BATCH, int(self.client.get_max_batch_size()))
        for a in range(0, n, step):
            b = min(n, a + step)
            self.col.add(
                ids=[str(i) for i in range(a, b)],
                embeddings=vectors[a:b],
                metadatas=[{"bucket": int(bucket[i]), "category": str(category[i])} for i in range(a, b)],
            )
        self.batch_size = step
        return time.perf_counter() - t0

    def set_param(self, p: Any) -> None:
        """``modify`` persists ef_search but the loaded index keeps the old value, so the client
        is reopened (system cache cleared) after the change; not timed."""
        if p != self.param:
            import chromadb
            from chromadb.api.client import SharedSystemClient

            self.col.modify(configuration={"hnsw": {"ef_search": int(p)}})
            self.col = None
            self.client = None
            gc.collect()
            SharedSystemClient.clear_system_cache()
            self.client = chromadb.PersistentClient(path=str(self.folder), settings=self.settings)
            self.col = self.client.get_collection("bench", embedding_function=None)
            got = self.col.configuration["hnsw"]["ef_search"]
            assert got == int(p), f"chromadb ef_search is {got}, wanted {p}"
        self.param = p

    def set_filter(self, threshold: int | None, mask: np.ndarray | None) -> None:
        self.where = None if threshold is None else {"bucket": {"$lt": int(threshold)}}

    def _ids(self, res: dict[str, Any], k: int) -> list[np.ndarray]:
        return [_pad(np.array([int(s) for s in row], np.int64), k) for row in res["ids"]]

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        res = self.col.query(query_embeddings=q.reshape(1, -1), n_results=k, where=self.where, include=[])
        return self._ids(res, k)[0]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        res = self.col.query(query_embeddings=queries, n_results=k, where=self.where, include=[])
        return np.stack(self._ids(res, k))

    def disk_bytes(self) -> int | None:
        return dir_size(self.folder)

    def close(self) -> None:
        from chromadb.api.client import SharedSystemClient

        self.col = None
        self.client = None
        super().close()
        SharedSystemClient.clear_system_cache()
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# lancedb (embedded)
# --------------------------------------------------------------------------------------------


class Lance(Peer):
    """lancedb, embedded (local folder). Vector index: IVF_PQ, cosine, the documented defaults
    (num_partitions = sqrt(n), num_sub_vectors = d/16 = 32, 8 bits), plus a BTREE scalar index on
    ``bucket``. The sweep parameter is ``(nprobes, refine_factor)``: IVF_PQ alone ranks by PQ
    codes; ``refine_factor`` re-ranks ``k * refine_factor`` candidates with the stored vectors,
    the documented way to get high recall. Filter: ``.where("bucket < t", prefilter=True)``.
    """

    name = "lancedb"
    filtered = True
    param_name = "nprobes/refine"
    batch = False

    def __init__(self, folder: Path, index_type: str = "IVF_PQ") -> None:
        import lancedb

        self.lancedb = lancedb
        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.db = lancedb.connect(str(self.folder))
        self.tbl: Any = None
        self.where: str | None = None
        self.index_type = index_type
        self.param: Any = (20, 10)

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        import pyarrow as pa
        from lancedb.index import BTree, HnswSq, IvfPq

        n, d = vectors.shape
        t0 = time.perf_counter()
        cats = pa.array(np.asarray(category, dtype=object))

        def batch(a: int, b: int) -> pa.Table:
            flat = pa.array(np.ascontiguousarray(vectors[a:b]).ravel(), type=pa.float32())
            return pa.table(
                {
                    "id": pa.array(np.arange(a, b, dtype=np.int64)),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, d),
                    "bucket": pa.array(bucket[a:b].astype(np.int32)),
                    "category": cats[a:b],
                }
            )

        self.tbl = self.db.create_table("bench", data=batch(0, min(n, ADD_BATCH)))
        for a in range(ADD_BATCH, n, ADD_BATCH):
            self.tbl.add(batch(a, min(n, a + ADD_BATCH)))
        self.ingest_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        if self.index_type == "IVF_PQ":
            self.tbl.create_index("vector", config=IvfPq(distance_type="cosine"))
        else:
            self.tbl.create_index("vector", config=HnswSq(distance_type="cosine", m=M, ef_construction=EF_CONSTRUCTION))
        self.tbl.create_index("bucket", config=BTree())
        self.index_s = time.perf_counter() - t1
        self.index_note = (
            f"{self.index_type} (cosine, defaults: num_partitions=sqrt(n), num_sub_vectors=d/16) "
            f"+ BTREE on bucket; ingest {self.ingest_s:.1f}s + index {self.index_s:.1f}s"
        )
        return time.perf_counter() - t0

    def set_filter(self, threshold: int | None, mask: np.ndarray | None) -> None:
        self.where = None if threshold is None else f"bucket < {int(threshold)}"

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        nprobes, refine = self.param
        s = self.tbl.search(q, vector_column_name="vector").distance_type("cosine").limit(k)
        s = s.nprobes(int(nprobes)).select(["id", "_distance"])
        if refine:
            s = s.refine_factor(int(refine))
        if self.where is not None:
            s = s.where(self.where, prefilter=True)
        ids = s.to_arrow()["id"].to_numpy()
        return _pad(ids, k)

    def disk_bytes(self) -> int | None:
        return dir_size(self.folder)

    def close(self) -> None:
        self.tbl = None
        self.db = None
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Lookalike (the engine under test), in process
# --------------------------------------------------------------------------------------------


def lookalike_available() -> bool:
    try:
        import lookalike  # noqa: F401
    except Exception:
        return False
    return True


class Lookalike(Peer):
    """Lookalike in process: ``Engine(path).create_collection(type="vectors", ndim=512,
    metric="cos", precision=..., connectivity=16, expansion_add=200,
    fields_to_index=["bucket", "category"])``; ``add_vectors`` in batches of 50,000 with the
    metadata (so the build time includes the field indexes); search by ``search_vectors`` with
    ``ef``; rows map back through ``result.keys`` (key i is row i in a fresh collection).
    The filter is ``{"bucket": {"$lt": t}}``. Exact f32 re-ranking is the engine's default."""

    filtered = True

    def __init__(self, folder: Path, precision: str = "i8") -> None:
        import lookalike

        self.lookalike = lookalike
        self.precision = precision
        self.name = f"lookalike-{precision}"
        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.engine: Any = lookalike.Engine(self.folder)
        self.col: Any = None
        self.filter: dict[str, Any] | None = None
        self.param: Any = 64
        self.threads: dict[str, int] = {}  # passed as threads= where search_vectors accepts it
        self._has_threads: bool | None = None

    def build(self, vectors: np.ndarray, bucket: np.ndarray, category: np.ndarray) -> float:
        n, d = vectors.shape
        t0 = time.perf_counter()
        self.col = self.engine.create_collection(
            "bench",
            type="vectors",
            ndim=d,
            metric="cos",
            precision=self.precision,
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
            fields_to_index=["bucket", "category"],
        )
        for a in range(0, n, ADD_BATCH):
            b = min(n, a + ADD_BATCH)
            meta = [{"bucket": int(bucket[i]), "category": str(category[i])} for i in range(a, b)]
            self.col.add_vectors([str(i) for i in range(a, b)], np.ascontiguousarray(vectors[a:b]), metadata=meta)
        return time.perf_counter() - t0

    def set_filter(self, threshold: int | None, mask: np.ndarray | None) -> None:
        self.filter = None if threshold is None else {"bucket": {"$lt": int(threshold)}}

    @staticmethod
    def _keys(result: Any, k: int) -> np.ndarray:
        keys = np.asarray(result.keys).astype(np.int64)
        if keys.ndim == 1:
            keys = keys[None, :]
        counts = np.asarray(result.counts).reshape(-1)
        keys = keys[:, :k]
        keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = -1
        if keys.shape[1] < k:
            keys = np.concatenate([keys, np.full((keys.shape[0], k - keys.shape[1]), -1, np.int64)], axis=1)
        return keys

    def _set_threads(self, n: int) -> None:
        if self._has_threads is None:
            import inspect

            self._has_threads = "threads" in inspect.signature(self.col.search_vectors).parameters
        self.threads = {"threads": n} if self._has_threads else {}

    def single_thread(self) -> None:
        self._set_threads(1)

    def batch_threads(self) -> None:
        self._set_threads(BATCH_THREADS)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        r = self.col.search_vectors(q.reshape(1, -1), limit=k, filter=self.filter, ef=int(self.param), **self.threads)
        return self._keys(r, k)[0]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        r = self.col.search_vectors(queries, limit=k, filter=self.filter, ef=int(self.param), **self.threads)
        return self._keys(r, k)

    def memory_bytes(self) -> int | None:
        return int(self.col.memory_usage()) if self.col is not None else None

    def disk_bytes(self) -> int | None:
        return dir_size(self.folder)

    def close(self) -> None:
        self.col = None
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)


def versions() -> dict[str, str]:
    """Versions of everything the bench may load (without importing the heavy ones if absent)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for pkg in [
        "numpy", "faiss-cpu", "hnswlib", "usearch", "chromadb", "lancedb", "pylance", "pyarrow",
        "threadpoolctl", "psutil", "pytest-benchmark", "lookalike",
    ]:  # fmt: skip
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
