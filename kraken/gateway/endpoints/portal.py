"""The customer portal on the client listener: ``GET /portal`` and its static files.

The page holds no data and needs no credential: the customer pastes a Kraken API key, which
stays in a JavaScript variable of that tab (no cookie, no storage, no URL), and the page calls
the account API (``/v1/account/...``) with it. What the page shows follows the caller's
``permissions`` from ``GET /v1/account``; the account API stays the one that checks them.
Files are read once at startup from ``kraken/web`` (shared with the admin usage page).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kraken.errors import NotFound
from kraken.http.exchange import Request, ResponseSink

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway

PATH = "/portal"
WEB = Path(__file__).resolve().parents[2] / "web"
"""The browser pages' files: the portal's and those it shares with the usage page (package
data beside the modules; not ``importlib.resources``, whose file reader imports ``zipfile``:
~0.4 MiB of every process's idle memory for a few files read once)."""
HTML = b"text/html; charset=utf-8"
JS = b"text/javascript; charset=utf-8"
CSS = b"text/css; charset=utf-8"
FILES = {
    PATH: ("portal.html", HTML),
    PATH + "/app.js": ("portal.js", JS),
    PATH + "/common.js": ("common.js", JS),
    PATH + "/uplot.js": ("uplot.iife.min.js", JS),
    PATH + "/uplot.css": ("uplot.min.css", CSS),
    PATH + "/page.css": ("page.css", CSS),
    PATH + "/portal.css": ("portal.css", CSS),
}
PAGE_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
)
"""Every browser page of Kraken (this one and the admin usage page): scripts from files of
the same origin only, never framed, never cached, no referrer; nothing sets a cookie."""


class Portal:
    """The files, each read once; anything else under ``/portal/`` is a 404."""

    def __init__(self) -> None:
        self.files = {path: ((WEB / name).read_bytes(), ctype)
                      for path, (name, ctype) in FILES.items()}

    async def handle(self, req: Request, sink: ResponseSink) -> None:
        found = self.files.get(req.path)
        if found is None:
            raise NotFound(f"Unknown path {req.path[:100]}")
        body, ctype = found
        sink.respond(200, [(b"content-type", ctype), *PAGE_HEADERS], body)


def register(gateway: Gateway) -> Portal:
    """Serve the portal's files (GET and HEAD) on ``gateway``'s listener."""
    portal = Portal()
    gateway.add_endpoint(PATH, portal.handle, "GET")
    gateway.add_endpoint(PATH + "/*", portal.handle, "GET")
    return portal
