"""Cursor pages for the account API's lists: ``?limit=&after=`` in; ``data``, ``has_more`` and
``next_after`` (the ``after`` of the next page, null on the last) out, as the admin API pages
its lists (kraken/admin/paging.py, a layer above this one).

An organisation's admins list every member's keys: members times up to 1000 keys each. One
answer holds at most ``limit`` of them, so none grows with the organisation.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from kraken.accounts import service
from kraken.http.exchange import Request

DEFAULT_LIMIT = 100
MOST = 1000


def query(req: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters: 400 naming the first one not ``allowed``."""
    found = dict(parse_qsl(req.target.partition("?")[2], keep_blank_values=True))
    for name in found:
        if name not in allowed:
            raise service.ValidationError(name[:40], "unknown query parameter")
    return found


def limit(raw: str | None) -> int:
    """``?limit=``: an integer from 1 to ``MOST`` (``DEFAULT_LIMIT`` when absent)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MOST:
        raise service.ValidationError("limit", f"must be an integer between 1 and {MOST}")
    return int(raw)


def page(rows: list, size: int, cursor: Callable[[Any], str],
         render: Callable[[Any], Any]) -> dict[str, Any]:
    """The answer for ``rows``, fetched as up to ``size + 1``: the extra one only says that
    there is more, and is not shown."""
    more = len(rows) > size
    shown = rows[:size]
    return {"object": "list", "data": [render(r) for r in shown], "has_more": more,
            "next_after": cursor(shown[-1]) if more else None}
