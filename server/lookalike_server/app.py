"""The Litestar application: one engine on the data folder, tokens, the safe URL fetcher,
metrics; native routes under ``/v1`` and the Ximilar-compatible routes."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from lookalike import Engine
from lookalike.fetch import FetchSettings, SafeFetcher
from lookalike.sdk.registry import Registry, default_registry
from lookalike_server.auth import TokenStore
from lookalike_server.errors import exception_handlers
from lookalike_server.metrics import Metrics, route_of
from lookalike_server.settings import Settings, load_settings

__all__ = ["create_app", "Services", "services"]

logger = logging.getLogger("lookalike.server")

VERSION = "0.1.0"


@dataclass
class Services:
    """What the routes share; one per application."""

    settings: Settings
    engine: Engine
    tokens: TokenStore
    fetcher: SafeFetcher
    metrics: Metrics
    admin_token_file: Path | None = None
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for closer in self.extra.get("closers", []):
            closer()
        self.engine.close()
        shutdown = getattr(self.engine.cluster, "shutdown", None)
        if shutdown is not None:  # disconnects from the Ray cluster (the cluster goes on)
            shutdown()
        self.tokens.close()
        self.fetcher.close()


def services(state: State) -> Services:
    found: Services = state["services"]
    return found


def admin_token(settings: Settings, data: Path) -> tuple[str, Path | None]:
    """The admin token: from the settings, or kept in ``<data>/admin-token`` (created once)."""
    if settings.admin_token:
        return settings.admin_token, None
    path = data / "admin-token"
    if path.exists():
        return path.read_text().strip(), path
    token = "lk_admin_" + secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token, path


def build_services(settings: Settings, registry: Registry | None = None) -> Services:
    data = Path(settings.data)
    data.mkdir(parents=True, exist_ok=True)
    token, token_file = admin_token(settings, data)
    fetcher = SafeFetcher(
        FetchSettings(
            allow_private=settings.allow_private_urls,
            read_timeout=settings.fetch_timeout,
            total_timeout=max(settings.fetch_timeout * 3, settings.fetch_timeout),
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.fetch_max_redirects,
            per_host_concurrency=settings.fetch_per_host,
        )
    )
    if registry is None:
        registry = Registry.discover(allow=settings.collection_types) if settings.collection_types else None
    cluster = None
    if settings.ray_address:
        from lookalike.distributed import RayCluster

        cluster = RayCluster(settings.ray_address, data=settings.shard_data or None)
    engine = Engine(
        data,
        cluster=cluster,
        registry=registry or default_registry(),
        fetch=fetcher,
        allow_files=False,
        max_image_pixels=settings.max_image_pixels,
        threads=settings.model_threads or None,
        batch_size=settings.batch_size,
        micro_batch=True,
        max_collection_bytes=settings.max_collection_bytes or None,
        snapshot_every=settings.snapshot_every or None,
    )
    return Services(
        settings=settings,
        engine=engine,
        tokens=TokenStore(data / "server.db", token),
        fetcher=fetcher,
        metrics=Metrics(),
        admin_token_file=token_file,
    )


@get("/health", media_type=MediaType.JSON, tags=["service"], sync_to_thread=False, security=[{}])
def health(state: State) -> dict[str, Any]:
    """Liveness and readiness: the engine is open and answers."""
    found = services(state)
    return {
        "status": "ok",
        "version": VERSION,
        "collections": len(found.engine.list_collections()),
        "uptime_s": round(time.time() - found.started, 1),
    }


@get("/metrics", media_type="text/plain; version=0.0.4", include_in_schema=False, sync_to_thread=True)
def metrics(state: State) -> str:
    return services(state).metrics.render()


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if str(scope["type"]) != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            found = scope["app"].state.get("services")
            if found is not None:
                found.metrics.observe(
                    scope.get("method", "GET"), route_of(dict(scope)), status[0], time.perf_counter() - started
                )

    return middleware


def _collection_gauges(found: Services) -> Any:
    def gauges() -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        for name in found.engine.list_collections():
            try:
                collection = found.engine.collection(name)
            except Exception:  # a collection whose type is not installed: no figures
                continue
            labels = {"collection": name}
            out.append(("lookalike_collection_records", "Records per collection.", labels, len(collection)))
            out.append(
                (
                    "lookalike_collection_memory_bytes",
                    "Index memory per collection.",
                    labels,
                    collection.memory_usage(),
                )
            )
        return out

    return gauges


def create_app(settings: Settings | None = None, *, registry: Registry | None = None) -> Litestar:
    """The application; the engine opens at startup and closes at shutdown."""
    from lookalike_server import native, ui, ximilar
    from lookalike_server.gate import write_gate_middleware
    from lookalike_server.schemas import StrictStructSchema

    settings = settings if settings is not None else load_settings()
    # httpx logs every request line (user-supplied `_url`s) at INFO: keep it to warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

    def startup(app: Litestar) -> None:
        # Sync handlers run in this pool. asyncio's default one has cores + 4 threads: too few
        # when writes wait for a collection's lock (see gate.py) and searches need threads.
        executor = ThreadPoolExecutor(max_workers=settings.request_threads, thread_name_prefix="lookalike-request")
        app.state["executor"] = executor
        asyncio.get_running_loop().set_default_executor(executor)
        found = build_services(settings, registry)
        found.metrics.gauges.append(_collection_gauges(found))
        app.state["services"] = found
        if settings.demo and not found.engine.list_collections():
            from lookalike.demo import build_collections

            logger.info("building the demo collections (first start)")
            build_collections(found.engine, quiet=True)
        for hook in (native.on_startup, ximilar.on_startup):
            hook(found)

    def shutdown(app: Litestar) -> None:
        found = app.state.get("services")
        if found is not None:
            found.close()
        executor = app.state.get("executor")
        if executor is not None:
            executor.shutdown(wait=False)

    return Litestar(
        route_handlers=[health, metrics, *native.handlers(), *ximilar.handlers(), *ui.handlers()],
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers=exception_handlers,
        middleware=[metrics_middleware, write_gate_middleware],
        plugins=[StrictStructSchema()],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Lookalike",
            version=VERSION,
            description="Self-hosted image similarity search: native API (/v1) and Ximilar-compatible routes.",
            path="/docs",
            components=Components(
                security_schemes={
                    "token": SecurityScheme(
                        type="apiKey",
                        name="Authorization",
                        security_scheme_in="header",
                        description="`Token <token>` (also `Bearer <token>`): the admin token or a collection token.",
                    )
                }
            ),
            security=[{"token": []}],
        ),
        debug=False,
    )
