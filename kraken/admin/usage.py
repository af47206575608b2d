"""Usage statistics over the ``requests`` table, for the admin API and ``kraken usage``.

Percentiles are nearest-rank (value at rank ceil(p * n)), computed inside SQLite with
window functions, so no request rows are loaded into Python; one row per group comes back.

Cost is known or unknown, never guessed: a request that reported usage for a model without
a price is recorded with ``cost_usd`` null and counted as ``unpriced``, and a group holding
one has ``cost_usd`` (and ``kraken_fee_usd``) null, not the sum of the rest. A failed
request reported no usage: it cost nothing and is not unpriced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kraken.admin.errors import invalid
from kraken.store.sqlite import SqliteStore

GROUPS: dict[str, str] = {
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
    "model": "COALESCE(model_requested, '')",
    "customer": "COALESCE(customer_id, '')",
    "provider": "COALESCE(provider, '')",
    "key": "COALESCE(key_id, '')",
}
"""group_by name -> SQL expression (a fixed table: nothing from the client is spliced in)."""
MAX_GROUPS = 10_000
UNPRICED_SQL = ("SUM(cost_usd IS NULL AND (prompt_tokens IS NOT NULL "
                "OR completion_tokens IS NOT NULL))")
"""Requests that reported usage but have no price (a failure reports none)."""

COLUMNS = ("group", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
           "kraken_fee_usd", "unpriced", "errors", "error_rate", "p50_latency_ms", "p95_latency_ms")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    customer: str | None = None
    key: str | None = None
    model: str | None = None
    group_by: str = "day"
    start: float | None = None
    end: float | None = None


async def has_key_column(store: SqliteStore) -> bool:
    cols = await store.fetch_all("SELECT name FROM pragma_table_info('requests')")
    return any(c[0] == "key_id" for c in cols)


async def usage(store: SqliteStore, q: UsageQuery) -> list[dict[str, Any]]:
    """One dict per group (``COLUMNS``), ordered by group."""
    if q.group_by not in GROUPS:
        raise invalid("group_by", f"must be one of {', '.join(GROUPS)}")
    if (q.key is not None or q.group_by == "key") and not await has_key_column(store):
        raise invalid("key" if q.key is not None else "group_by",
                      "request records of this Kraken version do not name the key")
    where, params = ["1 = 1"], []
    for column, value in (("customer_id", q.customer), ("key_id", q.key),
                          ("model_requested", q.model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if q.start is not None:
        where.append("ts >= ?")
        params.append(q.start)
    if q.end is not None:
        where.append("ts < ?")
        params.append(q.end)
    group = GROUPS[q.group_by]
    sql = f"""
        SELECT g, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
               COALESCE(SUM(cost_usd), 0), COALESCE(SUM(kraken_fee_usd), 0),
               {UNPRICED_SQL},
               SUM(error_type IS NOT NULL OR status >= 400),
               MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN latency_ms END),
               MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN latency_ms END)
        FROM (SELECT {group} AS g, prompt_tokens, completion_tokens, cost_usd, kraken_fee_usd,
                     error_type, status, latency_ms,
                     ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY latency_ms) AS rn,
                     COUNT(*) OVER (PARTITION BY {group}) AS n
              FROM requests WHERE {' AND '.join(where)})
        GROUP BY g ORDER BY g LIMIT {MAX_GROUPS}"""
    out = []
    for g, n, pt, ct, cost, fee, unpriced, errors, p50, p95 in await store.fetch_all(sql, params):
        out.append({"group": g, "requests": n, "prompt_tokens": pt, "completion_tokens": ct,
                    "total_tokens": pt + ct, "cost_usd": known_cost(cost, unpriced),
                    "kraken_fee_usd": known_cost(fee, unpriced), "unpriced": unpriced,
                    "errors": errors,
                    "error_rate": round(errors / n, 6) if n else 0.0,
                    "p50_latency_ms": p50, "p95_latency_ms": p95})
    return out


def known_cost(total: float, unpriced: int) -> float | None:
    """A group's summed cost, or None (unknown) when a request of it had no price."""
    return None if unpriced else round(total, 10)
