"""Micro-batching: many threads ask for embeddings, one model call serves them together.

Under concurrent load (a server with many small insert or search-by-image requests) each
request would otherwise run the model on a batch of one or two images, where the model is at
its least efficient. A :class:`MicroBatcher` queues the work of every caller; a single worker
thread takes up to ``max_batch`` items (waiting at most ``max_wait_s`` for more to arrive when
the queue is short), runs the model once, and hands each caller its rows.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Runs ``embed(items) -> array[len(items), ...]`` on batches gathered across threads."""

    def __init__(
        self, embed: Callable[[list[Any]], np.ndarray], *, max_batch: int = 32, max_wait_s: float = 0.002
    ) -> None:
        self._embed = embed
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self._queue: deque[tuple[list[Any], Future[np.ndarray]]] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="lookalike-microbatch", daemon=True)
        self._worker.start()
        #: Model calls made and items embedded (for tests and metrics).
        self.calls = 0
        self.items = 0

    def submit(self, items: Sequence[Any]) -> np.ndarray:
        """The rows for `items`, computed in a batch shared with other callers."""
        if not items:
            raise ValueError("nothing to embed")
        future: Future[np.ndarray] = Future()
        with self._condition:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            self._queue.append((list(items), future))
            self._condition.notify()
        return future.result()

    def _take(self) -> list[tuple[list[Any], Future[np.ndarray]]] | None:
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if self._closed and not self._queue:
                return None
            if sum(len(items) for items, _ in self._queue) < self.max_batch and self.max_wait_s > 0:
                self._condition.wait(self.max_wait_s)
            taken: list[tuple[list[Any], Future[np.ndarray]]] = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0][0]) <= self.max_batch):
                items, future = self._queue.popleft()
                taken.append((items, future))
                count += len(items)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch = [item for items, _ in taken for item in items]
            try:
                rows = np.asarray(self._embed(batch))
                if len(rows) != len(batch):
                    raise RuntimeError(f"embed returned {len(rows)} rows for {len(batch)} items")
            except BaseException as error:  # each caller gets the failure of the batch it was in
                for _, future in taken:
                    future.set_exception(error)
                continue
            self.calls += 1
            self.items += len(batch)
            start = 0
            for items, future in taken:
                future.set_result(rows[start : start + len(items)])
                start += len(items)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._worker.join(timeout=5)
