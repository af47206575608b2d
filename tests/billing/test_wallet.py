"""The wallet ledger: micro-dollar amounts, immutable rows, balance == sum, idempotent refs,
usage debits applied by the batch writer exactly once (journal replay included). Every test
that touches a database runs once per backend (SQLite, PostgreSQL: tests/billing/conftest.py)."""
from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from postgres_server import raw_execute

from kraken.billing import wallet
from kraken.billing.guard import BillingGuard, MonthlyTokenCapReached
from kraken.billing.plans import PlanBook
from kraken.config import MeterConfig
from kraken.meter.journal import Journal
from kraken.store.record import RequestRecord
from kraken.meter.writer import Meter
from kraken.store.errors import StoreError

pytestmark = pytest.mark.anyio


def record(i: int, customer: str | None = "cus_a", cost: float | None = 0.001,
           fee: float | None = 0.00005, ts: float | None = None) -> RequestRecord:
    import time

    return RequestRecord(
        ts=time.time() if ts is None else ts, request_id=f"req_{i:06d}", customer_id=customer,
        model_requested="m", model_dispatched="m", provider="p", prompt_tokens=10,
        completion_tokens=5, cached_tokens=0, reasoning_tokens=0, latency_ms=1.0, ttfb_ms=1.0,
        task_type="chat", cost_usd=cost, kraken_fee_usd=fee, fallback_used=False,
        error_type=None, status=200)


@pytest.fixture
async def store(backend):
    s = await backend.open()
    yield s
    await s.close()


