"""The account API's usage (``GET /v1/account/usage``) and its series (``/usage/series``) agree
with the operator's reports, on SQLite and on PostgreSQL: a real Kraken on each backend, request
records placed at time-bucket edges (a fraction of a second before and after a minute and a
quarter hour, and half a bucket in, where rounding to nearest would move them).

The same requests are counted by the admin usage report (``GET /admin/usage``) and the admin
usage page's series (``GET /usage/data``); every figure must match, and each series bucket
must hold exactly the records whose timestamp, truncated, falls in it.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from adminkit import BEARER, Member, admin_doc
from harness import free_port, http, running_kraken, running_mock
from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)
from kraken.accounts import service
from kraken.store.record import RequestRecord

pytestmark = pytest.mark.anyio

OFFSETS = (0.0, 0.0004, 0.4, 0.5, 0.6, 29.5, 30.5, 59.4, 59.6, 59.9996)
"""Seconds after a quarter-hour edge, and the same distances before it (the non-zero ones)."""
BUCKETS = {1: 60, 24: 900}
"""The series' bucket for ``hours`` (the usage page's choice: at most 200 points)."""


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@dataclass
class World:
    port: int
    admin_port: int
    solo: Member
    org_admin: Member
    org_dev: Member
    stamps: list[float]

    async def account(self, who: Member, path: str) -> Any:
        reply = await http(self.port, "GET", path, b"", {"authorization": f"Bearer {who.secret}"})
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()

    async def admin(self, path: str) -> Any:
        reply = await http(self.admin_port, "GET", path, b"", BEARER)
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()


async def _person(store, label: str, org: str | None = None, role: str | None = None) -> Member:
    cid = (await service.create_customer(store, f"{label}-{uuid.uuid4().hex[:8]}@example.com")).id
    if org is not None and role is not None:
        await service.add_member(store, org, cid, role)
    made = await service.create_key(store, cid, org_id=org, rounds=4)
    return Member(cid, made.key.id, made.plaintext)


def _records(who: Member, stamps: list[float], model: str, tag: str) -> list[RequestRecord]:
    return [RequestRecord(
        ts=ts, request_id=f"{tag}-{i:03d}-{uuid.uuid4().hex[:8]}", customer_id=who.customer_id,
        model_requested=model, model_dispatched=model, provider="mockai", prompt_tokens=10 + i,
        completion_tokens=i, cached_tokens=0, reasoning_tokens=None, latency_ms=1.0 + i,
        ttfb_ms=0.5, task_type="chat", cost_usd=0.0001 * (i + 1), kraken_fee_usd=0.0,
        fallback_used=False, error_type="upstream_error" if i % 4 == 1 else None,
        status=502 if i % 4 == 2 else 200, key_id=who.key_id)  # failed mid-stream, or before
        for i, ts in enumerate(stamps)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"usage-{request.param}")
    store_doc: dict[str, Any] = {"path": str(tmp / "kraken.db")}
    target = store_doc["path"]
    if request.param == "postgres":
        target = request.getfixturevalue("pg_server").create_database()
        store_doc = {"backend": "postgres", "dsn": target, "pool_size": 4,
                     "journal_dir": str(tmp / "journal")}
    edge = math.floor((time.time() - 1200) / 900) * 900
    stamps = sorted({edge + d for d in OFFSETS} | {edge - d for d in OFFSETS if d})
    async with running_mock() as mock:
        doc = admin_doc(tmp, mock.port, free_port(), store=store_doc)
        async with running_kraken(doc) as k:
            store = await StoreBackend(request.param, target).open()
            try:
                solo = await _person(store, "solo")
                owner = (await service.create_customer(store, "own@example.com")).id
                org = (await service.create_organisation(store, "Acme", owner)).id
                org_admin = await _person(store, "adm", org, "admin")
                org_dev = await _person(store, "dev", org, "developer")
                foreign = await _person(store, "foreign")
                rows = (_records(solo, stamps, "mock-gpt", "solo")
                        + _records(solo, stamps[::3], "other", "solo2")
                        + _records(org_admin, stamps[::2], "mock-gpt", "adm")
                        + _records(org_dev, stamps[1::2], "mock-gpt", "dev")
                        + _records(foreign, stamps, "mock-gpt", "foreign"))
                assert await store.insert_records(rows) == len(rows)
                yield World(k.port, doc["admin"]["port"], solo, org_admin, org_dev, stamps)
            finally:
                await store.close()


def _figures(group: dict[str, Any]) -> tuple:
    return (group["group"], group["requests"], group["prompt_tokens"],
            group["completion_tokens"], group["cost_usd"], group["errors"])


async def test_a_customers_usage_is_the_admin_reports_figures_for_that_customer(world):
    mine = await world.account(world.solo, "/v1/account/usage")
    report = await world.admin(f"/admin/usage?customer={world.solo.customer_id}&group_by=model")
    assert mine["scope"] == "customer"
    assert [_figures(g) for g in mine["by_model"]] == [_figures(g) for g in report["data"]]
    assert mine["total"]["requests"] == len(world.stamps) + len(world.stamps[::3])
    assert mine["total"]["prompt_tokens"] == sum(g["prompt_tokens"] for g in report["data"])
    assert mine["total"]["errors"] == sum(g["errors"] for g in report["data"]) > 0


async def test_an_organisations_usage_is_the_admin_reports_figures_for_its_keys(world):
    mine = await world.account(world.org_admin, "/v1/account/usage")
    report = await world.admin("/admin/usage?group_by=key")
    org_keys = {world.org_admin.key_id, world.org_dev.key_id}
    assert mine["scope"] == "organisation"
    assert [_figures(g) for g in mine["by_key"]] == [
        _figures(g) for g in report["data"] if g["group"] in org_keys]
    assert mine["total"]["requests"] == len(world.stamps)  # the two keys split the stamps


@pytest.mark.parametrize("group_by", ["key", "model", "customer"])
async def test_the_admin_reports_pages_are_the_whole_report(world, group_by):
    """Walked one group a page (``?limit=1&after=``), the report is the same, on both backends."""
    whole = await world.admin(f"/admin/usage?group_by={group_by}")
    assert whole["has_more"] is False and len(whole["data"]) > 1
    pages, cursor = [], ""
    while True:
        page = await world.admin(f"/admin/usage?group_by={group_by}&limit=1{cursor}")
        pages += page["data"]
        if not page["has_more"]:
            break
        cursor = f"&after={quote(page['next_after'], safe='')}"
    assert pages == whole["data"]


def _counts(series: dict[str, list], column: str = "requests") -> dict[int, int]:
    return {t: n for t, n in zip(series["t"], series[column]) if n is not None}


@pytest.mark.parametrize("hours", sorted(BUCKETS))
async def test_the_series_puts_each_record_in_the_bucket_it_started_in(world, hours):
    bucket = BUCKETS[hours]
    mine = await world.account(world.solo, f"/v1/account/usage/series?hours={hours}")
    page = await world.admin(f"/usage/data?hours={hours}&customer={world.solo.customer_id}")
    expected: dict[int, int] = {}
    for ts in world.stamps + world.stamps[::3]:
        start = math.floor(ts / bucket) * bucket
        expected[start] = expected.get(start, 0) + 1
    assert mine["bucket_s"] == page["bucket_s"] == bucket
    assert _counts(mine["series"]) == _counts(page["series"]) == expected
    assert _counts(mine["series"], "errors") == _counts(page["series"], "errors")


async def test_an_organisations_series_counts_its_keys_requests(world):
    mine = await world.account(world.org_admin, "/v1/account/usage/series?hours=1")
    own = await world.account(world.org_dev, "/v1/account/usage/series?hours=1")
    assert (mine["scope"], own["scope"]) == ("organisation", "customer")
    assert sum(_counts(mine["series"]).values()) == len(world.stamps)
    assert sum(_counts(own["series"]).values()) == len(world.stamps[1::2])
