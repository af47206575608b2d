"""What the pages behind one-time email links share (sign-up, email change): headers, the
page shell, and reading the token from the link's query or the confirming form.

A link's GET only shows a page with one button (a mail scanner that fetches the link uses
nothing up); the button POSTs the token back in the form's body, never in a cookie. Pages are
``no-store``, framed by no one, and send no Referer (the token is in the link's URL).
"""
from __future__ import annotations

import html
from urllib.parse import parse_qsl

from kraken.accounts import validation as v
from kraken.gateway.endpoints.account import json_body
from kraken.http.exchange import Request

MAX_FORM = 4096
NO_STORE = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff")]
PAGE_HEADERS = [(b"content-type", b"text/html; charset=utf-8"), *NO_STORE,
                (b"content-security-policy",
                 b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                 b"frame-ancestors 'none'"),
                (b"x-frame-options", b"DENY")]
JSON_HEADERS = [(b"content-type", b"application/json"), *NO_STORE]

_STYLE = ("<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;"
          "padding:0 1rem}code{word-break:break-all;background:#eee;padding:.2rem}</style>")


def page(title: str, body: str) -> bytes:
    """A whole page; ``title`` and ``body`` are markup the caller has escaped."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width'><title>{title}</title>{_STYLE}"
            f"</head><body><h1>{title}</h1>{body}</body></html>").encode()


def confirm_page(title: str, text: str, button: str, action: str, token: str) -> bytes:
    """The link's page: one button posting ``token`` to ``action`` in the form's body."""
    return page(title, (
        f"<p>{text}</p><form method=post action='{action}'>"
        f"<input type=hidden name=token value='{html.escape(token, quote=True)}'>"
        f"<button type=submit>{button}</button></form>"))


def query_token(req: Request) -> str | None:
    """The ``token`` of the link's query string (the GET)."""
    return dict(parse_qsl(req.target.partition("?")[2])).get("token")


def is_form(req: Request) -> bool:
    """Posted by the page's button (a form), not by a client sending JSON."""
    return (req.header(b"content-type") or b"").startswith(b"application/x-www-form-urlencoded")


def posted_token(req: Request) -> str | None:
    """The ``token`` of the POST: the page's form field, or a JSON ``{"token": ...}``."""
    if not is_form(req):
        return json_body(req, ("token",)).get("token")
    if len(req.body) > MAX_FORM:
        raise v.ValidationError("body", f"larger than {MAX_FORM} bytes")
    try:
        return dict(parse_qsl(req.body.decode("ascii"))).get("token")
    except UnicodeDecodeError:
        raise v.ValidationError("body", "not a form") from None
