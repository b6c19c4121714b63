"""A lean HTTP/1.1 load generator on asyncio streams (keep-alive, pre-encoded requests), so
the client costs little CPU next to the server on a small machine.

Two modes: closed loop (N connections, each sends its next request when the last answer
arrived: the saturation throughput) and open loop (requests start on a fixed schedule whatever
the server does, so a slow server shows up in the latency instead of lowering the rate).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Connection", "Result", "closed_loop", "open_loop", "request_bytes"]


def request_bytes(
    method: str, path: str, host: str, body: bytes = b"", content_type: str = "application/json", token: str = ""
) -> bytes:
    headers = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    if token:
        headers.append(f"Authorization: Token {token}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q)) * 1000 if self.latencies else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.count,
            "rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "errors": sum(n for status, n in self.statuses.items() if status >= 400),
        }


class Connection:
    """One keep-alive connection: `exchange` sends a pre-encoded request and reads the whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def exchange(self, payload: bytes) -> tuple[int, bytes]:
        """The status and the body of the answer to `payload`."""
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(payload)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value.strip())
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        body = b""
        if chunked:
            parts: list[bytes] = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append((await self.reader.readexactly(size + 2))[:size])
                if size == 0:
                    break
            body = b"".join(parts)
        elif length:
            body = await self.reader.readexactly(length)
        return status, body

    async def send(self, payload: bytes) -> int:
        return (await self.exchange(payload))[0]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _closed(host: str, port: int, requests: Callable[[], bytes], connections: int, seconds: float) -> Result:
    result = Result()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = Connection(host, port)
        await connection.open()
        try:
            while time.perf_counter() < deadline:
                payload = requests()
                started = time.perf_counter()
                status = await connection.send(payload)
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


async def _open(host: str, port: int, requests: Callable[[], bytes], rate: float, seconds: float) -> Result:
    result = Result()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(64):
        connection = Connection(host, port)
        await connection.open()
        pool.put_nowait(connection)
    tasks: list[asyncio.Task[None]] = []

    async def one(scheduled: float) -> None:
        connection = await pool.get()
        try:
            status = await connection.send(requests())
            # latency counts from the scheduled start: waiting for a connection is the server's fault too
            result.latencies.append(time.perf_counter() - scheduled)
            result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            pool.put_nowait(connection)

    started = time.perf_counter()
    for n in itertools.count():
        scheduled = started + n / rate
        if scheduled - started >= seconds:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    return result


def closed_loop(host: str, port: int, requests: Callable[[], bytes], connections: int, seconds: float) -> Result:
    return asyncio.run(_closed(host, port, requests, connections, seconds))


def open_loop(host: str, port: int, requests: Callable[[], bytes], rate: float, seconds: float) -> Result:
    return asyncio.run(_open(host, port, requests, rate, seconds))


def cycle(payloads: Sequence[bytes]) -> Callable[[], bytes]:
    iterator = itertools.cycle(payloads)
    return lambda: next(iterator)
