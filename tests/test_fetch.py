"""The safe URL fetcher against a local HTTP server: address checks (before any connection, on
every redirect hop, and on the address actually connected to), schemes and credentials,
redirects, size caps, timeouts, retries, per-host concurrency, and `_url` records through the
engine."""

from __future__ import annotations

import gzip
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

import lookalike.fetch as fetch_module
from lookalike import Engine
from lookalike.errors import ClosedError, ImageTooLargeError, InvalidConfigError, InvalidImageError
from lookalike.fetch import (
    BlockedAddressError,
    FetchError,
    FetchSettings,
    FetchTimeoutError,
    SafeFetcher,
    default_fetcher,
    is_public,
    resolve,
)
from lookalike.sdk.registry import Registry
from tests.plugin_fixtures import MeanColour


def png(rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = png()
LOCAL = dict(allow_private=True, backoff=0.01)  # the test server is on loopback


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 32

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.connections = 0
        self.paths: list[str] = []
        self.hosts: list[str] = []
        self.hits: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True

    def saw_nothing(self) -> bool:
        with self.lock:
            return self.connections == 0 and not self.paths


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        try:
            self.route()
        except OSError:
            pass  # the client went away (timeouts, size caps): expected

    def route(self) -> None:
        server = self.server
        parts = urlsplit(self.path)
        path = parts.path
        with server.lock:
            server.paths.append(path)
            server.hosts.append(self.headers.get("Host", ""))
            server.hits[path] += 1
            hits = server.hits[path]
        if path == "/image.png":
            self.send(200, IMAGE, {"Content-Type": "image/png"})
        elif path.startswith("/hops/"):
            left = int(path.rsplit("/", 1)[1])
            self.send(302, headers={"Location": f"/hops/{left - 1}" if left > 1 else "/image.png"})
        elif path == "/loop":
            self.send(302, headers={"Location": "/loop"})
        elif path == "/redirect":
            self.send(307, headers={"Location": parse_qs(parts.query)["to"][0]})
        elif path == "/missing":
            self.send(404, b"not here")
        elif path.startswith("/flaky/"):
            if hits == 1:
                self.send(503, headers={"Retry-After": "0"})
            else:
                self.send(200, IMAGE)
        elif path == "/busy":
            self.send(503, headers={"Retry-After": "120"})
        elif path == "/down":
            self.send(502)
        elif path == "/drip":  # a byte at a time, forever (until the client leaves or the test ends)
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not server.stop.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            while not server.stop.wait(0.05):
                self.wfile.write(b"X-Slow: y\r\n")
                self.wfile.flush()
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.flush()
            server.stop.wait(5)
        elif path == "/big":
            self.send(200, b"\0" * 5000)
        elif path == "/big-no-length":  # HTTP/1.0: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"\0" * 1000)
        elif path == "/gzip-image":
            self.send(200, gzip.compress(IMAGE), {"Content-Encoding": "gzip"})
        elif path == "/gzip-bomb":
            self.send(200, gzip.compress(b"\0" * 10_000_000), {"Content-Encoding": "gzip"})
        elif path == "/hold":
            with server.lock:
                server.active += 1
                server.max_active = max(server.max_active, server.active)
            server.stop.wait(0.3)
            with server.lock:
                server.active -= 1
            self.send(200, IMAGE)
        else:
            self.send(404)


def start_server() -> tuple[Server, threading.Thread]:
    server = Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def server() -> Iterator[Server]:
    made, thread = start_server()
    yield made
    made.stop.set()
    made.shutdown()
    made.server_close()
    thread.join(5)


@pytest.fixture
def other_server() -> Iterator[Server]:
    made, thread = start_server()
    yield made
    made.stop.set()
    made.shutdown()
    made.server_close()
    thread.join(5)


Make = Callable[..., SafeFetcher]


@pytest.fixture
def make() -> Iterator[Make]:
    """SafeFetcher(FetchSettings(**settings), **options), closed after the test."""
    made: list[SafeFetcher] = []

    def build(resolver: Any = None, address_allowed: Any = None, **settings: Any) -> SafeFetcher:
        fetcher = SafeFetcher(FetchSettings(**settings), resolver=resolver, address_allowed=address_allowed)
        made.append(fetcher)
        return fetcher

    yield build
    for fetcher in made:
        fetcher.close()


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> None:
    """getaddrinfo answers `names` itself and passes anything else on."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in names[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# --- address checks ---------------------------------------------------------------------------


def test_loopback_is_refused_by_default_before_any_connection(server: Server, make: Make) -> None:
    with pytest.raises(BlockedAddressError, match="127.0.0.1") as caught:
        make()(server.url("/image.png"))
    assert caught.value.code == "url_not_allowed"
    assert isinstance(caught.value, InvalidImageError)
    assert server.saw_nothing()


def test_loopback_is_fetched_when_private_addresses_are_allowed(server: Server, make: Make) -> None:
    assert make(allow_private=True)(server.url("/image.png")) == IMAGE
    assert server.paths == ["/image.png"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://[2002:a00:1::]/",  # 6to4 around 10.0.0.1
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/",  # 127.0.0.1, hex and short
        "http://localhost:8080/",
    ],
)
def test_non_public_addresses_are_refused(url: str, make: Make) -> None:
    with pytest.raises(BlockedAddressError):
        make().check(url)


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://[::1/"])
def test_malformed_hosts_are_refused(url: str, make: Make) -> None:
    with pytest.raises(FetchError):
        make().check(url)


def test_public_addresses_pass_the_check_without_connecting(make: Make) -> None:
    fetcher = make()
    assert fetcher.check("http://8.8.8.8/a.png") == [ipaddress.ip_address("8.8.8.8")]
    assert fetcher.check("https://[2001:4860:4860::8888]:8443/") == [ipaddress.ip_address("2001:4860:4860::8888")]
    assert fetcher.check("http://134744072/") == [ipaddress.ip_address("8.8.8.8")]  # decimal, normalised
    assert make(allow_private=True).check("http://127.0.0.1/") == [ipaddress.ip_address("127.0.0.1")]


def test_is_public() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert is_public(address), address
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "224.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert not is_public(address), address
    for address in ("fc00::1", "192.0.2.1", "198.18.0.1", "255.255.255.255", "64:ff9b::a00:1", "fe80::1%eth0"):
        assert not is_public(address), address


def test_a_host_is_refused_when_any_of_its_addresses_is_private(
    server: Server, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"mixed.test": ["93.184.216.34", "127.0.0.1"]})
    assert resolve("mixed.test", 80) == ["93.184.216.34", "127.0.0.1"]
    with pytest.raises(BlockedAddressError, match="'mixed.test' resolves to 127.0.0.1"):
        make()(f"http://mixed.test:{server.port}/image.png")
    assert server.saw_nothing()


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(server: Server, make: Make) -> None:
    """DNS rebinding: the first answer is checked and connected to; a later answer (private
    here) is never used for that connection."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    fetcher = make(resolver=resolver, address_allowed=lambda ip, port: ip.is_loopback, **LOCAL)
    assert fetcher(f"http://rebind.test:{server.port}/image.png") == IMAGE
    assert asked == ["rebind.test"]  # one lookup for check and connect
    assert server.hosts == [f"rebind.test:{server.port}"]  # the name is kept in the Host header
    with pytest.raises(BlockedAddressError, match="10.0.0.1"):  # the next connection asks again
        fetcher(f"http://rebind.test:{server.port}/image.png")
    assert server.connections == 1


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, ssl.SSLContext, list[str | None]]]:
    """An https server with a certificate for img.test only, the client context that trusts it,
    and the SNI names it was asked for."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=img.test",
         "-addext", "subjectAltName=DNS:img.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = sni
    made = Server()
    made.socket = context.wrap_socket(made.socket, server_side=True)
    thread = threading.Thread(target=made.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield made, ssl.create_default_context(cafile=str(cert)), names
    made.stop.set()
    made.shutdown()
    made.server_close()
    thread.join(5)


def test_https_keeps_the_host_name_for_sni_and_certificates(
    tls_server: tuple[Server, ssl.SSLContext, list[str | None]],
) -> None:
    server, client_context, names = tls_server
    fetcher = SafeFetcher(
        FetchSettings(allow_private=True, retries=2),
        resolver=lambda host, port: ["127.0.0.1"],
        ssl_context=client_context,
    )
    with fetcher:
        assert fetcher(f"https://img.test:{server.port}/image.png") == IMAGE
        assert names == ["img.test"] and server.hosts == [f"img.test:{server.port}"]
        with pytest.raises(FetchError, match="TLS"):  # same address, a name the certificate lacks
            fetcher(f"https://other.test:{server.port}/image.png")
        assert names == ["img.test", "other.test"]  # refused at the handshake, and not retried


# --- URL forms ---------------------------------------------------------------------------------


def never(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host}")


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.png", "data:image/png;base64,iVBORw0KGgo=", "gopher://example.com/",
     "javascript:alert(1)", "//example.com/a.png", "example.com/a.png"],
)  # fmt: skip
def test_only_http_and_https_are_fetched(url: str, make: Make) -> None:
    with pytest.raises(FetchError, match="only http and https") as caught:
        make(resolver=never)(url)
    assert caught.value.code == "fetch_failed"


@pytest.mark.parametrize(
    "url", ["http://user:secret@example.com/a.png", "https://token@example.com/", "http://:x@a.b/"]
)
def test_credentials_in_urls_are_refused(url: str, make: Make) -> None:
    with pytest.raises(FetchError, match="credentials"):
        make(resolver=never)(url)


@pytest.mark.parametrize("url", ["http:///a.png", "http://", "", "   ", "http://a.b:99999/", "http://" + "a" * 9000])
def test_urls_without_a_usable_host_are_refused(url: str, make: Make) -> None:
    with pytest.raises(FetchError):
        make(resolver=never)(url)


# --- redirects ---------------------------------------------------------------------------------


def test_redirects_are_followed(server: Server, make: Make) -> None:
    assert make(max_redirects=5, **LOCAL)(server.url("/hops/5")) == IMAGE
    assert server.paths == ["/hops/5", "/hops/4", "/hops/3", "/hops/2", "/hops/1", "/image.png"]


def test_too_many_redirects_fail(server: Server, make: Make) -> None:
    with pytest.raises(FetchError, match="more than 5 redirects"):
        make(max_redirects=5, **LOCAL)(server.url("/hops/6"))
    assert len(server.paths) == 6
    with pytest.raises(FetchError, match="more than 0 redirects"):
        make(max_redirects=0, **LOCAL)(server.url("/hops/1"))


def test_a_redirect_loop_fails(server: Server, make: Make) -> None:
    with pytest.raises(FetchError, match="redirect loop"):
        make(**LOCAL)(server.url("/loop"))


def test_each_redirect_hop_is_checked_again(server: Server, other_server: Server, make: Make) -> None:
    """An allowed host (here: only the first server's port) redirecting to a blocked one."""
    fetcher = make(address_allowed=lambda ip, port: port == server.port)
    assert fetcher(server.url("/image.png")) == IMAGE
    with pytest.raises(BlockedAddressError):
        fetcher(server.url(f"/redirect?to={other_server.url('/image.png')}"))
    assert server.paths == ["/image.png", "/redirect"]
    assert other_server.saw_nothing()


def test_a_redirect_to_a_name_that_resolves_privately_is_refused(
    server: Server, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"internal.test": ["10.0.0.7"]})
    fetcher = make(address_allowed=lambda ip, port: str(ip) == "127.0.0.1" or is_public(ip))
    with pytest.raises(BlockedAddressError, match="'internal.test' resolves to 10.0.0.7"):
        fetcher(server.url(f"/redirect?to=http://internal.test:{server.port}/image.png"))
    assert server.paths == ["/redirect"]


