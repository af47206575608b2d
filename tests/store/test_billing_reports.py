"""The reports repository (admin usage, the usage page's statistics) gives the same answer on
PostgreSQL as on SQLite for the same request rows: every group, every filter, every query.

The same records go into a fresh SQLite file and a fresh PostgreSQL database; each query is
asked of both through the admin functions that serve it, and one answer is also checked against
what Python computes from the records (counts, tokens, nearest-rank percentiles).
"""
from __future__ import annotations

import math
import time

import pytest

from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)
from kraken.admin import page, usage
from kraken.store.record import RequestRecord
from kraken.store.reports_sql import USAGE_GROUPS

pytestmark = pytest.mark.anyio

DAY = 86_400
T0 = 1_700_000_000.0 - 1_700_000_000.0 % DAY  # a UTC midnight


def rows() -> list[RequestRecord]:
    out = []
    for i in range(90):
        unpriced = i % 17 == 5
        failed = i % 11 == 3
        out.append(RequestRecord(
            ts=T0 + (i % 3) * DAY + i * 97.0, request_id=f"req-{i:04d}",
            customer_id=None if i % 13 == 0 else f"cus-{i % 3}",
            model_requested=None if i % 19 == 0 else ("gpt-4o", "claude", "llama")[i % 4 % 3],
            model_dispatched="x", provider=("openai", "anthropic")[i % 2],
            prompt_tokens=None if failed else 10 + i, completion_tokens=None if failed else 2 * i,
            cached_tokens=0, reasoning_tokens=None, latency_ms=float((i * 37) % 101) + 0.5,
            ttfb_ms=None if i % 7 == 0 else float((i * 13) % 53), task_type="chat",
            cost_usd=None if (unpriced or failed) else 0.000125 * (i + 1),
            kraken_fee_usd=None if (unpriced or failed) else 0.00001 * (i + 1),
            fallback_used=i % 5 == 0,
            error_type="upstream_error" if failed or i % 31 == 4 else None,  # 4, 35, 66: mid-stream
            status=502 if failed else (429 if i % 23 == 7 else 200),
            key_id=None if i % 29 == 0 else f"key-{i % 4}"))
    return out


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def stores(pg_server, tmp_path_factory):
    """(sqlite store, postgres store) holding the same rows."""
    backends = [StoreBackend("sqlite", str(tmp_path_factory.mktemp("reports") / "k.db")),
                StoreBackend("postgres", pg_server.create_database())]
    opened = [await b.open() for b in backends]
    for store in opened:
        assert await store.insert_records(rows()) == 90
    yield opened
    for store in opened:
        await store.close()


async def both(stores, call):
    lite, pg = [await call(s) for s in stores]
    assert lite == pg
    return lite


async def test_has_key_column(stores):
    assert await both(stores, usage.has_key_column) is True


@pytest.mark.parametrize("group_by", USAGE_GROUPS)
@pytest.mark.parametrize("filters", [
    {}, {"customer": "cus-1"}, {"key": "key-2"}, {"model": "claude"},
    {"start": T0 + DAY, "end": T0 + 2 * DAY + 5000}])
async def test_admin_usage_is_the_same_on_both_backends(stores, group_by, filters):
    q = usage.UsageQuery(group_by=group_by, **filters)
    answer = await both(stores, lambda s: usage.usage(s, q))
    assert answer and sum(g["requests"] for g in answer) == sum(
        1 for r in rows() if _matches(r, filters))


def _matches(r: RequestRecord, f: dict) -> bool:
    return ((f.get("customer") is None or r.customer_id == f["customer"])
            and (f.get("key") is None or r.key_id == f["key"])
            and (f.get("model") is None or r.model_requested == f["model"])
            and (f.get("start") is None or r.ts >= f["start"])
            and (f.get("end") is None or r.ts < f["end"]))


