"""The plain-HTTP listener's two jobs: answer ACME HTTP-01 challenges, redirect to HTTPS.

certbot's webroot authenticator writes ``<webroot>/.well-known/acme-challenge/<token>``;
``server.acme_dir`` is that webroot, and this module serves exactly those files, nothing
else (the token alphabet is base64url, so no path can leave the directory). Every other
request is redirected to the same host and path over HTTPS with 308, which keeps the method
and body (a client that sent an API key over plain HTTP has already leaked it; HSTS on the
TLS side keeps browsers from doing it twice).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from typing import Awaitable, Callable

from kraken.http.exchange import Request, ResponseSink

ACME_PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_BODY = 4096
"""A key authorization is ``token.thumbprint``: under 200 bytes. Anything bigger is not one."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(
    rf"(?P<name>{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?")
_TARGET_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def acme_response(acme_dir: str, path: str) -> tuple[int, bytes]:
    """``(status, body)`` for a request path on the plain-HTTP listener's ACME route:
    200 with the challenge file, or 404 (unknown token, not a challenge path, no acme_dir)."""
    if not acme_dir or not path.startswith(ACME_PREFIX):
        return 404, b""
    token = path[len(ACME_PREFIX):]
    if not _TOKEN.fullmatch(token):
        return 404, b""
    name = os.path.join(acme_dir, ".well-known", "acme-challenge", token)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return 404, b""
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 404, b""
        body = os.read(fd, _MAX_BODY + 1)
    finally:
        os.close(fd)
    if len(body) > _MAX_BODY:
        return 404, b""
    return 200, body


def redirect_location(host: str | None, path: str, https_port: int = 443) -> str | None:
    """``https://host[:port]/path`` for the plain-HTTP → HTTPS redirect, or None when the
    Host header is missing or not a plain host name/IP literal (no open redirect, no header
    injection). The port in Host (the plain one) is replaced by ``https_port``."""
    if not host:
        return None
    match = _HOST.fullmatch(host.strip())
    if match is None or len(match.group("name")) > 253:
        return None
    name = match.group("name").lower()
    if not path.startswith("/") or _TARGET_FORBIDDEN.search(path):
        path = "/"
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{name}{port}{path}"


Handler = Callable[[Request, ResponseSink], Awaitable[None]]


def plain_http_handler(acme_dir: str, https_port: int = 443) -> Handler:
    """The request handler of the plain-HTTP listener (``server.redirect_http_port``), for
    ``H1Connection(handler, cfg.server, connections)``: ACME challenges from ``acme_dir``,
    308 to HTTPS for everything else, 400 without a usable Host."""
    text = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]

    async def handle(request: Request, sink: ResponseSink) -> None:
        if request.path.startswith(ACME_PREFIX):
            if request.method in ("GET", "HEAD"):
                status, body = acme_response(acme_dir, request.path)
            else:
                status, body = 405, b""
            headers = list(text) + ([(b"allow", b"GET, HEAD")] if status == 405 else [])
            sink.start(status, headers, len(body))
            sink.write(body)
            sink.end()
            return
        host = request.header(b"host")
        location = redirect_location(host.decode("latin-1") if host else None,
                                     request.target, https_port)
        if location is None:
            body = b"Bad Request: missing or invalid Host header\n"
            sink.start(400, list(text), len(body))
            sink.write(body)
        else:
            body = b"Use HTTPS: " + location.encode("ascii") + b"\n"
            sink.start(308, [*text, (b"location", location.encode("ascii"))], len(body))
            sink.write(body)
        sink.end()

    return handle