@pytest.mark.parametrize(
    ("target", "message"),
    [("file:///etc/passwd", "only http and https"), ("http://u:p@127.0.0.1/", "credentials")],
)
def test_redirects_to_other_schemes_or_credentials_are_refused(
    server: Server, make: Make, target: str, message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        make(**LOCAL)(server.url(f"/redirect?to={target}"))


# --- responses, sizes, timeouts, retries ------------------------------------------------------


def test_an_error_status_names_the_status(server: Server, make: Make) -> None:
    with pytest.raises(FetchError, match="HTTP 404") as caught:
        make(**LOCAL)(server.url("/missing"))
    assert caught.value.code == "fetch_failed"
    assert server.hits["/missing"] == 1  # not retried


def test_an_announced_oversized_body_is_refused_before_reading(server: Server, make: Make) -> None:
    with pytest.raises(ImageTooLargeError, match="has 5000 bytes"):
        make(max_bytes=1000, **LOCAL)(server.url("/big"))
    assert len(make(max_bytes=5000, **LOCAL)(server.url("/big"))) == 5000


def test_an_unannounced_oversized_body_is_cut_at_the_cap(server: Server, make: Make) -> None:
    with pytest.raises(ImageTooLargeError, match="larger than the limit of 1000"):
        make(max_bytes=1000, **LOCAL)(server.url("/big-no-length"))
    assert len(make(max_bytes=50_000, **LOCAL)(server.url("/big-no-length"))) == 50_000


def test_compressed_bodies_are_decoded_under_the_cap(server: Server, make: Make) -> None:
    assert make(**LOCAL)(server.url("/gzip-image")) == IMAGE
    with pytest.raises(ImageTooLargeError):  # 10 MB of zeros in 10 kB of gzip
        make(max_bytes=100_000, **LOCAL)(server.url("/gzip-bomb"))


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_a_slow_drip_is_cut_at_the_total_timeout(server: Server, make: Make, path: str) -> None:
    fetcher = make(read_timeout=2, total_timeout=0.5, **LOCAL)
    started = time.monotonic()
    with pytest.raises(FetchTimeoutError, match="total timeout of 0.5 s"):
        fetcher(server.url(path))
    assert time.monotonic() - started < 1.5
    assert server.hits[path] == 1  # no retry past the deadline


def test_a_stalled_read_times_out_and_is_retried(server: Server, make: Make) -> None:
    fetcher = make(read_timeout=0.2, total_timeout=5, retries=1, **LOCAL)
    started = time.monotonic()
    with pytest.raises(FetchError, match="read timeout"):
        fetcher(server.url("/stall"))
    assert time.monotonic() - started < 2
    assert server.hits["/stall"] == 2


def test_transient_statuses_are_retried(server: Server, make: Make) -> None:
    assert make(retries=2, **LOCAL)(server.url("/flaky/a")) == IMAGE
    assert server.hits["/flaky/a"] == 2
    with pytest.raises(FetchError, match="HTTP 503"):
        make(retries=0, **LOCAL)(server.url("/flaky/b"))
    with pytest.raises(FetchError, match=r"HTTP 502 \(after 3 attempts\)"):
        make(retries=2, **LOCAL)(server.url("/down"))
    assert server.hits["/down"] == 3


def test_a_long_retry_after_fails_at_once(server: Server, make: Make) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="retry after 120 s"):
        make(retries=2, max_retry_wait=1, **LOCAL)(server.url("/busy"))
    assert time.monotonic() - started < 1
    assert server.hits["/busy"] == 1


