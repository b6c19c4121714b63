"""``lookalike serve``: the HTTP server (registered under the ``lookalike.commands`` entry point)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["serve_main"]


def serve_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookalike serve", description="Run the Lookalike HTTP server.")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; LOOKALIKE_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000; LOOKALIKE_PORT)")
    parser.add_argument("--data", help="data folder (default ./data; LOOKALIKE_DATA)")
    parser.add_argument("--settings", help="a TOML settings file (LOOKALIKE_SETTINGS)")
    parser.add_argument("--workers", type=int, help="worker processes (the embedded engine allows 1)")
    parser.add_argument("--demo", action="store_true", default=None, help="build the demo collections if absent")
    parser.add_argument("--allow-private-urls", action="store_true", default=None, help="let _url reach private hosts")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    args = parser.parse_args(list(argv))

    import uvicorn

    from lookalike_server.app import create_app
    from lookalike_server.settings import load_settings

    try:
        settings = load_settings(
            args.settings,
            {
                "host": args.host,
                "port": args.port,
                "data": args.data,
                "workers": args.workers,
                "demo": args.demo,
                "allow_private_urls": args.allow_private_urls,
                "log_level": args.log_level,
            },
        )
    except ValueError as error:
        print(f"lookalike serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    base = f"http://{settings.host}:{settings.port}"
    print(f"Lookalike on {base}", flush=True)
    print(f"  API docs  {base}/docs    health  {base}/health    metrics  {base}/metrics", flush=True)
    token = "LOOKALIKE_ADMIN_TOKEN" if settings.admin_token else f"{settings.data}/admin-token"
    print(f"  data in {settings.data}; the admin token is in {token}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, workers=None)
    return 0
