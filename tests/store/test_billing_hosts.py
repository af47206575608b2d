"""Wallet debits from several hosts at once on PostgreSQL: two PostgresStore instances (two
"hosts", each with its own pool and writers) flush batches for the same wallets concurrently.

Exactly once and never from a stale balance: the balance is the opening top-up minus every
charge, one ledger row per record, no ref twice, every row's balance_after the running sum.
"""
from __future__ import annotations

import contextlib
import time

import anyio
import asyncpg
import pytest

from postgres_server import pg_dsn, pg_server  # noqa: F401  (fixtures)
from kraken.accounts import service
from kraken.billing import wallet
from kraken.billing.guard import BillingGuard
from kraken.billing.plans import PlanBook
from kraken.store.postgres import PostgresStore
from kraken.store.errors import StoreError
from kraken.store.record import RequestRecord

pytestmark = pytest.mark.anyio

OPENING = 10**12


def rec(rid: str, customer: str, micros: int) -> RequestRecord:
    return RequestRecord(
        ts=time.time(), request_id=rid, customer_id=customer, model_requested="m",
        model_dispatched="m", provider="p", prompt_tokens=3, completion_tokens=4, cached_tokens=0,
        reasoning_tokens=0, latency_ms=1.0, ttfb_ms=None, task_type="chat",
        cost_usd=micros / 1e6, kraken_fee_usd=None, fallback_used=False, error_type=None,
        status=200)


async def flush(store: PostgresStore, guard: BillingGuard, batch: list[RequestRecord]) -> int:
    """What the meter's writer does with one batch."""
    inserted = await store.insert_records(batch, guard.in_batch)
    guard.committed()
    return inserted


async def check_ledger(dsn: str, wallets: dict[str, int], records: int) -> None:
    """balance == opening - charges == SUM(ledger) for each wallet; running sums; no dupes."""
    conn = await asyncpg.connect(dsn)
    try:
        for wallet_id, expected in wallets.items():
            balance = await conn.fetchval(
                "SELECT balance_micros FROM wallets WHERE wallet_id = $1", wallet_id)
            total = await conn.fetchval(
                "SELECT SUM(amount_micros) FROM wallet_transactions WHERE wallet_id = $1", wallet_id)
            assert balance == total == expected, wallet_id
            running = 0
            for row in await conn.fetch("SELECT amount_micros, balance_after_micros FROM "
                                        "wallet_transactions WHERE wallet_id = $1 ORDER BY id",
                                        wallet_id):
                running += row["amount_micros"]
                assert row["balance_after_micros"] == running
        debits = await conn.fetchval(
            "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'usage_debit'")
        refs = await conn.fetchval(
            "SELECT COUNT(DISTINCT ref) FROM wallet_transactions WHERE kind = 'usage_debit'")
        stored = await conn.fetchval("SELECT COUNT(*) FROM requests")
        assert debits == refs == stored == records
    finally:
        await conn.close()


async def test_two_hosts_flushing_interleaved_batches_debit_one_wallet_exactly_once(pg_dsn):
    hosts = [await PostgresStore.open(pg_dsn, pool_size=3) for _ in range(2)]
    try:
        await wallet.top_up(hosts[0], "shared", OPENING, "opening")
        await wallet.top_up(hosts[1], "other", OPENING, "opening-other")
        charges = {"shared": 0, "other": 0}
        batches: list[list[RequestRecord]] = []
        for b in range(24):
            batch = [rec(f"req-{b}-{i}", "shared" if i % 3 else "other", 1 + (b * 7 + i) % 90)
                     for i in range(150)]
            batches.append(batch)
            for r in batch:
                charges[r.customer_id] += round(r.cost_usd * 1e6)

        async def writer(host: PostgresStore, mine: list[list[RequestRecord]]) -> None:
            guard = BillingGuard(PlanBook())  # one writer = one guard, as in a serving process
            for batch in mine:
                assert await flush(host, guard, batch) == len(batch)
            # a journal replay of everything this writer wrote: nothing new, nothing debited
            for batch in mine:
                assert await flush(host, guard, batch) == 0

        async with anyio.create_task_group() as tg:
            for w in range(4):  # two writers per host, every batch on another writer
                tg.start_soon(writer, hosts[w % 2], batches[w::4])
        # one host replays what the other host wrote (a shared journal must never double-bill)
        guard = BillingGuard(PlanBook())
        for batch in batches[:4]:
            assert await flush(hosts[1], guard, batch) == 0
        await check_ledger(pg_dsn, {w: OPENING - c for w, c in charges.items()},
                           sum(map(len, batches)))
        usage = await hosts[0].fetch_all(
            "SELECT customer_id, tokens, spend_micros FROM usage_monthly ORDER BY customer_id")
        assert [(u[0], u[2]) for u in usage] == sorted(charges.items())
        assert sum(u[1] for u in usage) == 7 * sum(map(len, batches))
    finally:
        for host in hosts:
            await host.close()


