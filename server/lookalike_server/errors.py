"""Every client error as JSON with a stable snake_case ``code``: the one mapping table.

Native routes answer ``{"status": 400, "code": "invalid_filter", "message": "..."}``; the
Ximilar routes wrap the same code in their ``status`` envelope (see ``ximilar.py``). A 500 is
a bug: its body says so and carries no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from lookalike import errors as lk

__all__ = ["ApiError", "STATUS", "status_of", "error_body", "exception_handlers", "Unauthorized", "Forbidden"]

logger = logging.getLogger("lookalike.server")

#: Lookalike error class -> HTTP status. The most specific class wins (checked in MRO order).
STATUS: dict[type[lk.LookalikeError], int] = {
    lk.ImageTooLargeError: 413,
    lk.InvalidInputError: 400,
    lk.CollectionNotFoundError: 404,
    lk.RecordNotFoundError: 404,
    lk.NotFoundError: 404,
    lk.CollectionExistsError: 409,
    lk.ClosedError: 503,
    lk.UnavailableError: 503,
    lk.StorageFullError: 507,
    lk.ReadOnlyStorageError: 503,
    lk.PluginError: 400,
    lk.ModelError: 500,
    lk.StorageError: 500,
    lk.InternalError: 500,
}


class ApiError(Exception):
    """An error raised by the server itself (auth, routing, request shape)."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


class Unauthorized(ApiError):
    def __init__(self, message: str = "missing or invalid token: send 'Authorization: Token <token>'") -> None:
        super().__init__(401, "unauthorized", message)


class Forbidden(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "forbidden", message)


def status_of(error: lk.LookalikeError) -> int:
    for klass in type(error).__mro__:
        if klass in STATUS:
            return STATUS[klass]
    return 500


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "code": code, "message": message, **extra}


def _classify(error: Exception) -> tuple[int, str, str, dict[str, Any]]:
    """(HTTP status, code, message, extra) of any exception a route may raise."""
    if isinstance(error, ApiError):
        return error.status, error.code, error.message, error.extra
    if isinstance(error, lk.LookalikeError):
        status = status_of(error)
        if isinstance(error, lk.StorageFullError | lk.ReadOnlyStorageError):
            # Not a bug but the disk: the write was not kept, reads go on; the message says so.
            logger.warning("write refused: %s", error)
            return status, error.code, str(error), {}
        if status >= 500:
            logger.exception("server error", exc_info=error)
            if isinstance(error, lk.ClosedError):
                return status, error.code, "the server is shutting down", {}
            return status, error.code, f"the server failed: {error}", {}
        return status, error.code, str(error), {}
    if isinstance(error, ValidationException):
        return _validation(error)
    if isinstance(error, NotAuthorizedException):
        return 401, "unauthorized", str(error.detail), {}
    if isinstance(error, PermissionDeniedException):
        return 403, "forbidden", str(error.detail), {}
    if isinstance(error, HTTPException):
        codes = {
            400: "invalid_body",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            415: "unsupported_media_type",
        }
        status = error.status_code
        return status, codes.get(status, "http_error" if status < 500 else "server_error"), str(error.detail), {}
    if isinstance(error, RecursionError):
        # JSON (or a filter) nested thousands of levels deep: the decoder or the parser gave up.
        return 400, "invalid_body", "the request is nested too deeply", {}
    logger.exception("unexpected server error", exc_info=error)
    return HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "the server failed; this is a bug, please report it", {}


def _validation(error: ValidationException) -> tuple[int, str, str, dict[str, Any]]:
    """Litestar's validation errors: ``invalid_query`` when only the query string, path or
    headers are wrong, ``invalid_body`` otherwise; the message names each wrong parameter."""
    problems = error.extra if isinstance(error.extra, list) else []
    sources = set()
    parts = []
    for problem in problems:
        if not isinstance(problem, dict):
            continue
        source = str(getattr(problem.get("source"), "value", problem.get("source") or "body"))
        sources.add(source)
        key = problem.get("key")
        parts.append(f"{key} ({source}): {problem.get('message')}" if key else str(problem.get("message")))
    code = "invalid_query" if sources and sources <= {"query", "path", "header", "cookie"} else "invalid_body"
    message = "; ".join(parts) if parts else str(error.detail)
    return 400, code, message, {}


def classify(error: Exception) -> tuple[int, str, str, dict[str, Any]]:
    return _classify(error)


def _native_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    status, code, message, extra = _classify(error)
    from lookalike_server import ximilar  # the Ximilar routes answer in their own envelope

    if ximilar.is_ximilar_path(request.url.path):
        return ximilar.error_response(status, code, message)
    return Response(error_body(status, code, message, **extra), status_code=status)


exception_handlers: dict[type[Exception] | int, Any] = {Exception: _native_handler}
