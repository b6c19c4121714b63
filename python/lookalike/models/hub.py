"""``lookalike models pull``: download a model folder over HTTP(S), resumable and sha256-verified.

The URL names a folder served over HTTP(S) that holds ``manifest.json``::

    {"name": "clip-vit-b32", "files": {"model.json": "<sha256>", "image.onnx": "<sha256>", ...}}

(``"files"`` may also be a list: ``[{"path": "image.onnx", "sha256": "...", "size": 1234}]``).
Each file is downloaded into ``<file>.part`` and moved into place (``os.replace``) only once its
sha256 matches, so a file in the folder is always complete and verified. An interrupted download
resumes from its ``.part`` with a ``Range`` request (a server that ignores ``Range`` and answers
200 restarts it from zero); connection errors, timeouts and 5xx/429 answers are retried a bounded
number of times. Files already in place with the right checksum are not downloaded again. At the
end the folder must load as a :class:`~lookalike.models.clip.ClipModel`.

One pull per folder at a time: two processes pulling into the same folder share ``.part`` files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import NoReturn, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
import msgspec

from lookalike.errors import ModelError
from lookalike.models import cache_dir
from lookalike.models.clip import ClipModel, safe_relative_path, sha256_file

__all__ = ["pull", "Progress", "MANIFEST", "RETRIES", "BACKOFF_S"]

#: The manifest's file name in a served model folder.
MANIFEST = "manifest.json"
#: Attempts per request after the first, for transient failures.
RETRIES = 4
#: First pause between attempts (doubled each time, at most 8 s).
BACKOFF_S = 0.5
#: Largest manifest accepted.
MANIFEST_MAX_BYTES = 1 << 20

#: ``progress(file_name, bytes_done, bytes_total_or_None)``, called as bytes arrive.
Progress = Callable[[str, int, int | None], None]

_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Entry(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    sha256: str
    size: int | None = None


class _Manifest(msgspec.Struct, forbid_unknown_fields=False):
    files: dict[str, str] | list[_Entry]
    name: str | None = None


class _Transient(Exception):
    """A failure worth another attempt (connection, timeout, 5xx, short body)."""


def pull(
    name: str,
    url: str,
    dest: Path | None = None,
    *,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Path:
    """Downloads the model folder at ``url`` into ``dest`` (default ``cache_dir()/models/name``)
    and returns the folder. Raises :class:`ModelError` naming the file and what failed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ModelError(f"model name {name!r} must be 1-128 letters, digits, '.', '_' or '-' (not starting with one)")
    base = _base_url(url)
    folder = Path(dest) if dest is not None else cache_dir() / "models" / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model folder {folder}: {exc}") from exc

    headers = {"Accept-Encoding": "identity", "User-Agent": "lookalike-models-pull"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client:
        manifest_bytes = _fetch_manifest(client, urljoin(base, MANIFEST))
        entries = _parse_manifest(manifest_bytes)
        for rel, (expected, size) in entries.items():
            target = folder.joinpath(*rel.parts)
            _download(client, urljoin(base, rel.as_posix()), target, rel.as_posix(), expected, size, progress)
    _write_bytes_atomic(folder / MANIFEST, manifest_bytes)

    try:
        ClipModel.load(folder)
    except ModelError as exc:
        raise ModelError(f"pulled {name!r} into {folder}, but it is not a usable model folder: {exc}") from exc
    return folder


def _base_url(url: str) -> str:
    if not isinstance(url, str):
        raise ModelError(f"model URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(f"model URL must be http(s)://host/folder/, got {url!r}")
    if parts.path.endswith("/" + MANIFEST):
        return url[: url.rindex(MANIFEST)]
    return url if url.endswith("/") else url + "/"


def _parse_manifest(raw: bytes) -> dict[PurePosixPath, tuple[str, int | None]]:
    try:
        manifest = msgspec.json.decode(raw, type=_Manifest)
    except msgspec.DecodeError as exc:
        raise ModelError(f"{MANIFEST}: invalid manifest: {exc}") from exc
    if isinstance(manifest.files, dict):
        listed: list[tuple[str, str, int | None]] = [(p, s, None) for p, s in manifest.files.items()]
    else:
        listed = [(e.path, e.sha256, e.size) for e in manifest.files]
    entries: dict[PurePosixPath, tuple[str, int | None]] = {}
    for path, sha, size in listed:
        try:
            rel = safe_relative_path(path)
        except ModelError as exc:
            raise ModelError(f"{MANIFEST}: refusing file {path!r}: {exc}") from exc
        if rel.name.endswith(".part") or rel.as_posix() == MANIFEST:
            raise ModelError(f"{MANIFEST}: refusing file {path!r} (reserved name)")
        digest = sha.lower()
        if not _SHA256.fullmatch(digest):
            raise ModelError(f"{MANIFEST}: {path!r} has no valid sha256 (got {sha!r})")
        if size is not None and size < 0:
            raise ModelError(f"{MANIFEST}: {path!r} has a negative size")
        if rel in entries:
            raise ModelError(f"{MANIFEST}: {path!r} is listed twice")
        entries[rel] = (digest, size)
    if PurePosixPath("model.json") not in entries:
        raise ModelError(f"{MANIFEST}: must list model.json")
    return entries


def _fetch_manifest(client: httpx.Client, url: str) -> bytes:
    def attempt() -> bytes:
        with _stream(client, url, {}) as response:
            if response.status_code != 200:
                _raise_status(response, MANIFEST)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MANIFEST_MAX_BYTES:
                    raise ModelError(f"{MANIFEST}: larger than {MANIFEST_MAX_BYTES} bytes")
            return bytes(body)

    return _retrying(attempt, MANIFEST)


def _download(
    client: httpx.Client,
    url: str,
    target: Path,
    label: str,
    expected: str,
    size: int | None,
    progress: Progress | None,
) -> None:
    if target.is_file() and (size is None or target.stat().st_size == size) and sha256_file(target) == expected:
        if progress is not None:
            progress(label, target.stat().st_size, target.stat().st_size)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    restarted = False

    def attempt() -> None:
        nonlocal restarted
        have = part.stat().st_size if part.is_file() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if have and size is not None and have == size:
            # Complete already (the previous run stopped before the move): just verify.
            if _finish(part, target, label, expected):
                return
            have = 0
        digest = hashlib.sha256()
        if have:
            with part.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        request_headers = {"Range": f"bytes={have}-"} if have else {}
        with _stream(client, url, request_headers) as response:
            status = response.status_code
            if status == 416 and have:
                # Nothing past what we have: the .part may be complete, or stale.
                response.close()
                if _finish(part, target, label, expected):
                    return
                raise _Transient(f"{label}: server refused the resume range")
            if status == 206:
                start, total = _content_range(response)
                if start != have:
                    part.unlink(missing_ok=True)
                    raise _Transient(f"{label}: server resumed at byte {start}, not {have}")
                mode = "ab"
            elif status == 200:
                have, mode, digest, total = 0, "wb", hashlib.sha256(), _int_header(response, "content-length")
            else:
                _raise_status(response, label)
            if size is not None and total is not None and total != size:
                raise ModelError(f"{label}: server sends {total} bytes, the manifest says {size}")
            total = total if total is not None else size
            done = have
            with part.open(mode) as handle:
                try:
                    for chunk in response.iter_bytes():  # as received: a cut keeps every byte that came
                        handle.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(label, done, total)
                finally:
                    handle.flush()
                    os.fsync(handle.fileno())
            if total is not None and done != total:
                raise _Transient(f"{label}: connection closed after {done} of {total} bytes")
        if not _finish(part, target, label, expected, digest=digest.hexdigest()):
            if have > 0 and not restarted:
                restarted = True  # a stale .part from another version of the file: once more, from zero
                raise _Transient(f"{label}: resumed file failed its checksum, downloading it again")
            raise ModelError(f"{label}: sha256 mismatch, expected {expected} (download deleted)")

    try:
        _retrying(attempt, label)
    except OSError as exc:
        raise ModelError(f"{label}: cannot write {part}: {exc}") from exc


def _finish(part: Path, target: Path, label: str, expected: str, *, digest: str | None = None) -> bool:
    """Moves a verified ``.part`` into place; deletes it and returns False when it does not match."""
    actual = digest if digest is not None else sha256_file(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        return False
    try:
        os.replace(part, target)
    except OSError as exc:
        raise ModelError(f"{label}: cannot move the download into place: {exc}") from exc
    return True


def _retrying(attempt: Callable[[], _T], label: str) -> _T:
    pause = BACKOFF_S
    for number in range(RETRIES + 1):
        try:
            return attempt()
        except (_Transient, httpx.TransportError) as exc:
            if number == RETRIES:
                reason = str(exc) or type(exc).__name__
                raise ModelError(f"{label}: download failed after {RETRIES + 1} attempts: {reason}") from exc
            retry_after = getattr(exc, "retry_after", None)
            time.sleep(min(8.0, retry_after if retry_after is not None else pause))
            pause *= 2
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _stream(client: httpx.Client, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
    try:
        with client.stream("GET", url, headers=headers) as response:
            yield response
    except httpx.InvalidURL as exc:
        raise ModelError(f"invalid URL {url!r}: {exc}") from exc


class _Status(_Transient):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _raise_status(response: httpx.Response, label: str) -> NoReturn:
    status = response.status_code
    message = f"{label}: HTTP {status} from {response.request.url}"
    if status >= 500 or status in (408, 425, 429):
        retry_after = response.headers.get("retry-after", "")
        raise _Status(message, float(retry_after) if retry_after.isdigit() else None)
    if status == 404:
        raise ModelError(f"{label}: not found on the server (HTTP 404 from {response.request.url})")
    raise ModelError(message)


def _content_range(response: httpx.Response) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    if match is None:
        raise _Transient(f"bad Content-Range {response.headers.get('content-range')!r}")
    total = match.group(3)
    return int(match.group(1)), int(total) if total != "*" else None


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else None


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc}") from exc