async def test_usage_by_day_matches_python(stores):
    answer = await both(stores, lambda s: usage.usage(s, usage.UsageQuery(group_by="day")))
    assert [g["group"] for g in answer] == [
        time.strftime("%Y-%m-%d", time.gmtime(T0 + d * DAY))
        for d in range(3)]
    for d, group in enumerate(answer):
        mine = [r for r in rows() if int((r.ts - T0) // DAY) == d]
        assert group["requests"] == len(mine)
        assert group["prompt_tokens"] == sum(r.prompt_tokens or 0 for r in mine)
        lat = sorted(r.latency_ms for r in mine)
        assert group["p50_latency_ms"] == lat[math.ceil(0.5 * len(lat)) - 1]
        assert group["p95_latency_ms"] == lat[math.ceil(0.95 * len(lat)) - 1]
        unpriced = [r for r in mine if r.cost_usd is None and r.prompt_tokens is not None]
        assert group["unpriced"] == len(unpriced) and (group["cost_usd"] is None) == bool(unpriced)


@pytest.mark.parametrize("group", ["all", "model", "key", "customer", "provider", "day"])
@pytest.mark.parametrize("scope", [
    {}, {"since": T0 + DAY}, {"customer": "cus-2"}, {"key_ids": ["key-1", "key-3"]},
    {"key_ids": []}])
async def test_page_stats_are_the_same_on_both_backends(stores, group, scope):
    answer = await both(stores, lambda s: page.group_stats(s, group, **scope))
    expected = [r for r in rows()
                if (scope.get("since") is None or r.ts >= scope["since"])
                and (scope.get("customer") is None or r.customer_id == scope["customer"])
                and ("key_ids" not in scope or r.key_id in scope["key_ids"])]
    assert sum(g["requests"] for g in answer) == len(expected)
    assert sum(g["fallbacks"] for g in answer) == sum(r.fallback_used for r in expected)
    assert sum(g["errors"] for g in answer) == sum(
        r.status >= 400 or r.error_type is not None for r in expected)


@pytest.mark.parametrize("bucket", [60, 3600, 86_400])
async def test_time_buckets_are_the_same_on_both_backends(stores, bucket):
    answer = await both(stores, lambda s: page.group_stats(s, "bucket", bucket_s=bucket,
                                                           since=T0 + 3000))
    assert all(g["group"] % bucket == 0 for g in answer)
    assert {g["group"] for g in answer} == {int(r.ts // bucket) * bucket for r in rows()
                                            if r.ts >= T0 + 3000}


EDGES = (0.0, 0.0004, 0.001, 0.4, 0.5, 0.6, 29.5, 30.5, 59.4, 59.6, 3599.9996)
"""Seconds from a UTC midnight, and the same distances below it (``T0 + DAY - d``): a record at
12:59:59.9996 is in the 12:00 hour, never the 13:00 one (no rounding to nearest, no rounding of
a fraction of a second by a date function)."""


def edge_rows() -> list[RequestRecord]:
    stamps = sorted({T0 + DAY + d for d in EDGES} | {T0 + DAY - d for d in EDGES if d})
    return [RequestRecord(
        ts=ts, request_id=f"edge-{i:03d}", customer_id="cus-edge", model_requested="m",
        model_dispatched="m", provider="p", prompt_tokens=1, completion_tokens=1,
        cached_tokens=0, reasoning_tokens=None, latency_ms=1.0, ttfb_ms=None, task_type="chat",
        cost_usd=0.001, kraken_fee_usd=0.0, fallback_used=False, error_type=None, status=200,
        key_id="key-edge") for i, ts in enumerate(stamps)]


@pytest.fixture(scope="module")
async def edge_stores(pg_server, tmp_path_factory):
    """(sqlite store, postgres store) holding only ``edge_rows``."""
    backends = [StoreBackend("sqlite", str(tmp_path_factory.mktemp("edges") / "k.db")),
                StoreBackend("postgres", pg_server.create_database())]
    opened = [await b.open() for b in backends]
    for store in opened:
        assert await store.insert_records(edge_rows()) == len(edge_rows())
    yield opened
    for store in opened:
        await store.close()


@pytest.mark.parametrize("bucket", [60, 300, 900, 3600, 21_600, 86_400])
async def test_a_record_at_a_bucket_edge_is_in_the_bucket_it_started_in(edge_stores, bucket):
    answer = await both(edge_stores, lambda s: page.group_stats(s, "bucket", bucket_s=bucket))
    expected: dict[int, int] = {}
    for r in edge_rows():
        start = math.floor(r.ts / bucket) * bucket
        expected[start] = expected.get(start, 0) + 1
    assert {g["group"]: g["requests"] for g in answer} == expected


async def test_a_record_a_fraction_before_midnight_is_in_the_day_before(edge_stores):
    answer = await both(edge_stores, lambda s: usage.usage(s, usage.UsageQuery(group_by="day")))
    before = sum(1 for r in edge_rows() if r.ts < T0 + DAY)
    assert [(g["group"], g["requests"]) for g in answer] == [
        (time.strftime("%Y-%m-%d", time.gmtime(T0)), before),
        (time.strftime("%Y-%m-%d", time.gmtime(T0 + DAY)), len(edge_rows()) - before)]
