"""The reports repository: usage statistics over ``requests`` (admin API, ``kraken usage``, the
usage page, the account API), one row per group, computed by the database.

Percentiles are nearest-rank (the value at rank ceil(p * n)), with window functions, so no request
rows are loaded into Python. Counts of conditions are ``SUM(CASE WHEN ... THEN 1 ELSE 0 END)``,
which both backends read the same. What differs is a ``Dialect``: placeholders, the day and
time-bucket expressions, how a list of keys is bound, whether ``requests`` has ``key_id``, and how
a row comes back (PostgreSQL's sums of BIGINT are NUMERIC: made ints here).

Reached as ``store.reports``; methods take what they run on (``db``) first. Group and filter
expressions come only from the fixed tables below: nothing from a client is spliced into SQL.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

GROUP_EXPRESSIONS: dict[str, str] = {
    "all": "''",
    "model": "COALESCE(model_requested, '')",
    "customer": "COALESCE(customer_id, '')",
    "provider": "COALESCE(provider, '')",
    "key": "COALESCE(key_id, '')",
}
"""Groups both dialects spell alike; "day" and "bucket" are the dialect's."""
USAGE_GROUPS = ("day", "model", "customer", "provider", "key")
"""``usage``'s group_by names (the admin API's and ``kraken usage``'s)."""

UNPRICED = ("SUM(CASE WHEN cost_usd IS NULL AND (prompt_tokens IS NOT NULL "
            "OR completion_tokens IS NOT NULL) THEN 1 ELSE 0 END)")
"""Requests that reported usage but have no price (a failure reports none)."""
ERRORS = "SUM(CASE WHEN error_type IS NOT NULL OR status >= 400 THEN 1 ELSE 0 END)"
"""Failed requests, for every report alike: an error status, or a failure after a 200 head
(a stream cut or failed mid-way keeps the status the client saw and names the error)."""

_USAGE = """
SELECT g, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
       COALESCE(SUM(cost_usd), 0), COALESCE(SUM(kraken_fee_usd), 0), {unpriced},
       {errors},
       MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN latency_ms END),
       MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN latency_ms END)
FROM (SELECT {group} AS g, prompt_tokens, completion_tokens, cost_usd, kraken_fee_usd,
             error_type, status, latency_ms,
             ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY latency_ms) AS rn,
             COUNT(*) OVER (PARTITION BY {group}) AS n
      FROM requests WHERE {where}) AS r
GROUP BY g ORDER BY g LIMIT {limit}"""

_STATS = """
SELECT g, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
       COALESCE(SUM(cost_usd), 0), {unpriced}, {errors},
       SUM(CASE WHEN {fallback} THEN 1 ELSE 0 END),
       MAX(CASE WHEN rl = (50 * n + 99) / 100 THEN latency_ms END),
       MAX(CASE WHEN rl = (95 * n + 99) / 100 THEN latency_ms END),
       MAX(CASE WHEN ttfb_ms IS NOT NULL AND rt = (50 * nt + 99) / 100 THEN ttfb_ms END),
       MAX(CASE WHEN ttfb_ms IS NOT NULL AND rt = (95 * nt + 99) / 100 THEN ttfb_ms END)
FROM (SELECT g, prompt_tokens, completion_tokens, cost_usd, status, error_type, fallback_used,
             latency_ms, ttfb_ms,
             ROW_NUMBER() OVER (PARTITION BY g ORDER BY latency_ms) AS rl,
             COUNT(*) OVER (PARTITION BY g) AS n,
             ROW_NUMBER() OVER (PARTITION BY g ORDER BY ttfb_ms IS NULL, ttfb_ms) AS rt,
             COUNT(ttfb_ms) OVER (PARTITION BY g) AS nt
      FROM (SELECT {group} AS g, prompt_tokens, completion_tokens, cost_usd, status,
                   fallback_used, latency_ms, ttfb_ms, error_type
            FROM requests WHERE {where}) AS f) AS r
GROUP BY g ORDER BY g LIMIT 2000"""

USAGE_COLUMNS = ("group", "requests", "prompt_tokens", "completion_tokens", "cost_usd",
                 "kraken_fee_usd", "unpriced", "errors", "p50_latency_ms", "p95_latency_ms")
"""The order of a ``usage`` row."""
STAT_COLUMNS = ("group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced",
                "errors", "fallbacks", "p50_latency_ms", "p95_latency_ms", "p50_ttfb_ms",
                "p95_ttfb_ms")
