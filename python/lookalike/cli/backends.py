"""Where the commands send their work: an engine on a data folder in this process
(:class:`LocalBackend`), or a Lookalike server over its native ``/v1`` API (:class:`RemoteBackend`).

Both speak the engine's words (``record``, ``limit``, ``filter``...); the remote one translates
to the wire at its edge. ``_file`` images are read by the CLI: the engine reads them in-process,
and for a server the CLI sends their bytes as ``_base64`` (a server never reads local files).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from lookalike.cli.common import CliError, ExitCode
from lookalike.errors import CollectionNotFoundError, InvalidRecordError, StorageError

__all__ = [
    "Backend",
    "CollectionSummary",
    "Failure",
    "Unavailable",
    "LocalBackend",
    "RemoteBackend",
    "ServerError",
    "resolve_file",
    "open_backend",
]

#: Further attempts after a connection error, a timeout or HTTP 429/502/503/504.
RETRIES = 3
#: The first pause before a retry (doubled each time, at most 10 s).
BACKOFF_S = 0.25


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    type: str
    count: int
    ndim: int
    metric: str
    fields_to_index: list[str]
    product_id_field: str | None
    query_kinds: list[str]


@dataclass(frozen=True)
class Failure:
    """A record of a batch that was not written; ``position`` counts from 0 in the batch."""

    position: int
    id: str | None
    code: str
    message: str


@dataclass(frozen=True)
class Unavailable:
    """A collection that cannot be opened (for example its type is not installed)."""

    name: str
    code: str
    message: str


class Backend(Protocol):
    #: What the commands act on: the data folder (absolute) or the server's URL.
    target: str

    def describe(self, name: str) -> CollectionSummary | None:
        """The collection, or None when it does not exist."""

    def create(self, name: str, options: Mapping[str, Any]) -> None:
        """Creates a collection (``create_collection``'s keyword arguments)."""

    def prepare(self, record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
        """The record as it is sent: a relative ``_file`` is relative to `folder`. Raises a
        :class:`~lookalike.errors.LookalikeError` for a record that cannot be sent."""

    def insert(self, name: str, records: list[dict[str, Any]]) -> list[Failure]:
        """Inserts a batch (existing ``_id`` replaced); returns the records it skipped."""

    def search(self, name: str, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``Collection.search``'s keyword arguments in, hits out."""

    def collections(self) -> tuple[list[CollectionSummary], list[Unavailable]]: ...

    def pages(self, name: str, filter: Mapping[str, Any] | None, size: int) -> Iterator[list[dict[str, Any]]]:
        """Every record (``_id`` and metadata) passing `filter`, page by page."""

    def close(self) -> None: ...


def resolve_file(record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """`record` with a relative ``_file`` made relative to `folder` (the input's folder)."""
    value = record.get("_file")
    if folder is None or not isinstance(value, str) or not value.strip():
        return record
    path = Path(value).expanduser()
    if path.is_absolute():
        return record
    return {**record, "_file": str(folder / path)}


# -- in-process --------------------------------------------------------------------------------


class LocalBackend:
    """An :class:`~lookalike.engine.Engine` on a data folder, in this process."""

    def __init__(
        self, data: Path, *, must_exist: bool, allow_private_urls: bool = False, ray: str | None = None
    ) -> None:
        from lookalike.engine import Engine
        from lookalike.fetch import SafeFetcher, settings_from_env

        self.target = str(data.resolve())
        if must_exist and not (data / "collections").is_dir():
            raise CliError(
                f"no data folder at {data} (give one with --data or LOOKALIKE_DATA, or a server with --server)",
                ExitCode.NOT_FOUND,
            )
        settings = settings_from_env()
        if allow_private_urls:
            settings = dataclasses.replace(settings, allow_private=True)
        self._fetcher = SafeFetcher(settings)
        self._cluster: Any = None
        try:
            if ray:
                from lookalike.distributed import RayCluster

                self._cluster = RayCluster(ray)
            self.engine = Engine(data, fetch=self._fetcher, cluster=self._cluster)
        except StorageError as error:
            self._fetcher.close()
            if "in use" in str(error):
                raise CliError(
                    f"the data folder {data} is in use by another process (is `lookalike serve` running on it?); "
                    "stop it, or go through the server: --server URL --token TOKEN",
                    ExitCode.UNAVAILABLE,
                ) from error
            raise

    def describe(self, name: str) -> CollectionSummary | None:
        try:
            collection = self.engine.collection(name)
        except CollectionNotFoundError:
            return None
        config = collection.config
        return CollectionSummary(
            name=config.name,
            type=config.type,
            count=len(collection),
            ndim=config.ndim,
            metric=config.metric,
            fields_to_index=list(config.fields_to_index),
            product_id_field=config.product_id_field,
            query_kinds=collection.query_kinds,
        )

    def create(self, name: str, options: Mapping[str, Any]) -> None:
        self.engine.create_collection(name, **options)

    def prepare(self, record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
        return resolve_file(record, folder)

    def insert(self, name: str, records: list[dict[str, Any]]) -> list[Failure]:
        result = self.engine.collection(name).insert(records)
        return [Failure(error.position, error.id, error.code, error.message) for error in result.errors]

    def search(self, name: str, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.engine.collection(name).search(**query)

    def collections(self) -> tuple[list[CollectionSummary], list[Unavailable]]:
        from lookalike.errors import LookalikeError

        found: list[CollectionSummary] = []
        unavailable: list[Unavailable] = []
        for name in self.engine.list_collections():
            try:
                summary = self.describe(name)
            except LookalikeError as error:
                unavailable.append(Unavailable(name, error.code, str(error)))
                continue
            if summary is not None:
                found.append(summary)
        return found, unavailable

    def pages(self, name: str, filter: Mapping[str, Any] | None, size: int) -> Iterator[list[dict[str, Any]]]:
        collection = self.engine.collection(name)
        cursor: str | None = None
        while True:
            page = collection.records(filter=filter, limit=size, cursor=cursor)
            if page.records:
                yield page.records
            if page.cursor is None:
                return
            cursor = page.cursor

    def close(self) -> None:
        try:
            self.engine.close()
        finally:
            self._fetcher.close()
            if self._cluster is not None:
                self._cluster.shutdown()


# -- a server ----------------------------------------------------------------------------------


class ServerError(CliError):
    """An error answer of the server: its HTTP `status` and its `reason` (the body's ``code``)."""

    def __init__(self, message: str, code: ExitCode, *, status: int, reason: str | None) -> None:
        super().__init__(message, code)
        self.status = status
        self.reason = reason


def _wire_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """``Collection.search`` keywords as the body of ``POST /v1/collections/{name}/search``."""
    body = {key: value for key, value in query.items() if key != "record" and value is not None}
    if "id" in body:
        body["query"] = {"_id": body.pop("id")}
    record = query.get("record")
    if record is not None:
        body["query"] = dict(record)
    return body


class RemoteBackend:
    """A Lookalike server's native API (``/v1``), with a token."""

    def __init__(self, url: str, token: str, *, timeout: float = 600.0) -> None:
        import httpx

        from lookalike import __version__

        self.target = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.target + "/v1",
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"lookalike-cli/{__version__}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            trust_env=True,
        )

    def _request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """The decoded answer of a request; :class:`CliError` for an error answer, after
        retrying what may pass (connection errors, timeouts, 429 and 502-504)."""
        import msgspec

        httpx = self._httpx
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else None
        pause = BACKOFF_S
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                response = self._client.request(method, path, content=content, params=params, headers=headers)
            except httpx.TransportError as error:
                if last:
                    reason = str(error) or type(error).__name__
                    message = f"cannot reach the server at {self.target}: {reason}"
                    raise CliError(message, ExitCode.UNAVAILABLE) from error
            else:
                if response.status_code not in (429, 502, 503, 504) or last:
                    break
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isdigit():
                    pause = max(pause, float(retry_after))
            time.sleep(min(pause, 10.0))
            pause *= 2
        if response.is_success:
            return response.json() if response.content else None
        raise self._error(response)

    def _error(self, response: Any) -> ServerError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            message = f"{body.get('message') or body['code']} ({body['code']}, HTTP {status})"
        else:
            message = f"HTTP {status} from {response.request.url} (is this a Lookalike server?)"
        if status in (401, 403):
            code = ExitCode.UNAVAILABLE
        elif status == 404:
            code = ExitCode.NOT_FOUND
        elif status == 400:
            code = ExitCode.USAGE
        else:
            code = ExitCode.FAILED
        return ServerError(message, code, status=status, reason=body.get("code") if isinstance(body, dict) else None)

    def _path(self, name: str, *rest: str) -> str:
        return "/".join(["/collections", quote(name, safe=""), *rest])

    def describe(self, name: str) -> CollectionSummary | None:
        try:
            info = self._request("GET", self._path(name))
        except CliError as error:
            if isinstance(error, ServerError) and error.reason == "collection_not_found":
                return None
            raise
        return _summary(info)

    def create(self, name: str, options: Mapping[str, Any]) -> None:
        body = {"name": name, **{key: value for key, value in options.items() if value is not None}}
        self._request("POST", "/collections", body=body)

    def prepare(self, record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
        if "_file" not in record:
            return record
        from lookalike.images import image_bytes

        given = [name for name in ("_url", "_base64") if name in record]
        if given:
            raise InvalidRecordError(f"a record takes one image source, got {given[0]} and _file")
        data = image_bytes(resolve_file(record, folder))
        assert data is not None
        out = {key: value for key, value in record.items() if key != "_file"}
        out["_base64"] = base64.b64encode(data).decode("ascii")
        return out

    def insert(self, name: str, records: list[dict[str, Any]]) -> list[Failure]:
        try:
            answer = self._request("POST", self._path(name, "records"), body={"records": records})
        except CliError as error:
            if not isinstance(error, ServerError) or error.status != 413:
                raise
            if len(records) == 1:  # one record larger than the server takes
                id_ = records[0].get("_id")
                return [Failure(0, id_ if isinstance(id_, str) else None, "body_too_large", error.message)]
            half = len(records) // 2
            later = self.insert(name, records[half:])
            return self.insert(name, records[:half]) + [
                dataclasses.replace(failure, position=failure.position + half) for failure in later
            ]
        return [
            Failure(int(error["position"]), error.get("_id"), str(error["code"]), str(error["message"]))
            for error in answer.get("errors", [])
        ]

    def search(self, name: str, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        answer = self._request("POST", self._path(name, "search"), body=_wire_query(query))
        hits: list[dict[str, Any]] = answer["hits"]
        return hits

    def collections(self) -> tuple[list[CollectionSummary], list[Unavailable]]:
        answer = self._request("GET", "/collections")
        return (
            [_summary(info) for info in answer.get("collections", [])],
            [Unavailable(u["name"], u["code"], u["message"]) for u in answer.get("unavailable", [])],
        )

    def pages(self, name: str, filter: Mapping[str, Any] | None, size: int) -> Iterator[list[dict[str, Any]]]:
        import msgspec

        params: dict[str, Any] = {"limit": size}
        if filter:
            params["filter"] = msgspec.json.encode(filter).decode()
        while True:
            answer = self._request("GET", self._path(name, "records"), params=params)
            if answer["records"]:
                yield answer["records"]
            cursor = answer.get("next_cursor")
            if cursor is None:
                return
            params["cursor"] = cursor

    def close(self) -> None:
        self._client.close()


def _summary(info: Mapping[str, Any]) -> CollectionSummary:
    return CollectionSummary(
        name=str(info["name"]),
        type=str(info["type"]),
        count=int(info.get("count", 0)),
        ndim=int(info.get("ndim", 0)),
        metric=str(info.get("metric", "")),
        fields_to_index=list(info.get("fields_to_index", [])),
        product_id_field=info.get("product_id_field"),
        query_kinds=list(info.get("query_kinds", [])),
    )


def open_backend(
    *,
    data: Path,
    server: str | None,
    token: str | None,
    must_exist: bool,
    allow_private_urls: bool = False,
    ray: str | None = None,
) -> Backend:
    """The backend a command's options name: a server when `server` is given, else `data`
    (with the Ray cluster `ray` for its sharded collections)."""
    if server:
        if ray:
            raise CliError("--ray goes with --data; a server connects to its cluster itself", ExitCode.USAGE)
        if not token:
            raise CliError("--server needs a token: --token TOKEN or LOOKALIKE_TOKEN", ExitCode.USAGE)
        if not server.startswith(("http://", "https://")):
            raise CliError(f"--server takes an http(s) URL, got {server!r}", ExitCode.USAGE)
        return RemoteBackend(server, token)
    return LocalBackend(data, must_exist=must_exist, allow_private_urls=allow_private_urls, ray=ray)
