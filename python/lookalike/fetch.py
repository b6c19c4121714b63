"""The safe URL fetcher for `_url` images (in-process, CLI and server alike).

Only http(s); no credentials in URLs; every address a host resolves to must be public unless
private addresses are allowed; the connection goes to the address that was checked (no DNS
rebinding window); redirects are followed by hand, each hop checked again; the body is
streamed and cut at ``max_bytes``; connect, read and total timeouts; a bounded number of
concurrent requests per host; retries on transient failures.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from lookalike.errors import ImageTooLargeError, InvalidImageError
from lookalike.images import MAX_BYTES

__all__ = ["FetchError", "BlockedAddressError", "FetchSettings", "SafeFetcher", "default_fetcher", "is_public"]


class FetchError(InvalidImageError):
    """The image at a URL could not be fetched."""

    code = "fetch_failed"


class BlockedAddressError(FetchError):
    """The URL points at an address that is not allowed (loopback, private, ...)."""

    code = "url_not_allowed"


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_bytes: int = MAX_BYTES
    max_redirects: int = 5
    allow_private: bool = False
    per_host_concurrency: int = 4
    retries: int = 2
    backoff_s: float = 0.2
    user_agent: str = "lookalike-fetcher/0.1"


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_global
        and not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast)
        and not (ip.is_reserved or ip.is_unspecified)
    )


Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchError(f"cannot resolve host {host!r}: {error}") from error
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SafeFetcher:
    """``fetcher(url) -> bytes``; thread-safe; pass it as ``Engine(fetch=...)``."""

    def __init__(self, settings: FetchSettings | None = None, *, resolver: Resolver | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._resolve = resolver or _resolve
        s = self.settings
        self._client = httpx.Client(
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.5"},
            trust_env=False,
        )
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _semaphore(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            found = self._hosts.get(host)
            if found is None:
                found = threading.BoundedSemaphore(self.settings.per_host_concurrency)
                self._hosts[host] = found
            return found

    def check(self, url: str) -> tuple[str, str, int, str]:
        """(scheme, host, port, the address to connect to) of an allowed URL."""
        if not isinstance(url, str) or len(url) > 8192:
            raise FetchError("_url must be a string of at most 8192 characters")
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs can be fetched, got {scheme or 'no scheme'!r}")
        if parts.username is not None or parts.password is not None:
            raise FetchError("URLs with credentials (user:password@) are not fetched")
        host = parts.hostname
        if not host:
            raise FetchError(f"the URL {url!r} has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as error:
            raise FetchError(f"bad port in {url!r}") from error
        addresses = self._resolve(host, port)
        if not addresses:
            raise FetchError(f"host {host!r} has no address")
        if not self.settings.allow_private:
            for address in addresses:
                if not is_public(address):
                    raise BlockedAddressError(
                        f"{host!r} resolves to {address}, a loopback, private or reserved address; "
                        "such URLs are refused (the server setting LOOKALIKE_ALLOW_PRIVATE_URLS allows them)"
                    )
        return scheme, host, port, addresses[0]

    def __call__(self, url: str) -> bytes:
        deadline = time.monotonic() + self.settings.total_timeout
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            scheme, host, port, address = self.check(current)
            response = self._get(current, scheme, host, port, address, deadline)
            if isinstance(response, str):
                current = response
                continue
            return response
        raise FetchError(f"more than {self.settings.max_redirects} redirects from {url!r}")

    def _get(self, url: str, scheme: str, host: str, port: int, address: str, deadline: float) -> bytes | str:
        """The body, or the next URL of a redirect."""
        attempt = 0
        while True:
            try:
                with self._semaphore(host):
                    return self._once(url, scheme, host, port, address, deadline)
            except _Retry as retry:
                attempt += 1
                if attempt > self.settings.retries or time.monotonic() + retry.wait >= deadline:
                    raise FetchError(f"fetching {url!r} failed: {retry.reason}") from None
                time.sleep(retry.wait)

    def _once(self, url: str, scheme: str, host: str, port: int, address: str, deadline: float) -> bytes | str:
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        # Connect to the checked address; the Host header (and SNI for https) keep the name.
        direct = f"{scheme}://{netloc}:{port}{target}"
        extensions: dict[str, Any] = {"sni_hostname": host} if scheme == "https" else {}
        default_port = 443 if scheme == "https" else 80
        headers = {"Host": host if port == default_port else f"{host}:{port}"}
        backoff = self.settings.backoff_s
        try:
            with self._client.stream("GET", direct, headers=headers, extensions=extensions) as response:
                status = response.status_code
                if status in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{url!r} redirects without a Location")
                    return str(urljoin(url, location))
                if status in (429, 502, 503, 504):
                    retry_after = response.headers.get("retry-after", "")
                    wait = min(float(retry_after), 5.0) if retry_after.isdigit() else backoff
                    raise _Retry(f"HTTP {status}", wait)
                if not 200 <= status < 300:
                    raise FetchError(f"{url!r} answered HTTP {status}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.settings.max_bytes:
                    limit = self.settings.max_bytes
                    raise ImageTooLargeError(f"the image at {url!r} has {declared} bytes, over {limit}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.settings.max_bytes:
                        raise ImageTooLargeError(f"the image at {url!r} is larger than {self.settings.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"fetching {url!r} took longer than {self.settings.total_timeout} s")
                return bytes(body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise _Retry(f"{type(error).__name__}: {error}", backoff) from error
        except httpx.TimeoutException as error:
            raise FetchError(f"fetching {url!r} timed out") from error
        except httpx.HTTPError as error:
            raise FetchError(f"fetching {url!r} failed: {error}") from error


class _Retry(Exception):
    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


_default: SafeFetcher | None = None
_default_lock = threading.Lock()


def default_fetcher() -> SafeFetcher:
    """A process-wide fetcher configured from ``LOOKALIKE_ALLOW_PRIVATE_URLS``,
    ``LOOKALIKE_FETCH_TIMEOUT`` and ``LOOKALIKE_FETCH_MAX_BYTES``."""
    global _default
    with _default_lock:
        if _default is None:
            allow = os.environ.get("LOOKALIKE_ALLOW_PRIVATE_URLS", "").strip().lower() in ("1", "true", "yes", "on")
            timeout = float(os.environ.get("LOOKALIKE_FETCH_TIMEOUT", "10") or 10)
            max_bytes = int(os.environ.get("LOOKALIKE_FETCH_MAX_BYTES", str(MAX_BYTES)) or MAX_BYTES)
            _default = SafeFetcher(
                FetchSettings(allow_private=allow, read_timeout=timeout, total_timeout=3 * timeout, max_bytes=max_bytes)
            )
        return _default
