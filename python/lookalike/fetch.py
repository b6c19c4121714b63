"""The one safe fetcher for ``_url`` images: in-process, in the CLI and in the server alike.

:class:`SafeFetcher` is a thread-safe callable ``fetcher(url) -> bytes`` (pass it as
``Engine(fetch=SafeFetcher(...))``) that

- fetches only ``http`` and ``https`` URLs without credentials (``user:password@``);
- refuses a host when *any* address it resolves to is loopback, private, link-local, multicast,
  reserved, unspecified or otherwise not global (IPv4-mapped, 6to4, Teredo and NAT64 IPv6
  addresses are judged by the IPv4 address they carry), unless private addresses are allowed;
- connects to exactly the addresses it checked. The check lives in the HTTP stack's network
  backend (``connect_tcp``), which resolves the host once, checks every address and then opens
  the socket to one of those same addresses: there is no second DNS lookup for a rebinding
  attacker to answer differently, while the URL, the ``Host`` header, TLS SNI and certificate
  checks all keep the real host name;
- follows redirects by hand, at most ``max_redirects``, each hop checked again (its scheme,
  credentials and, at connect time, its addresses);
- streams the body and stops at ``max_bytes`` (an announced ``Content-Length`` over the cap is
  refused before reading; gzip and deflate bodies are decompressed with the cap applied to the
  output, so a compression bomb never inflates);
- bounds connect, read and total time: the total deadline cuts every socket read, so a server
  that drips bytes (in the headers or the body) cannot hold a worker past ``total_timeout``;
- retries connection errors, timeouts and HTTP 429/502/503/504 with a small exponential backoff,
  honouring ``Retry-After`` up to ``max_retry_wait`` (a server asking for a longer wait fails
  the fetch at once);
- runs at most ``per_host_concurrency`` requests to one host at a time;
- shares one connection pool (one :class:`httpx.Client`), sends no cookies and reads no proxy
  settings from the environment.

Every failure is a :class:`FetchError` (code ``fetch_failed``), a :class:`BlockedAddressError`
(``url_not_allowed``) or an :class:`~lookalike.errors.ImageTooLargeError`; all of them are
:class:`~lookalike.errors.InvalidImageError`, so the engine reports them per record.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import http.cookiejar
import ipaddress
import math
import os
import random
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from lookalike.errors import ClosedError, ImageTooLargeError, InvalidConfigError, InvalidImageError
from lookalike.images import MAX_BYTES

__all__ = [
    "FetchError",
    "FetchTimeoutError",
    "BlockedAddressError",
    "FetchSettings",
    "SafeFetcher",
    "AddressPolicy",
    "Resolver",
    "default_fetcher",
    "is_public",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses`` (IP strings); the default is :func:`resolve` (getaddrinfo).
Resolver = Callable[[str, int], Sequence[str]]
#: ``(address, port) -> allowed?``; the default allows public addresses (all with ``allow_private``).
AddressPolicy = Callable[[IPAddress, int], bool]

MAX_URL_LENGTH = 8192
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class FetchError(InvalidImageError):
    """The image at a URL could not be fetched (bad URL, network failure, HTTP error status)."""

    code = "fetch_failed"


class FetchTimeoutError(FetchError):
    """Fetching took longer than a timeout (connect, read, or the total deadline)."""


class _TotalTimeout(FetchTimeoutError):
    """The total deadline passed (raised deep in the HTTP stack; reworded by the fetcher)."""

    def __init__(self) -> None:
        super().__init__("the fetch took longer than its total timeout")


class BlockedAddressError(FetchError):
    """The URL's host is, or resolves to, an address that is not allowed (loopback, private, ...)."""

    code = "url_not_allowed"


