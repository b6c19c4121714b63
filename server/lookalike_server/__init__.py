"""lookalike-server: the HTTP server of Lookalike (native ``/v1`` API, Ximilar-compatible API)."""

from lookalike_server.app import create_app
from lookalike_server.settings import Settings, load_settings

__all__ = ["create_app", "Settings", "load_settings"]