async def test_a_batch_waits_for_the_wallet_another_host_holds_and_then_reads_its_balance(pg_dsn):
    """Host A's batch holds the wallet (hook done, not committed); host B's batch for the same
    wallet is seen waiting on that lock, and after A commits, B's rows start from A's balance."""
    a = await PostgresStore.open(pg_dsn, pool_size=2)
    b = await PostgresStore.open(pg_dsn, pool_size=2)
    watcher = await asyncpg.connect(pg_dsn)
    try:
        await wallet.top_up(a, "w", 1_000_000, "opening")
        release, a_holds = anyio.Event(), anyio.Event()
        guard_a, guard_b = BillingGuard(PlanBook()), BillingGuard(PlanBook())

        async def held_hook(tx, records):
            await guard_a.in_batch(tx, records)
            a_holds.set()
            await release.wait()

        async def host_a():
            await a.insert_records([rec(f"a-{i}", "w", 100) for i in range(50)], held_hook)
            guard_a.committed()

        async def host_b():
            await flush(b, guard_b, [rec(f"b-{i}", "w", 10) for i in range(50)])

        async with anyio.create_task_group() as tg:
            tg.start_soon(host_a)
            await a_holds.wait()
            tg.start_soon(host_b)
            with anyio.fail_after(10):
                while not await watcher.fetchval(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'kraken' "
                        "AND wait_event_type = 'Lock'"):
                    await anyio.sleep(0.01)
            release.set()
        await check_ledger(pg_dsn, {"w": 1_000_000 - 50 * 100 - 50 * 10}, 100)
        rows = await watcher.fetch("SELECT ref, balance_after_micros FROM wallet_transactions "
                                   "WHERE kind = 'usage_debit' ORDER BY id")
        assert [r["ref"][0] for r in rows] == ["a"] * 50 + ["b"] * 50
        assert rows[50]["balance_after_micros"] == 1_000_000 - 50 * 100 - 10
        assert guard_b.balance_micros("w") == 1_000_000 - 50 * 100 - 50 * 10
    finally:
        await watcher.close()
        await a.close()
        await b.close()


async def test_refresh_sees_a_top_up_that_commits_after_a_later_numbered_debit(pg_dsn):
    """Ids are taken at insert, not at commit: a top-up holding id N commits after another host's
    batch (ids above N) was already seen by a refresh; the next refresh still sees the top-up."""
    a = await PostgresStore.open(pg_dsn, pool_size=2)
    b = await PostgresStore.open(pg_dsn, pool_size=2)
    try:
        await wallet.top_up(a, "slow", 1, "open-slow")
        await wallet.top_up(a, "busy", 10**9, "open-busy")
        guard = BillingGuard(PlanBook())
        await guard.refresh(a)
        inserted, release = anyio.Event(), anyio.Event()

        async def slow_top_up():
            async with a.transaction() as tx:
                await wallet.apply_in(tx, "slow", "top_up", 5_000_000, "late-payment")
                inserted.set()
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_top_up)
            await inserted.wait()
            await flush(b, BillingGuard(PlanBook()), [rec(f"busy-{i}", "busy", 5) for i in range(20)])
            await guard.refresh(a)  # sees the batch's higher ids, not the uncommitted top-up
            assert guard.balance_micros("busy") == 10**9 - 100
            assert guard.balance_micros("slow") == 1
            release.set()
        await guard.refresh(a)
        assert guard.balance_micros("slow") == 5_000_001
    finally:
        await a.close()
        await b.close()


async def _refresh_while_locked(guard: BillingGuard, store: PostgresStore, dsn: str,
                                table: str) -> None:
    """One refresh while another session holds ``table`` locked (a maintenance window, an
    operator's long transaction): the read of it times out, a failure like a server restart."""
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            await other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            with contextlib.suppress(StoreError):  # run() logs it and tries again
                await guard.refresh(store)
    finally:
        await other.close()


async def test_a_refresh_that_failed_once_still_reads_customer_plans_afterwards(pg_dsn):
    """Plans of customers whose keys carry none (config-file keys) come from the refresh: a
    failed read of customers is retried at the next one, never turned off for good."""
    store = await PostgresStore.open(pg_dsn, pool_size=2, statement_timeout_ms=300)
    try:
        cid = (await service.create_customer(store, "planned@example.com", "P", plan="free")).id
        guard = BillingGuard(PlanBook.from_mapping({"free": {}, "pro": {}}))
        await guard.refresh(store)
        assert guard.plan_for(cid).name == "free"
        await _refresh_while_locked(guard, store, pg_dsn, "customers")
        await service.update_customer(store, cid, plan="pro")
        await guard.refresh(store)
        assert guard.plan_for(cid).name == "pro"
    finally:
        await store.close()


async def test_a_refresh_that_failed_once_still_loads_key_budgets_afterwards(pg_dsn):
    """A failed read of the budgeted keys is retried at the next refresh: the budgets stay
    enforced from the snapshot, not only for keys a request happens to ask about."""
    store = await PostgresStore.open(pg_dsn, pool_size=2, statement_timeout_ms=300)
    try:
        cid = (await service.create_customer(store, "budget@example.com", "B")).id
        key = (await service.create_key(store, cid, token_budget=10, rounds=4)).key
        await flush(store, BillingGuard(PlanBook()),
                    [rec(f"spent-{i}", cid, 5)._replace(key_id=key.id) for i in range(3)])
        guard = BillingGuard(PlanBook())
        await _refresh_while_locked(guard, store, pg_dsn, "api_keys")
        await guard.refresh(store)
        assert guard.key_budgets.used(key.id) == (21, 15)
    finally:
        await store.close()
