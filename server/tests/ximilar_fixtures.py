"""Fixtures of the Ximilar-compatibility tests: a real server process (``python -m lookalike
serve``, i.e. uvicorn) on a free port with its own data folder and collections, a tiny HTTP
server for ``_url`` images, and the unchanged ``ximilar-client`` SDK pointed at them.

One server serves every test that asks for it (model loading is slow); it starts on first use
and stops when the last module using it is done.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import lookalike
from lookalike.testing.fakes import fake_image
from lookalike_server.auth import TokenStore

ADMIN_TOKEN = "ximilar-tests-admin-token"

#: name -> create_collection arguments; created with the engine before the server starts.
COLLECTIONS: dict[str, dict[str, Any]] = {
    "photos": {"type": "generic", "fields_to_index": ["category"]},
    "products": {"type": "products", "fields_to_index": ["category"]},
    "colors": {"type": "colors", "fields_to_index": ["category"]},
    "matching": {"type": "matching", "fields_to_index": ["category"]},
    "vectors": {"type": "vectors", "ndim": 8, "metric": "cos", "fields_to_index": ["category"]},
    "grouped": {"type": "vectors", "ndim": 4, "metric": "cos", "product_id_field": "product_id"},
    "fashion": {"type": "generic"},
    "mutations": {"type": "generic"},
    "paging": {"type": "vectors", "ndim": 4, "metric": "l2sq"},
    "other": {"type": "vectors", "ndim": 4, "metric": "cos"},
}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode("ascii")


def picture(seed: int, size: int = 96) -> Image.Image:
    return fake_image(seed, size)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- images over HTTP -------------------------------------------------------------------------


class ImageServer:
    """Serves ``/<name>`` from an in-memory dict (for `_url` records)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                data = files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the server process ----------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data: Path
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, prefix: str) -> str:
        return f"{self.base}/{prefix.strip('/')}/"

    def client(
        self, klass: type[Any], collection: str | None, prefix: str | None = None, token: str = ADMIN_TOKEN
    ) -> Any:
        """An SDK client of `klass` on this server (its default prefix unless `prefix`)."""
        kwargs: dict[str, Any] = {"resource_name": None}
        if prefix is not None:
            kwargs["endpoint"] = self.endpoint(prefix)
        else:
            default = klass.__init__.__defaults__  # (collection_id, endpoint, resource_name)
            path = str(default[1]).split("api.ximilar.com/", 1)[1]
            kwargs["endpoint"] = self.endpoint(path)
        return klass(token, collection, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def prepare_data(data: Path, collections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Creates the collections and some per-collection tokens, before any server opens `data`."""
    data.mkdir(parents=True, exist_ok=True)
    with lookalike.Engine(data) as engine:
        for name, arguments in collections.items():
            engine.create_collection(name, **arguments)
    tokens = TokenStore(data / "server.db", ADMIN_TOKEN)
    try:
        out: dict[str, str] = {}
        for collection, scope in (("photos", "read"), ("photos", "write"), ("other", "write")):
            if collection in collections:
                out[f"{collection}:{scope}"] = tokens.create(collection, scope)[0]  # type: ignore[arg-type]
        return out
    finally:
        tokens.close()


def start_server(data: Path, env: dict[str, str] | None = None, timeout: float = 180.0) -> Server:
    port = free_port()
    log = data.parent / f"server-{port}.log"
    environment = dict(os.environ)
    environment.update(
        {
            "LOOKALIKE_ADMIN_TOKEN": ADMIN_TOKEN,
            "LOOKALIKE_ALLOW_PRIVATE_URLS": "1",
            "LOOKALIKE_LOG_LEVEL": "warning",
            "LOOKALIKE_MODEL_THREADS": "1",
        }
    )
    environment.update(env or {})
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookalike",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data",
                str(data),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = Server(process, port, data, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{server.output()}")
        time.sleep(0.2)


_shared: dict[str, Any] = {"users": 0}
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def ximilar_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server with the collections of :data:`COLLECTIONS`."""
    with _shared_lock:
        if _shared["users"] == 0:
            root = tmp_path_factory.mktemp("ximilar")
            data = root / "data"
            tokens = prepare_data(data, COLLECTIONS)
            server = start_server(data)
            server.tokens = tokens
            _shared["server"] = server
        _shared["users"] += 1
        server = _shared["server"]
    try:
        yield server
    finally:
        with _shared_lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared.pop("server").stop()


@pytest.fixture(scope="session")
def ximilar_images() -> Iterator[ImageServer]:
    served = ImageServer()
    try:
        yield served
    finally:
        served.close()


def post(
    server: Server, path: str, body: bytes | None = b"{}", headers: dict[str, str] | None = None
) -> httpx.Response:
    """A raw POST (httpx) with the admin token unless `headers` says otherwise."""
    sent = {"Authorization": f"Token {ADMIN_TOKEN}", "Content-Type": "application/json"}
    sent.update(headers or {})
    return httpx.post(f"{server.base}/{path.lstrip('/')}", content=body, headers=sent, timeout=120)
