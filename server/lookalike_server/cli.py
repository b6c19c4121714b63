"""``lookalike serve``: the HTTP server, a click command registered under the ``lookalike.commands``
entry point (so ``lookalike`` finds it without importing this package until it runs)."""

from __future__ import annotations

import ctypes
import logging

import click

from lookalike.cli import EXIT_CODES, CliError, ExitCode

__all__ = ["serve"]


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.option("--host", metavar="ADDRESS", help="Address to listen on [default: 127.0.0.1; env LOOKALIKE_HOST].")
@click.option("--port", type=int, help="Port [default: 8000; env LOOKALIKE_PORT].")
@click.option("--data", metavar="DIR", help="Data folder [default: ./data; env LOOKALIKE_DATA].")
@click.option("--settings", metavar="FILE", help="A TOML settings file (env LOOKALIKE_SETTINGS).")
@click.option("--workers", type=int, help="Worker processes (the embedded engine allows 1).")
@click.option("--demo", is_flag=True, help="Build the demo collections if the data folder has none.")
@click.option("--allow-private-urls", is_flag=True, help="Let _url reach loopback and private addresses.")
@click.option("--log-level", metavar="LEVEL", help="debug, info, warning, error [default: info].")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Connect to this Ray cluster for sharded collections ('auto', host:port; env LOOKALIKE_RAY_ADDRESS).",
)
def serve(
    host: str | None,
    port: int | None,
    data: str | None,
    settings: str | None,
    workers: int | None,
    demo: bool,
    allow_private_urls: bool,
    log_level: str | None,
    ray_address: str | None,
) -> int:
    """Run the Lookalike HTTP server: the native /v1 API, the Ximilar-compatible API and the /ui page.

    Every setting is an option here, a LOOKALIKE_* environment variable or a key of the TOML
    file, in that order of precedence. The admin token is LOOKALIKE_ADMIN_TOKEN, or generated
    at first start into DATA/admin-token.
    """
    import uvicorn

    from lookalike_server.app import create_app
    from lookalike_server.settings import load_settings

    try:
        loaded = load_settings(
            settings,
            {
                "host": host,
                "port": port,
                "data": data,
                "workers": workers,
                # A flag cannot say "off", so absent means: as the environment or the file say.
                "demo": demo or None,
                "allow_private_urls": allow_private_urls or None,
                "log_level": log_level,
                "ray_address": ray_address,
            },
        )
    except ValueError as error:
        raise CliError(str(error), ExitCode.USAGE) from error
    logging.basicConfig(level=loaded.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _fewer_malloc_arenas()
    app = create_app(loaded)
    base = f"http://{loaded.host}:{loaded.port}"
    click.echo(f"Lookalike on {base}")
    click.echo(f"  web page  {base}/ui    API docs  {base}/docs    health  {base}/health    metrics  {base}/metrics")
    token = "LOOKALIKE_ADMIN_TOKEN" if loaded.admin_token else f"{loaded.data}/admin-token"
    click.echo(f"  data in {loaded.data}; the admin token is in {token}")
    uvicorn.run(app, host=loaded.host, port=loaded.port, log_level=loaded.log_level, workers=None)
    return int(ExitCode.OK)


def _fewer_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core) and keeps
    what they free: with a pool of request threads decoding large bodies, the server's memory
    then creeps up. Two arenas keep it flat; elsewhere than glibc this does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(ctypes.c_int(-8), ctypes.c_int(2))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