@dataclass(frozen=True, kw_only=True)
class FetchSettings:
    """How a :class:`SafeFetcher` fetches. Times are in seconds."""

    #: Opening a TCP connection (and the TLS handshake), per attempt.
    connect_timeout: float = 5.0
    #: Waiting for any one read (or write) on the socket.
    read_timeout: float = 10.0
    #: The whole fetch: every redirect, retry, backoff and byte of the body.
    total_timeout: float = 30.0
    #: Bodies with more bytes (after decompression) are refused with ImageTooLargeError.
    max_bytes: int = MAX_BYTES
    max_redirects: int = 5
    #: Allow loopback, private, link-local and other non-global addresses (trusted networks only).
    allow_private: bool = False
    #: Requests to one host name at the same time, per fetcher.
    per_host_concurrency: int = 4
    #: Further attempts after a connection error, a timeout or HTTP 429/502/503/504.
    retries: int = 2
    #: The first backoff before a retry; it doubles with each retry (plus up to 25% jitter).
    backoff: float = 0.25
    #: The longest wait before a retry, Retry-After included; a longer Retry-After is not retried.
    max_retry_wait: float = 5.0
    user_agent: str = "lookalike-fetcher/0.1"

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
                raise InvalidConfigError(f"FetchSettings.{name} must be a positive number of seconds, got {value!r}")
        for name in ("backoff", "max_retry_wait"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
                raise InvalidConfigError(f"FetchSettings.{name} must be a number of seconds >= 0, got {value!r}")
        for name, least in (("max_bytes", 1), ("max_redirects", 0), ("per_host_concurrency", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidConfigError(f"FetchSettings.{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.allow_private, bool):
            raise InvalidConfigError(f"FetchSettings.allow_private must be a bool, got {self.allow_private!r}")
        if not isinstance(self.user_agent, str) or not self.user_agent.isprintable():
            raise InvalidConfigError("FetchSettings.user_agent must be a printable string")


# ---------------------------------------------------------------------------------------------
# Addresses


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo client, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str | IPAddress) -> bool:
    """Whether an IP address is globally routable: not loopback, private, link-local, multicast,
    reserved, unspecified, shared (CGNAT), documentation or any other special-purpose range.
    IPv6 addresses that carry an IPv4 address are judged by it as well."""
    ip = address if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) else _parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False  # a zone index: only meaningful on a local link
        inner = _embedded_ipv4(ip)
        if inner is not None and not is_public(inner):
            return False
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return True  # judged by its IPv4 address alone (NAT64 is how IPv6-only hosts reach IPv4)
    special = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
    return bool(ip.is_global and not special and not ip.is_reserved and not ip.is_unspecified)


def _parse_ip(address: str) -> IPAddress:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return ipaddress.ip_address(address.split("%", 1)[0])  # a zone index Python does not know


def resolve(host: str, port: int) -> list[str]:
    """Every address of `host` (IP strings, in getaddrinfo's order, without repeats). IP literals,
    including the decimal, hex and short forms the C library accepts (``2130706433``), come back
    normalised without a DNS query."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno == socket.EAI_AGAIN:  # a temporary resolver failure: worth a retry
            raise httpcore.ConnectError(f"cannot resolve host {host!r} now: {error.strerror}") from error
        raise FetchError(f"cannot resolve host {host!r}: {error.strerror}") from error
    except (UnicodeError, ValueError, OSError) as error:
        raise FetchError(f"cannot resolve host {host!r}: {error}") from error
    return list(dict.fromkeys(str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)))


# ---------------------------------------------------------------------------------------------
# The network backend: check the addresses, connect to them, enforce the total deadline.

_local = threading.local()


def _deadline() -> float | None:
    """The total deadline of the fetch running in this thread (time.monotonic), if any."""
    value: float | None = getattr(_local, "deadline", None)
    return value


def _bounded(timeout: float | None, deadline: float | None) -> tuple[float | None, bool]:
    """The timeout to use now, and whether the total deadline (not `timeout`) set it."""
    if deadline is None:
        return timeout, False
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TotalTimeout()
    if timeout is None or left < timeout:
        return left, True
    return timeout, False


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the calling fetch's total deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        bounded, by_deadline = _bounded(timeout, _deadline())
        try:
            return self._inner.read(max_bytes, bounded)
        except httpcore.ReadTimeout:
            if by_deadline:
                raise _TotalTimeout() from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        bounded, by_deadline = _bounded(timeout, _deadline())
        try:
            self._inner.write(buffer, bounded)
        except httpcore.WriteTimeout:
            if by_deadline:
                raise _TotalTimeout() from None
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded, by_deadline = _bounded(timeout, _deadline())
        try:
            return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))
        except httpcore.ConnectTimeout:
            if by_deadline:
                raise _TotalTimeout() from None
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves the host once, refuses it unless every address passes the policy, and connects
    to one of exactly those addresses (an IP literal: no second lookup)."""

    def __init__(self, resolver: Resolver, allowed: AddressPolicy) -> None:
        self._resolver = resolver
        self._allowed = allowed

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses of `host` (BlockedAddressError if any is not allowed)."""
        found: list[IPAddress] = []
        for address in self._resolver(host, port):
            try:
                ip = _parse_ip(str(address))
            except ValueError as error:
                raise FetchError(f"host {host!r} resolved to {address!r}, not an IP address") from error
            found.append(ip)
            if not self._allowed(ip, port):
                shown = f"{ip}" if host == str(address) else f"{host!r} resolves to {ip}, which"
                raise BlockedAddressError(
                    f"{shown} is not an allowed address: loopback, private, link-local, multicast and reserved "
                    "addresses are refused unless private URLs are allowed (LOOKALIKE_ALLOW_PRIVATE_URLS=1, "
                    "for trusted networks only)"
                )
        if not found:
            raise FetchError(f"host {host!r} has no address")
        return found

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.addresses(host, port)
        options = list(socket_options or ())
        connect_by = None if timeout is None else time.monotonic() + timeout
        failure: Exception | None = None
        for address in addresses:
            left = None if connect_by is None else max(connect_by - time.monotonic(), 0.001)
            bounded, by_deadline = _bounded(left, _deadline())
            try:
                stream = super().connect_tcp(str(address), port, bounded, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                if by_deadline and isinstance(error, httpcore.ConnectTimeout):
                    raise _TotalTimeout() from None
                failure = error
                continue
            return _DeadlineStream(stream)
        assert failure is not None
        raise failure


# ---------------------------------------------------------------------------------------------
# Per-host concurrency


class _HostSlots:
    """At most `limit` holders per host; a host's semaphore lives only while it is held or awaited."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[threading.Semaphore, list[int]]] = {}

    @contextlib.contextmanager
    def hold(self, host: str, deadline: float) -> Iterator[None]:
        with self._lock:
            entry = self._hosts.get(host)
            if entry is None:
                entry = self._hosts[host] = (threading.Semaphore(self._limit), [0])
            entry[1][0] += 1
        semaphore = entry[0]
        try:
            if not semaphore.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                raise FetchTimeoutError(f"waited too long for a free connection to {host}")
            try:
                yield
            finally:
                semaphore.release()
        finally:
            with self._lock:
                entry[1][0] -= 1
                if entry[1][0] == 0:
                    del self._hosts[host]

    def __len__(self) -> int:
        with self._lock:
            return len(self._hosts)


# ---------------------------------------------------------------------------------------------
# The fetcher


class _Transient(Exception):
    """A failure worth another attempt; `wait` is what the server asked for (Retry-After)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def _show(url: httpx.URL | str, limit: int = 200) -> str:
    text = str(url)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


class _Decoder:
    """Content-Encoding decoding with the size cap applied to the output."""

    def __init__(self, encoding: str) -> None:
        self._kind = encoding
        wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}[encoding]
        self._zlib = zlib.decompressobj(wbits)
        self._first = True

    def decode(self, chunk: bytes, room: int) -> bytes:
        """At most `room` + 1 bytes (one more than fits tells the caller the cap is passed)."""
        try:
            out = self._zlib.decompress(chunk, room + 1)
        except zlib.error:
            if not (self._first and self._kind == "deflate"):
                raise
            self._zlib = zlib.decompressobj(-15)  # "deflate" sent raw, without the zlib header
            out = self._zlib.decompress(chunk, room + 1)
        self._first = False
        return out

    def flush(self, room: int) -> bytes:
        if self._zlib.unconsumed_tail:
            return self._zlib.decompress(self._zlib.unconsumed_tail, room + 1)
        return self._zlib.flush(room + 1)


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a connection error, if that is what it is."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class SafeFetcher:
    """``fetcher(url) -> bytes``, safe for untrusted URLs and for many threads at once (see the
    module's rules). Close it (or use it as a context manager) to close its connections.

    `resolver` (``(host, port) -> IP strings``) replaces DNS resolution, and `address_allowed`
    (``(ip, port) -> bool``) replaces the address policy (default: public addresses only, any
    address with ``settings.allow_private``); both mainly for tests and special deployments.
    `ssl_context` replaces the default TLS settings (certifi's CAs, hostname checks): for
    example to trust a private CA.
    """

    def __init__(
        self,
        settings: FetchSettings | None = None,
        *,
        resolver: Resolver | None = None,
        address_allowed: AddressPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings if settings is not None else FetchSettings()
        s = self.settings
        if address_allowed is None:
            allow_private = s.allow_private

            def address_allowed(ip: IPAddress, port: int) -> bool:
                return allow_private or is_public(ip)

        self._backend = _CheckedBackend(resolver or resolve, address_allowed)
        self._slots = _HostSlots(s.per_host_concurrency)
        self._closed = False
        transport = httpx.HTTPTransport(trust_env=False)
        # httpx takes no network backend, so its transport gets a pool built with ours; the
        # transport only turns httpx requests into httpcore ones around this pool.
        if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("this httpx version's HTTPTransport has no connection pool to replace")
        transport._pool.close()
        transport._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(trust_env=False),
            max_connections=None,
            max_keepalive_connections=32,
            keepalive_expiry=30.0,
            network_backend=self._backend,
        )
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout, pool=s.total_timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=_no_cookies(),
            headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"},
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the pooled connections; later calls raise ClosedError."""
        self._closed = True
        self._client.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SafeFetcher({self.settings!r})"

    # -- checks --------------------------------------------------------------------------------

    def validate(self, url: str) -> httpx.URL:
        """The parsed URL if its form is acceptable (http or https, a host, no credentials);
        FetchError otherwise. Addresses are not looked at (see :meth:`check`)."""
        if not isinstance(url, str):
            raise FetchError(f"a URL must be a string, got {type(url).__name__}")
        text = url.strip()
        if len(text) > MAX_URL_LENGTH:
            raise FetchError(f"the URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parsed = httpx.URL(text)
        except (httpx.InvalidURL, TypeError, ValueError) as error:
            raise FetchError(f"{_show(text)} is not a valid URL ({error})") from error
        if parsed.scheme not in ("http", "https"):
            scheme = f"{parsed.scheme}:" if parsed.scheme else "a URL without a scheme"
            raise FetchError(f"only http and https URLs are fetched, not {scheme} ({_show(text, 60)})")
        if parsed.userinfo:
            raise FetchError("URLs with credentials (user:password@host) are not fetched")
        if not parsed.host:
            raise FetchError(f"the URL {_show(text)} has no host")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise FetchError(f"the URL {_show(text)} has the invalid port {parsed.port}")
        return parsed

    def check(self, url: str) -> list[IPAddress]:
        """The addresses `url`'s host resolves to, all allowed; FetchError or BlockedAddressError
        otherwise. Connects to nothing. (Fetching does the same check at connect time.)"""
        parsed = self.validate(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            return self._backend.addresses(parsed.raw_host.decode("ascii"), port)
        except httpcore.ConnectError as error:
            raise FetchError(str(error)) from error

    # -- fetching ------------------------------------------------------------------------------

    def __call__(self, url: str) -> bytes:
        """The body at `url`, after redirects; FetchError, BlockedAddressError or ImageTooLargeError."""
        if self._closed:
            raise ClosedError("the fetcher is closed")
        deadline = time.monotonic() + self.settings.total_timeout
        outer = _deadline()
        _local.deadline = deadline if outer is None else min(deadline, outer)
        try:
            return self._follow(self.validate(url), _local.deadline)
        except _TotalTimeout:
            raise FetchTimeoutError(
                f"fetching {_show(url)} took longer than the total timeout of {self.settings.total_timeout:g} s"
            ) from None
        finally:
            _local.deadline = outer

    def _follow(self, current: httpx.URL, deadline: float) -> bytes:
        seen = {str(current)}
        for _ in range(self.settings.max_redirects + 1):
            result = self._attempts(current, deadline)
            if isinstance(result, bytes):
                return result
            try:
                target = current.join(result)
            except (httpx.InvalidURL, TypeError, ValueError) as error:
                raise FetchError(f"{_show(current)} redirects to an invalid URL {_show(result)}") from error
            current = self.validate(str(target))
            if str(current) in seen:
                raise FetchError(f"redirect loop: {_show(current)} was already visited")
            seen.add(str(current))
        raise FetchError(f"more than {self.settings.max_redirects} redirects (the last to {_show(current)})")

    def _attempts(self, url: httpx.URL, deadline: float) -> bytes | str:
        """The body, or a redirect's Location; retries what is transient."""
        s = self.settings
        attempt = 0
        while True:
            try:
                with self._slots.hold(url.host, deadline):
                    return self._once(url)
            except _Transient as transient:
                attempt += 1
                if attempt > s.retries:
                    tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise FetchError(f"fetching {_show(url)} failed: {transient.reason}{tries}") from None
                if transient.wait is not None:
                    if transient.wait > s.max_retry_wait:
                        raise FetchError(
                            f"fetching {_show(url)} failed: {transient.reason}, and the server asks to retry after "
                            f"{transient.wait:g} s (more than {s.max_retry_wait:g} s)"
                        ) from None
                    wait = transient.wait
                else:
                    wait = min(s.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4), s.max_retry_wait)
                if time.monotonic() + wait >= deadline:
                    raise FetchTimeoutError(
                        f"fetching {_show(url)} failed: {transient.reason}, and no time is left to retry"
                    ) from None
                time.sleep(wait)

    def _once(self, url: httpx.URL) -> bytes | str:
        try:
            with self._client.stream("GET", url) as response:
                status = response.status_code
                if status in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{_show(url)} answered HTTP {status} (a redirect) without a Location")
                    return str(location)
                if status in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
                if not 200 <= status < 300:
                    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                    raise FetchError(f"{_show(url)} answered HTTP {status}{phrase}")
                return self._body(url, response)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            tls = _tls_failure(error)
            if tls is not None:  # a certificate or handshake refusal: the same next time
                raise FetchError(f"the TLS connection to {_show(url)} failed: {tls}") from error
            raise _Transient(f"cannot connect ({error or type(error).__name__})") from error
        except httpx.TimeoutException as error:
            kind = "write" if isinstance(error, httpx.WriteTimeout) else "read"
            raise _Transient(f"timed out ({kind} timeout {self.settings.read_timeout:g} s)") from error
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
            raise _Transient(f"the connection failed ({error or type(error).__name__})") from error
        except httpx.HTTPError as error:
            raise FetchError(f"fetching {_show(url)} failed: {error or type(error).__name__}") from error
        except zlib.error as error:
            raise FetchError(f"the compressed body at {_show(url)} is corrupt ({error})") from error

    def _body(self, url: httpx.URL, response: httpx.Response) -> bytes:
        limit = self.settings.max_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise ImageTooLargeError(
                f"the image at {_show(url)} has {int(declared)} bytes, more than the limit of {limit}"
            )
        encoding = response.headers.get("content-encoding", "").strip().lower()
        decoder: _Decoder | None = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder = _Decoder(encoding)
        elif encoding not in ("", "identity"):
            raise FetchError(f"{_show(url)} sent the unsupported Content-Encoding {encoding!r}")
        body = bytearray()
        for chunk in response.iter_raw():
            body += decoder.decode(chunk, limit - len(body)) if decoder is not None else chunk
            if len(body) > limit:
                raise ImageTooLargeError(f"the image at {_show(url)} is larger than the limit of {limit} bytes")
        if decoder is not None:
            body += decoder.flush(limit - len(body))
            if len(body) > limit:
                raise ImageTooLargeError(f"the image at {_show(url)} is larger than the limit of {limit} bytes")
        return bytes(body)


# ---------------------------------------------------------------------------------------------
# The process-wide fetcher

_default: SafeFetcher | None = None
_default_lock = threading.Lock()


def _env_number(name: str, kind: type[float] | type[int]) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidConfigError(f"{name} must be a positive number, got {raw!r}") from None
    if not 0 < value < math.inf:
        raise InvalidConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def settings_from_env() -> FetchSettings:
    """FetchSettings from ``LOOKALIKE_ALLOW_PRIVATE_URLS`` (1/true/yes), ``LOOKALIKE_FETCH_TIMEOUT``
    (seconds per read; the total is three times it) and ``LOOKALIKE_FETCH_MAX_BYTES``."""
    allow = os.environ.get("LOOKALIKE_ALLOW_PRIVATE_URLS", "").strip().lower()
    if allow not in _TRUE | _FALSE:
        raise InvalidConfigError(f"LOOKALIKE_ALLOW_PRIVATE_URLS must be 1/true/yes or 0/false/no, got {allow!r}")
    changes: dict[str, Any] = {"allow_private": allow in _TRUE}
    timeout = _env_number("LOOKALIKE_FETCH_TIMEOUT", float)
    if timeout is not None:
        changes.update(read_timeout=timeout, connect_timeout=min(timeout, 5.0), total_timeout=3 * timeout)
    max_bytes = _env_number("LOOKALIKE_FETCH_MAX_BYTES", int)
    if max_bytes is not None:
        changes["max_bytes"] = int(max_bytes)
    return FetchSettings(**changes)


def default_fetcher() -> SafeFetcher:
    """The process-wide fetcher, made on first use with :func:`settings_from_env` (and again
    after it was closed); closed when the process exits."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            if _default is None:
                atexit.register(_close_default)
            _default = SafeFetcher(settings_from_env())
        return _default


def _close_default() -> None:
    with _default_lock:
        if _default is not None:
            _default.close()