def test_connection_errors_are_retried(make: Make) -> None:
    with socket.socket() as placeholder:  # a port where nothing listens
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return resolve(host, port)

    with pytest.raises(FetchError, match=r"cannot connect.*\(after 3 attempts\)"):
        make(retries=2, resolver=resolver, **LOCAL)(f"http://127.0.0.1:{port}/")
    assert len(lookups) == 3


def test_requests_to_one_host_are_bounded(server: Server, make: Make) -> None:
    fetcher = make(per_host_concurrency=2, **LOCAL)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: fetcher(server.url("/hold")), range(8)))
    assert bodies == [IMAGE] * 8
    assert server.max_active == 2
    assert len(fetcher._slots) == 0  # nothing is kept per host once idle


def test_the_bound_is_per_host(server: Server, make: Make) -> None:
    fetcher = make(per_host_concurrency=1, **LOCAL)
    urls = [f"http://{host}:{server.port}/hold" for host in ("127.0.0.1", "localhost")] * 2
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(fetcher, urls)) == [IMAGE] * 4
    assert server.max_active == 2


# --- settings, lifecycle, the default fetcher ----------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{"read_timeout": 0}, {"total_timeout": -1}, {"max_bytes": 0}, {"retries": -1}, {"per_host_concurrency": 0},
     {"max_redirects": 1.5}, {"allow_private": "yes"}],
)  # fmt: skip
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfigError):
        FetchSettings(**settings)


