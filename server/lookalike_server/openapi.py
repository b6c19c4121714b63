"""The OpenAPI document of the server, as committed in ``server/openapi.json``.

Regenerate it after changing a route or a schema (a test fails while it differs)::

    python -m lookalike_server.openapi > server/openapi.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lookalike.sdk.registry import Registry
from lookalike_server.app import create_app
from lookalike_server.settings import Settings

__all__ = ["schema", "render", "main"]


def schema() -> dict[str, Any]:
    """The OpenAPI schema of the application (nothing is started: no data folder is touched)."""
    app = create_app(Settings(admin_token="unused"), registry=Registry())
    document: dict[str, Any] = app.openapi_schema.to_schema()
    return document


def render() -> str:
    """The schema as committed: pretty JSON, sorted keys, a final newline."""
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
