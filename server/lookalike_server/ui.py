"""The web page at ``/ui``: plain HTML, CSS and JavaScript modules served as static files from
the ``ui`` folder beside this module (no build step). The page itself needs no token; every API
call it makes sends the token the person signed in with. ``/`` redirects to the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

__all__ = ["UI_FOLDER", "handlers"]

#: The page's files (package data of lookalike-server).
UI_FOLDER = Path(__file__).resolve().parent / "ui"

#: Only the page's own scripts and styles run; thumbnails come from any http(s) URL the records
#: name (and from the person's own files, as blob URLs); API calls go to this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' http: https: data: blob:; script-src 'self'; "
    "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _page_headers(response: Response[Any]) -> Response[Any]:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Thumbnails load from third-party hosts: they learn nothing of this server's addresses.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    """The server's root opens the web page."""
    return Redirect("/ui/")


def handlers() -> list[Any]:
    """The ``/ui`` static files (``index.html`` at ``/ui`` and ``/ui/``) and the ``/`` redirect."""
    return [
        create_static_files_router(
            "/ui",
            [UI_FOLDER],
            html_mode=True,
            name="ui",
            # Revalidated on every load, so a new version of the page is never mixed with an old one.
            cache_control=CacheControlHeader(no_cache=True),
            after_request=_page_headers,
            include_in_schema=False,
        ),
        root,
    ]
