"""From records with images to vectors: fetch or read the bytes, decode, preprocess, embed.

Per-record failures (no image, bad base64, not an image, too many pixels, a fetch error) come
back as errors for that record; the rest of the batch goes on. Decoding and preprocessing run
in a thread pool (Pillow releases the GIL) while the model embeds the previous chunk, so an
ingest runs close to the bare model's throughput.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike import images
from lookalike.batching import MicroBatcher
from lookalike.errors import InternalError, InvalidRecordError, InvalidVectorError, LookalikeError
from lookalike.sdk.types import CollectionType, SupportsMultiVector

__all__ = ["RecordError", "InsertResult", "Embedded", "Embedder", "IMAGE_FIELDS"]

#: Record fields that carry an image.
IMAGE_FIELDS = ("_url", "_base64", "_file")

Fetch = Callable[[str], bytes]


@dataclass(frozen=True)
class RecordError:
    """Why one record of a batch was not written."""

    position: int
    id: str | None
    code: str
    message: str

    @classmethod
    def of(cls, position: int, id_: str | None, error: LookalikeError) -> RecordError:
        return cls(position, id_, error.code, str(error))


@dataclass(frozen=True)
class InsertResult:
    """What an insert wrote (``ids``, in input order) and what it skipped (``errors``)."""

    ids: list[str]
    errors: list[RecordError] = field(default_factory=list)


@dataclass(frozen=True)
class Embedded:
    """One image's vectors (``[views, width]``), its derived metadata and its bytes."""

    views: np.ndarray
    derived: dict[str, Any]
    data: bytes


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decoder_pool(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, threads), thread_name_prefix="lookalike-decode")
        return _pool


def has_image(record: Mapping[str, Any]) -> bool:
    return any(name in record for name in IMAGE_FIELDS)


class Embedder:
    """Turns image records into vectors for one collection type."""

    def __init__(
        self,
        type_: CollectionType,
        *,
        fetch: Fetch | None = None,
        allow_files: bool = True,
        max_pixels: int = images.MAX_PIXELS,
        max_bytes: int = images.MAX_BYTES,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self.type = type_
        self.batcher = batcher
        self.fetch = fetch
        self.allow_files = allow_files
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.views = type_.vectors_per_image if isinstance(type_, SupportsMultiVector) else 1
        binary = type_.metric == "hamming"
        self.width = type_.dimension // 8 if binary else type_.dimension
        self.dtype = np.dtype(np.uint8 if binary else np.float32)

    def _decode(self, record: Mapping[str, Any], fetch: Fetch | None) -> tuple[Any, dict[str, Any], bytes]:
        data = images.image_bytes(
            record, fetch=fetch or self.fetch, allow_files=self.allow_files, max_bytes=self.max_bytes
        )
        if data is None:
            raise InvalidRecordError("the record has no image (_url, _base64 or _file)")
        image = images.decode_image(
            data, max_pixels=self.max_pixels, max_bytes=self.max_bytes, min_side=self.type.input_side
        )
        derived = self.type.describe(image)
        unknown = set(derived) - set(self.type.derived_fields)
        if unknown:
            raise InternalError(f"type {self.type.name!r} describes undeclared fields {sorted(unknown)}")
        return self.type.preprocess(image), derived, data

    def _check(self, matrix: Any, rows: int, views: int) -> np.ndarray:
        array = np.asarray(matrix)
        expected = (rows, self.width) if views == 0 else (rows, views, self.width)
        if array.shape != expected:
            raise InternalError(
                f"type {self.type.name!r} returned vectors of shape {list(array.shape)}, expected {list(expected)}"
            )
        return np.ascontiguousarray(array, dtype=self.dtype)

    def _embed_chunk(self, prepared: list[Any]) -> np.ndarray:
        """``[n, views, width]`` for preprocessed images (through the micro-batcher when the
        engine shares one model call among concurrent requests)."""
        if self.batcher is not None:
            return self.batcher.submit(prepared)
        return self.embed_direct(prepared)

    def embed_direct(self, prepared: list[Any]) -> np.ndarray:
        if isinstance(self.type, SupportsMultiVector):
            return self._check(self.type.embed_views(prepared), len(prepared), self.views)
        return self._check(self.type.embed_images(prepared), len(prepared), 0)[:, None, :]

    def embed(
        self, records: Sequence[Mapping[str, Any]], *, fetch: Fetch | None = None
    ) -> list[Embedded | LookalikeError]:
        """One result per record, in order: its vectors, or the error that stopped it."""
        if not records:
            return []
        pool = _decoder_pool(self.type.context.threads)
        futures: list[Future[tuple[Any, dict[str, Any], bytes]]] = [
            pool.submit(self._decode, record, fetch) for record in records
        ]
        out: list[Embedded | LookalikeError] = []
        size = max(1, self.type.context.batch_size)
        for start in range(0, len(futures), size):
            chunk: list[tuple[int, tuple[Any, dict[str, Any], bytes]]] = []
            results: dict[int, Embedded | LookalikeError] = {}
            for offset, future in enumerate(futures[start : start + size]):
                try:
                    chunk.append((offset, future.result()))
                except LookalikeError as error:
                    results[offset] = error
            if chunk:
                matrix = self._embed_chunk([prepared for _, (prepared, _, _) in chunk])
                for row, (offset, (_, derived, data)) in enumerate(chunk):
                    views = matrix[row]
                    if self.dtype == np.float32 and not np.isfinite(views).all():
                        results[offset] = InvalidVectorError("the model produced NaN or infinity for this image")
                    elif self.dtype == np.float32 and self.type.metric == "cos" and not views.any(axis=1).all():
                        results[offset] = InvalidVectorError("the model produced a zero vector for this image")
                    else:
                        results[offset] = Embedded(views, derived, data)
            out.extend(results[offset] for offset in range(min(size, len(futures) - start)))
        return out

    def embed_query(self, record: Mapping[str, Any], *, fetch: Fetch | None = None) -> np.ndarray:
        """The query vector (view 0) of one image record; raises the record's error."""
        prepared, _, _ = self._decode(record, fetch)
        if self.batcher is not None:
            return np.asarray(self.batcher.submit([prepared])[0, 0])
        matrix = self._check(self.type.embed_images([prepared]), 1, 0)
        return np.asarray(matrix[0])
