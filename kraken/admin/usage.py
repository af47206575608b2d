"""Usage statistics over the ``requests`` table, for the admin API and ``kraken usage``.

Percentiles are nearest-rank (value at rank ceil(p * n)), computed inside the database with
window functions (``store.reports``, kraken/store/reports_sql.py), so no request rows are loaded
into Python; one row per group comes back.

Cost is known or unknown, never guessed: a request that reported usage for a model without
a price is recorded with ``cost_usd`` null and counted as ``unpriced``, and a group holding
one has ``cost_usd`` (and ``kraken_fee_usd``) null, not the sum of the rest. A failed
request reported no usage: it cost nothing and is not unpriced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kraken.admin.errors import invalid
from kraken.store.interface import Store
from kraken.store.reports_sql import USAGE_GROUPS

GROUPS: tuple[str, ...] = USAGE_GROUPS
"""group_by names; each backend's reports repository spells their SQL (kraken/store/)."""
MAX_GROUPS = 10_000

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


async def has_key_column(store: Store) -> bool:
    return await store.reports.has_key_column(store)


async def usage(store: Store, q: UsageQuery, *, after: str | None = None,
                limit: int = MAX_GROUPS) -> list[dict[str, Any]]:
    """One dict per group (``COLUMNS``), ordered by group: at most ``limit``, those after the
    group ``after``."""
    if q.group_by not in GROUPS:
        raise invalid("group_by", f"must be one of {', '.join(GROUPS)}")
    if (q.key is not None or q.group_by == "key") and not await has_key_column(store):
        raise invalid("key" if q.key is not None else "group_by",
                      "request records of this Kraken version do not name the key")
    rows = await store.reports.usage(store, q.group_by, customer=q.customer, key=q.key,
                                     model=q.model, start=q.start, end=q.end, after=after,
                                     limit=limit)
    out = []
    for g, n, pt, ct, cost, fee, unpriced, errors, p50, p95 in rows:
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