"""The order of a ``stats`` row."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one backend changes."""

    mark: Callable[[int], str]
    """The n-th placeholder (1-based)."""
    day: str
    """The UTC day of ``ts`` as 'YYYY-MM-DD', from ``ts`` truncated to whole seconds first:
    each backend's date functions round fractions (SQLite to the millisecond, PostgreSQL to
    the microsecond), which would put a request at 23:59:59.9996 in the next day."""
    bucket: Callable[[int], str]
    """``ts`` rounded down (truncated, never rounded to nearest) to a multiple of the given
    seconds, as an integer: a request at 12:59:59.9 is in the 12:00 hour."""
    fallback: str
    """True where the request fell back."""
    key_column: str
    """One row per ``requests`` column name."""
    in_list: Callable[[int, int], str]
    """``(first placeholder number, how many values)`` -> the right side of ``key_id IN``/``=``."""
    bind_list: Callable[[Sequence[str]], list]
    """The parameters ``in_list`` expects for the values."""
    row: Callable[[tuple], tuple]


class ReportsRepository:
    """Usage statistics, one statement per call; see the module docstring."""

    __slots__ = ("d",)

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    async def has_key_column(self, db: Any) -> bool:
        """Whether request records name their key (migration 6)."""
        return any(r[0] == "key_id" for r in await db.fetch_all(self.d.key_column))

    def _group(self, name: str, bucket_s: int | None) -> str:
        if name == "day":
            return self.d.day
        if name == "bucket":
            if not isinstance(bucket_s, int) or bucket_s <= 0:
                raise ValueError("bucket_s must be a positive number of seconds")
            return self.d.bucket(bucket_s)
        return GROUP_EXPRESSIONS[name]

    def _where(self, filters: Sequence[tuple[str, str, Any]], key_ids: Sequence[str] | None,
               ) -> tuple[str, list]:
        """``filters``: (column or group expression, operator, value) from this module's
        callers, None values left out; ``key_ids``: requests of any of these keys (an empty
        list matches none)."""
        where, params = ["1 = 1"], []
        for column, op, value in filters:
            if value is not None:
                params.append(float(value) if column == "ts" else value)
                where.append(f"{column} {op} {self.d.mark(len(params))}")
        if key_ids is not None:
            values = list(key_ids) or [""]
            where.append(f"key_id {self.d.in_list(len(params) + 1, len(values))}")
            params.extend(self.d.bind_list(values))
        return " AND ".join(where), params

    async def usage(self, db: Any, group_by: str, *, customer: str | None = None,
                    key: str | None = None, model: str | None = None, start: float | None = None,
                    end: float | None = None, after: str | None = None,
                    limit: int = 10_000) -> list[tuple]:
        """Rows in ``USAGE_COLUMNS`` order, by group (``USAGE_GROUPS``); only the groups
        after ``after`` (a page's last group), at most ``limit``."""
        if group_by not in USAGE_GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(USAGE_GROUPS)}")
        group = self._group(group_by, None)
        where, params = self._where((("customer_id", "=", customer), ("key_id", "=", key),
                                     ("model_requested", "=", model), ("ts", ">=", start),
                                     ("ts", "<", end), (group, ">", after)), None)
        sql = _USAGE.format(group=group, where=where, unpriced=UNPRICED,
                            errors=ERRORS, limit=int(limit))
        return [self.d.row(tuple(r)) for r in await db.fetch_all(sql, params)]

    async def stats(self, db: Any, group: str, *, bucket_s: int | None = None,
                    since: float | None = None, customer: str | None = None,
                    key_ids: Sequence[str] | None = None) -> list[tuple]:
        """Rows in ``STAT_COLUMNS`` order: ``group`` "all", "model", "key", "customer",
        "provider", "day" or "bucket" (``bucket_s`` seconds); requests from ``since``, of
        ``customer``, of any of ``key_ids`` (each filter only when given)."""
        where, params = self._where((("ts", ">=", since), ("customer_id", "=", customer)),
                                    key_ids)
        sql = _STATS.format(group=self._group(group, bucket_s), where=where, unpriced=UNPRICED,
                            errors=ERRORS, fallback=self.d.fallback)
        return [self.d.row(tuple(r)) for r in await db.fetch_all(sql, params)]


def _marks(first: int, n: int) -> str:
    return "IN ({})".format(", ".join("?" * n))


SQLITE = Dialect(
    mark=lambda _n: "?",
    day="strftime('%Y-%m-%d', CAST(ts AS INTEGER), 'unixepoch')",
    bucket=lambda b: f"CAST(ts / {int(b)} AS INTEGER) * {int(b)}",
    fallback="fallback_used != 0",
    key_column="SELECT name FROM pragma_table_info('requests')",
    in_list=_marks,
    bind_list=list,
    row=lambda r: r,
)
SQLITE_REPORTS = ReportsRepository(SQLITE)
"""SQLite's reports repository (``SqliteStore.reports``)."""