async def ledger(backend, wallet_id: str) -> tuple[int, int, list[tuple[int, int]]]:
    """(materialised balance, SUM of amounts, [(amount, balance_after)] oldest first), read
    through another store on the same database."""
    db = await backend.open()
    try:
        bal = await db.fetch_all(backend.sql("SELECT balance_micros FROM wallets WHERE wallet_id = ?"),
                                 (wallet_id,))
        total = (await db.fetch_all(backend.sql(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM wallet_transactions WHERE wallet_id = ?"),
            (wallet_id,)))[0][0]
        rows = await db.fetch_all(backend.sql(
            "SELECT amount_micros, balance_after_micros FROM wallet_transactions"
            " WHERE wallet_id = ? ORDER BY id"), (wallet_id,))
    finally:
        await db.close()
    return (bal[0][0] if bal else 0), int(total), rows


@pytest.mark.parametrize("text, micros", [
    ("25", 25_000_000), ("12.50", 12_500_000), ("0.000001", 1), (0.1, 100_000), ("-3.5", -3_500_000)])
def test_usd_to_micros_is_exact(text, micros):
    assert wallet.usd_to_micros(text) == micros


@pytest.mark.parametrize("bad", ["0.0000001", "abc", "nan", "inf", True])
def test_usd_to_micros_refuses_sub_micro_and_non_numbers(bad):
    with pytest.raises(wallet.WalletError, match="amount_usd"):
        wallet.usd_to_micros(bad)


def test_usage_is_cost_plus_fee_rounded_half_even_to_micros():
    # 0.001 + 0.00005 USD = 1050 µ$
    assert wallet.usage_micros(record(1)) == 1050
    # 0.0000025 USD = 2.5 µ$ -> 2 (half-even); 0.0000035 -> 4
    assert wallet.usage_micros(record(2, cost=0.0000025, fee=None)) == 2
    assert wallet.usage_micros(record(3, cost=0.0000035, fee=None)) == 4
    assert wallet.usage_micros(record(4, cost=None, fee=None)) == 0


def test_usage_micros_equals_the_decimal_sum_of_the_values_for_any_floats():
    """The float shortcut never differs from summing the values' decimal forms and rounding
    half-even: random prices, values landing exactly on (or a hair beside) half a micro-dollar,
    large, negative, zero and non-finite values."""
    import random
    from decimal import ROUND_HALF_EVEN, Decimal

    def exact(cost, fee):
        total = sum((Decimal(repr(v)) for v in (cost, fee) if v), Decimal(0))
        return int((total * 10**6).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    rng = random.Random(7)
    values = [None, 0.0, -0.0, 1e-7, 5e-7, 1.5e-6, 2.5e-6, 0.0000035, 999.9999995, 1e3, 2e3,
              1e12, -0.0000025, 0.1, 0.2, 0.3]
    values += [rng.uniform(0, 0.5) for _ in range(3000)]
    values += [rng.randrange(10**7) / 10**7 for _ in range(3000)]  # ties at 7 decimals
    values += [(rng.randrange(10**6) + 0.5) / 10**6 for _ in range(1000)]
    values += [float.fromhex(h) for h in ("0x1.0c6f7a0b5ed8dp-21", "0x1.4f8b588e368f1p-20")]
    for _ in range(20000):
        cost, fee = rng.choice(values), rng.choice(values)
        assert wallet.usage_micros(record(0, cost=cost, fee=fee)) == exact(cost, fee), (cost, fee)
    for bad in (float("nan"), float("inf")):
        with pytest.raises((ValueError, ArithmeticError)):  # as before the shortcut
            wallet.usage_micros(record(0, cost=bad, fee=None))
        with pytest.raises((ValueError, ArithmeticError)):  # beside a float fee too
            wallet.usage_micros(record(0, cost=0.001, fee=bad))
    for cost, fee in ((0, 0.25), (2, None), (None, 3), (1, 0.0000025), (None, 0.0)):  # ints
        assert wallet.usage_micros(record(0, cost=cost, fee=fee)) == exact(cost, fee), (cost, fee)


async def test_top_up_is_idempotent_by_ref(store, backend):
    first, created = await wallet.top_up(store, "cus_a", 5_000_000, "pay_1")
    again, created_again = await wallet.top_up(store, "cus_a", 5_000_000, "pay_1")
    assert created and not created_again and again == first
    assert await wallet.balance(store, "cus_a") == 5_000_000
    with pytest.raises(wallet.RefConflict):
        await wallet.top_up(store, "cus_a", 7_000_000, "pay_1")
    with pytest.raises(wallet.RefConflict):
        await wallet.top_up(store, "cus_b", 5_000_000, "pay_1")
    assert await ledger(backend, "cus_a") == (5_000_000, 5_000_000, [(5_000_000, 5_000_000)])


@pytest.mark.parametrize("kind, amount, message", [
    ("top_up", -5, "positive"), ("usage_debit", 5, "negative"), ("bonus", 5, "kind must be"),
    ("top_up", 0, "non-zero"), ("top_up", 10**16, "larger than")])
async def test_bad_transactions_are_refused_naming_the_field(store, kind, amount, message):
    with pytest.raises(wallet.WalletError, match=message):
        await wallet.apply(store, "cus_a", kind, amount, "r1")


async def test_adjustment_never_overdraws_but_usage_may(store, backend):
    await wallet.top_up(store, "cus_a", 1_000, "t1")
    with pytest.raises(wallet.Overdraft, match="0.001000 USD available"):
        await wallet.apply(store, "cus_a", "adjustment", -1_001, "adj1")
    await wallet.apply(store, "cus_a", "refund", -1_000, "refund1")
    async with store.transaction() as tx:
        await wallet.debit_usage(tx, [record(1)])
    bal, total, rows = await ledger(backend, "cus_a")
    assert bal == total == -1_050
    assert rows == [(1_000, 1_000), (-1_000, 0), (-1_050, -1_050)]


INSERT_TX = ("INSERT INTO wallet_transactions"
             " (wallet_id, kind, amount_micros, ref, ts, balance_after_micros)")


@pytest.mark.parametrize("sql, message", [
    ("UPDATE wallets SET balance_micros = balance_micros + 1", "only by a new wallet transaction"),
    ("UPDATE wallet_transactions SET amount_micros = 1", "immutable"),
    ("DELETE FROM wallet_transactions", "are kept"),
    ("DELETE FROM wallets", "are kept"),
    ("INSERT INTO wallets (wallet_id, balance_micros, created_ts) VALUES ('x', 5, 0)", "starts empty"),
    (INSERT_TX + " VALUES ('cus_a', 'top_up', 10, 'r9', 0, 999)", "balance plus the amount"),
    (INSERT_TX + " VALUES ('cus_a', 'adjustment', -10, 'r9', 0, -5)", "insufficient"),
])
async def test_the_schema_forbids_changing_the_ledger_behind_its_back(store, backend, sql, message):
    await wallet.top_up(store, "cus_a", 5, "t1")
    refused = sqlite3.IntegrityError if backend.name == "sqlite" else asyncpg.IntegrityConstraintViolationError
    with pytest.raises(refused, match=message):
        await raw_execute(backend, sql)
    assert (await ledger(backend, "cus_a"))[:2] == (5, 5)


async def test_erasure_removes_a_wallet_only_through_its_tombstone(store, backend):
    await wallet.top_up(store, "cus_a", 5, "t1")
    await wallet.top_up(store, "cus_b", 7, "t2")
    async with store.transaction() as tx:
        assert await wallet.erase_wallet(tx, "cus_a") == 2
    assert await ledger(backend, "cus_a") == (0, 0, [])
    assert (await ledger(backend, "cus_b"))[:2] == (7, 7)
    with pytest.raises(StoreError):  # cus_b has no tombstone: still protected
        async with store.transaction() as tx:
            await tx.execute("DELETE FROM wallet_transactions WHERE wallet_id = 'cus_b'")


async def test_a_multi_row_insert_checks_every_row_against_the_running_balance(store, backend):
    """One statement, several rows of one wallet (what a batch's debits are on PostgreSQL):
    every balance_after must be the running sum; one wrong row refuses the whole statement."""
    await wallet.top_up(store, "cus_a", 100, "t1")
    rows = "('cus_a', 'usage_debit', -10, 'd1', 0, {0}), ('cus_a', 'usage_debit', -20, 'd2', 0, {1})"
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.execute(INSERT_TX + " VALUES " + rows.format(90, 80))  # second row stale
    assert (await ledger(backend, "cus_a"))[:2] == (100, 100)
    async with store.transaction() as tx:
        await tx.execute(INSERT_TX + " VALUES " + rows.format(90, 70))
    assert await ledger(backend, "cus_a") == (70, 70, [(100, 100), (-10, 90), (-20, 70)])


async def test_transactions_page_newest_first(store):
    for i in range(5):
        await wallet.top_up(store, "cus_a", 1 + i, f"t{i}")
    page = await wallet.transactions(store, "cus_a", limit=2)
    assert [t.ref for t in page] == ["t4", "t3"]
    older = await wallet.transactions(store, "cus_a", limit=10, before_id=page[-1].id)
    assert [t.ref for t in older] == ["t2", "t1", "t0"]
    assert page[0].balance_after_micros == 1 + 2 + 3 + 4 + 5


async def test_writer_debits_in_the_batch_transaction_and_replay_does_not_debit_twice(backend, tmp_path):
    store = await backend.open()
    guard = BillingGuard(PlanBook())
    meter = Meter(store, Journal(tmp_path / "j"), MeterConfig(batch_max=3))
    meter.billing = guard
    try:
        await wallet.top_up(store, "cus_a", 10_000, "t0")
        await guard.refresh(store)
        records = [record(i) for i in range(7)] + [record(100, customer=None), record(101, cost=None, fee=None)]
        for rec in records:
            assert meter.reserve()
            meter.record(rec)
        await meter.close()
        # Replaying every record again (a crash after commit, before the segment was deleted).
        again = Meter(store, Journal(tmp_path / "j2"), MeterConfig(batch_max=4))
        again.billing = guard
        for rec in records:
            assert again.reserve()
            again.record(rec)
        await again.close()
        assert await wallet.balance(store, "cus_a") == 10_000 - 7 * 1050
        assert guard.balance_micros("cus_a") == 10_000 - 7 * 1050
        tokens, spend = guard.usage("cus_a")
        assert (tokens, spend) == (8 * 15, 7 * 1050)  # the unpriced request's tokens count too
        refs = {r[0] for r in await store.fetch_all(
            "SELECT ref FROM wallet_transactions WHERE kind = 'usage_debit'")}
        month = await store.fetch_all(
            "SELECT tokens, spend_micros FROM usage_monthly WHERE customer_id = 'cus_a'")
    finally:
        await store.close()
    bal, total, rows = await ledger(backend, "cus_a")
    assert bal == total == 10_000 - 7 * 1050 and len(rows) == 1 + 7
    assert refs == {f"req_{i:06d}" for i in range(7)}
    assert month == [(8 * 15, 7 * 1050)]


async def test_a_customer_without_a_wallet_gets_no_ledger_rows_only_monthly_usage(store, backend):
    """Postpaid spend lives in usage_monthly and requests: no wallet is made for a customer
    never credited, and a wallet credited later is debited from then on, never for the past."""
    guard = BillingGuard(PlanBook())
    assert await store.insert_records([record(i, customer="cus_p") for i in range(4)],
                                      guard.in_batch) == 4
    guard.committed()
    assert await store.fetch_all("SELECT wallet_id FROM wallets") == []
    assert await store.fetch_all("SELECT ref FROM wallet_transactions") == []
    assert await store.fetch_all(
        "SELECT tokens, spend_micros FROM usage_monthly WHERE customer_id = 'cus_p'") == [
        (4 * 15, 4 * 1050)]
    await wallet.top_up(store, "cus_p", 5_000, "credit-1")
    assert await store.insert_records([record(i, customer="cus_p") for i in range(3, 6)],
                                      guard.in_batch) == 2  # req_000003 was stored already
    guard.committed()
    bal, total, rows = await ledger(backend, "cus_p")
    assert bal == total == 5_000 - 2 * 1050 and len(rows) == 3
    assert guard.usage("cus_p") == (6 * 15, 6 * 1050)


async def test_refresh_picks_up_top_ups_written_by_another_process(store, backend):
    guard = BillingGuard(PlanBook())
    await guard.refresh(store)
    assert guard.balance_micros("cus_a") == 0
    other = await backend.open()
    try:
        await wallet.top_up(other, "cus_a", 3_000_000, "cli-1")
    finally:
        await other.close()
    await guard.refresh(store)
    assert guard.balance_micros("cus_a") == 3_000_000


async def test_refresh_reads_balances_month_usage_and_plans_written_by_another_host(store, backend):
    """What the guard's refresh reads, written through another store (another host): balances
    changed since the last refresh, this month's usage, the customers' plans."""
    from kraken.accounts import service
    from kraken.billing.plans import Plan

    book = PlanBook({"small": Plan("small", monthly_token_cap=50)})
    guard = BillingGuard(book)
    await guard.refresh(store)
    other = await backend.open()
    try:
        cus = await service.create_customer(other, "refresh@example.com", plan="small")
        await wallet.top_up(other, cus.id, 2_000_000, "other-1")
        writer = BillingGuard(PlanBook())
        await other.insert_records([record(i, customer=cus.id) for i in range(3)], writer.in_batch)
        writer.committed()
    finally:
        await other.close()
    guard.check(cus.id)  # not refreshed yet: no usage, default plan
    await guard.refresh(store)
    assert guard.balance_micros(cus.id) == 2_000_000 - 3 * 1050
    assert guard.usage(cus.id) == (3 * 15, 3 * 1050)
    assert guard.plan_for(cus.id).name == "small"
    guard.check(cus.id)
    guard.note(record(9, customer=cus.id))  # 60 tokens of the 50 allowed this month
    with pytest.raises(MonthlyTokenCapReached):
        guard.check(cus.id)


async def test_a_monthly_cap_reached_last_month_lets_the_client_in_when_its_retry_after_ends(store):
    """The 429 tells the client to retry at the 1st (UTC); retrying then, before the guard's
    next refresh, must not meet last month's usage again with a Retry-After of a whole month."""
    import calendar

    from kraken.billing.plans import Plan

    reset = calendar.timegm((2031, 1, 1, 0, 0, 0))
    now = [reset - 60.0]
    guard = BillingGuard(PlanBook({"small": Plan("small", monthly_token_cap=50)}, "small"),
                         clock=lambda: now[0])
    await guard.refresh(store)
    await store.insert_records([record(i, ts=now[0]) for i in range(4)], guard.in_batch)
    guard.committed()  # 60 tokens of the 50 allowed in December
    with pytest.raises(MonthlyTokenCapReached) as refused:
        guard.check("cus_a")
    now[0] += refused.value.retry_after_s  # the client waits as told, then retries
    guard.check("cus_a")  # January: nothing used yet
    await guard.refresh(store)
    guard.check("cus_a")
