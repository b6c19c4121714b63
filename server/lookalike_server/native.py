"""Native REST API under ``/v1`` (being built)."""

from __future__ import annotations

from typing import Any

__all__ = ["handlers", "on_startup"]


def handlers() -> list[Any]:
    return []


def on_startup(services: Any) -> None:
    pass
