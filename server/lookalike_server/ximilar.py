"""Ximilar-compatible routes (being built)."""

from __future__ import annotations

from typing import Any

from litestar import Response

__all__ = ["handlers", "on_startup", "is_ximilar_path", "error_response"]

PREFIXES: tuple[str, ...] = ()


def is_ximilar_path(path: str) -> bool:
    return any(path.startswith(prefix) for prefix in PREFIXES)


def error_response(status: int, code: str, message: str) -> Response[Any]:
    return Response({"status": {"code": status, "text": message}, "code": code}, status_code=status)


def handlers() -> list[Any]:
    return []


def on_startup(services: Any) -> None:
    pass