def test_a_closed_fetcher_refuses_calls(server: Server) -> None:
    with SafeFetcher(FetchSettings(allow_private=True)) as fetcher:
        assert fetcher(server.url("/image.png")) == IMAGE
    assert fetcher.closed
    with pytest.raises(ClosedError):
        fetcher(server.url("/image.png"))


def test_the_default_fetcher_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "_default", None)
    monkeypatch.setenv("LOOKALIKE_ALLOW_PRIVATE_URLS", "yes")
    monkeypatch.setenv("LOOKALIKE_FETCH_TIMEOUT", "2.5")
    monkeypatch.setenv("LOOKALIKE_FETCH_MAX_BYTES", "12345")
    fetcher = default_fetcher()
    try:
        assert default_fetcher() is fetcher
        settings = fetcher.settings
        assert settings.allow_private and settings.max_bytes == 12345
        assert (settings.read_timeout, settings.total_timeout) == (2.5, 7.5)
        fetcher.close()
        replaced = default_fetcher()  # a closed one is replaced
        assert replaced is not fetcher
        replaced.close()
        monkeypatch.setenv("LOOKALIKE_FETCH_TIMEOUT", "soon")
        with pytest.raises(InvalidConfigError, match="LOOKALIKE_FETCH_TIMEOUT"):
            default_fetcher()
    finally:
        fetcher.close()
    monkeypatch.delenv("LOOKALIKE_FETCH_TIMEOUT")
    monkeypatch.setenv("LOOKALIKE_ALLOW_PRIVATE_URLS", "0")
    assert fetch_module.settings_from_env() == FetchSettings(max_bytes=12345)


# --- through the engine --------------------------------------------------------------------------


def test_url_records_through_the_engine(tmp_path: Path, server: Server, make: Make) -> None:
    registry = Registry()
    registry.register(MeanColour)
    with Engine(tmp_path / "data", registry=registry, fetch=make(allow_private=True), threads=1) as engine:
        col = engine.create_collection("c", type="meancolour")
        col.add([{"_id": "a", "_url": server.url("/image.png")}])
        assert col.get(["a"])[0]["_mean"] == [255.0, 0.0, 0.0]
        result = col.insert(
            [
                {"_id": "b", "_url": server.url("/hops/2")},
                {"_id": "c", "_url": server.url("/missing")},
                {"_id": "d", "_url": "file:///etc/passwd"},
            ]
        )
        assert result.ids == ["b"]
        assert [(e.id, e.code) for e in result.errors] == [("c", "fetch_failed"), ("d", "fetch_failed")]
        blocked = col.insert([{"_id": "e", "_url": server.url("/image.png")}], fetch=make())
        assert blocked.ids == [] and [(e.id, e.code) for e in blocked.errors] == [("e", "url_not_allowed")]
        assert len(col) == 2
