"""A real `lookalike serve` process (uvicorn) for the HTTP benchmarks: a free loopback port, the
server on a data folder with a known admin token, ready once `/health` answers, stopped by
SIGTERM to its process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

__all__ = ["TOKEN", "free_port", "start_server", "stop_server"]

TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    data: Path, port: int, *, stderr: IO[bytes] | None = None, timeout: float = 180.0
) -> subprocess.Popen[bytes]:
    """Starts the server (its own process group, logging warnings and errors to `stderr`,
    default: ours) and returns once `/health` answers 200."""
    env = dict(os.environ, LOOKALIKE_ADMIN_TOKEN=TOKEN, LOOKALIKE_ALLOW_PRIVATE_URLS="1", LOOKALIKE_LOG_LEVEL="warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "serve", "--data", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in sock.recv(200):
                    return process
        except OSError:
            time.sleep(0.5)
    stop_server(process, timeout=10)
    raise SystemExit("the server did not start")


def stop_server(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM to the server's process group, then waits for it (SIGKILL past `timeout`)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
