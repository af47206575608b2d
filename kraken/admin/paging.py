"""Cursor pages for the admin list routes: ``?limit=&after=`` in; ``data``, ``has_more`` and
``next_after`` (the ``after`` of the next page, null on the last) out.

Every list answers at most ``limit`` rows, so no answer grows with the deployment: a big one
would otherwise send megabytes in one reply and hold them in memory to build it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.admin import validate as val

DEFAULT_LIMIT = 100
MOST = 1000


def limit(raw: str | None, *, most: int = MOST, default: int = DEFAULT_LIMIT) -> int:
    """``?limit=``: an integer from 1 to ``most`` (``default`` when absent)."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise val.invalid("limit", f"must be an integer between 1 and {most}")
    return int(raw)


def page(rows: list, size: int, cursor: Callable[[Any], Any],
         render: Callable[[Any], Any]) -> dict[str, Any]:
    """The answer for ``rows``, fetched as up to ``size + 1``: the extra one only says that
    there is more, and is not shown."""
    more = len(rows) > size
    shown = rows[:size]
    return {"data": [render(r) for r in shown], "has_more": more,
            "next_after": cursor(shown[-1]) if more else None}
