"""Records in → committed, no HTTP: the meter's writer with billing wired as app.py wires it.

A real SqliteStore (WAL) in a temp dir, a real Meter + Journal, the real BillingGuard as the
batch hook (``meter.billing = billing``) with its refresh loop, and the BYOK change poll on
the writer's connection, as in a serving process. Customers: some prepaid (topped-up wallets),
some postpaid with monthly caps; some keys with lifetime budgets. One producer task pushes
records the way the hot path does (``reserve()``, ``record()``, ``billing.note()``), keeping
the queue as full as ``queue_max`` allows, and the figure is records committed per second end
to end (first push to last commit). The run is bounded by ``--records`` and ``--seconds``.

    .venv/bin/python bench/writer_bench.py [--records 200000] [--seconds 30] [--batch-max 500]
                                           [--no-billing] [--ordered-ids]

At the end the bench checks what it wrote: one row per record, balance == SUM(ledger) for
every wallet, ``usage_monthly`` equal to the sums over ``requests``.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

from kraken.accounts import apikeys, service
from kraken.accounts.byok_cache import ByokCache
from kraken.billing import wallet
from kraken.billing.guard import BillingGuard
from kraken.billing.plans import Plan, PlanBook
from kraken.config import MeterConfig
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.store.record import RequestRecord
from kraken.store.sqlite import SqliteStore

PREPAID, POSTPAID = 8, 24
"""Customers of each kind; every customer has two keys, one of them with budgets."""


def plans() -> PlanBook:
    return PlanBook({
        "pre": Plan("pre", prepaid=True),
        "capped": Plan("capped", monthly_token_cap=10**12, monthly_spend_cap_usd=10**6),
    }, default="capped")


async def accounts(store: SqliteStore) -> list[tuple[str, str]]:
    """Customers, wallets and keys; returns (customer id, key id) pairs to draw records from."""
    pairs = []
    for i in range(PREPAID + POSTPAID):
        prepaid = i < PREPAID
        cus = await service.create_customer(store, f"c{i}@bench.example", plan="pre" if prepaid else "capped")
        if prepaid:
            await wallet.top_up(store, cus.id, 10**12, f"bench-top-up-{i}")
        plain = await apikeys.create_key(store, cus.id, rounds=4)
        budgeted = await apikeys.create_key(store, cus.id, rounds=4, token_budget=10**12,
                                            spend_budget_usd=10**6)
        pairs += [(cus.id, plain.key.id), (cus.id, budgeted.key.id)]
    return pairs


def request_id(ts: float, ordered: bool) -> str:
    """Kraken's id shape (req_ + 24 hex): random as today, or time-ordered (µs, then random)."""
    return f"req_{int(ts * 1e6):014x}{os.urandom(5).hex()}" if ordered else "req_" + os.urandom(12).hex()


def records(n: int, pairs: list[tuple[str, str]], ordered_ids: bool = False) -> list[RequestRecord]:
    """Built before the clock starts: the bench measures the writer, not record building."""
    rng = random.Random(13)
    now = time.time()
    out = []
    for i in range(n):
        customer, key = pairs[rng.randrange(len(pairs))]
        failed = i % 50 == 0
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 800)
        out.append(RequestRecord(
            ts=now + i * 1e-5, request_id=request_id(now + i * 1e-5, ordered_ids), customer_id=customer,
            model_requested="gpt-4o-mini", model_dispatched="gpt-4o-mini", provider="openai",
            prompt_tokens=None if failed else prompt, completion_tokens=None if failed else completion,
            cached_tokens=0, reasoning_tokens=None, latency_ms=rng.uniform(50, 900),
            ttfb_ms=rng.uniform(10, 200), task_type="chat",
            cost_usd=None if failed else (prompt * 0.15 + completion * 0.6) / 1e6,
            kraken_fee_usd=None if failed else (prompt * 0.15 + completion * 0.6) / 2e7,
            fallback_used=False, error_type="upstream_error" if failed else None,
            status=502 if failed else 200, key_id=key))
    return out


async def produce(meter: Meter, billing: BillingGuard, recs: list[RequestRecord],
                  deadline: float) -> int:
    """Push like the hot path: reserve, record, note; wait a little whenever the queue is full.

    Yields to the event loop every 32 records, as requests ending one by one would."""
    i = 0
    while i < len(recs) and time.monotonic() < deadline:
        while i < len(recs) and meter.reserve():
            rec = recs[i]
            meter.record(rec)
            billing.note(rec)
            i += 1
            if not i % 32:
                await anyio.sleep(0)
        await anyio.sleep(0.0005)
    return i


async def lag(worst: list[float]) -> None:
    """The longest the event loop was held (the hot path's extra latency): 1 ms ticks."""
    while True:
        start = time.perf_counter()
        await anyio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - start - 0.001)


def check(db: Path, pushed: int, billed: bool) -> list[str]:
    """What must hold after the run; returns the problems found (none expected)."""
    problems = []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        if rows != pushed:
            problems.append(f"{rows} rows for {pushed} records")
        for wallet_id, bal, total in conn.execute(
                "SELECT w.wallet_id, w.balance_micros, SUM(t.amount_micros) FROM wallets w"
                " JOIN wallet_transactions t USING (wallet_id) GROUP BY w.wallet_id"):
            if bal != total:
                problems.append(f"wallet {wallet_id}: balance {bal} != ledger {total}")
        if not billed:
            return problems
        monthly = dict(((c, m), (t, s)) for c, m, t, s in conn.execute(
            "SELECT customer_id, month, tokens, spend_micros FROM usage_monthly"))
        for c, m, t in conn.execute(
                "SELECT customer_id, strftime('%Y-%m', ts, 'unixepoch'),"
                " SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0))"
                " FROM requests GROUP BY 1, 2"):
            if monthly.get((c, m), (None,))[0] != t:
                problems.append(f"usage_monthly {c} {m}: {monthly.get((c, m))} tokens != {t}")
    return problems


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="writer-bench-") as tmp:
        db = Path(tmp) / "kraken.db"
        store = await SqliteStore.open(str(db))
        pairs = await accounts(store)
        recs = records(args.records, pairs, args.ordered_ids)
        billing = BillingGuard(plans())
        await billing.refresh(store)
        cfg = MeterConfig(queue_max=args.queue_max, batch_max=args.batch_max,
                          flush_interval_ms=args.flush_interval_ms)
        meter = Meter(store, Journal(Path(tmp) / "journal"), cfg)
        meter.billing = None if args.no_billing else billing
        byok = ByokCache(store, None, poll_interval_s=0.25)
        async with anyio.create_task_group() as tg:
            await tg.start(meter.run)
            tg.start_soon(billing.run, store, 5.0)
            await tg.start(byok.run)
            worst = [0.0]
            tg.start_soon(lag, worst)
            start, cpu = time.perf_counter(), time.process_time()
            pushed = await produce(meter, billing, recs, time.monotonic() + args.seconds)
            while meter.depth:
                await anyio.sleep(0.001)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            tg.cancel_scope.cancel()
        await meter.close()
        await store.close()
        problems = check(db, pushed, not args.no_billing)
    print(f"records committed: {pushed} in {elapsed:.2f} s = {pushed / elapsed:,.0f} records/s "
          f"(batch_max {args.batch_max}, queue_max {args.queue_max}, "
          f"{PREPAID} prepaid + {POSTPAID} postpaid customers, {len(pairs)} keys"
          f"{', billing off' if args.no_billing else ''}{', ordered ids' if args.ordered_ids else ''})")
    print(f"process CPU (all threads): {cpu / pushed * 1e6:.1f} us per record "
          f"(steadier than records/s on a shared machine)")
    print(f"longest event-loop stall: {worst[0] * 1000:.1f} ms")
    print("checks:", "ok" if not problems else "; ".join(problems[:5]))


if __name__ == "__main__":
    defaults = MeterConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--batch-max", type=int, default=defaults.batch_max)
    p.add_argument("--queue-max", type=int, default=defaults.queue_max)
    p.add_argument("--flush-interval-ms", type=int, default=defaults.flush_interval_ms)
    p.add_argument("--no-billing", action="store_true",
                   help="no batch hook (no wallet debits, monthly usage, key budgets): the floor")
    p.add_argument("--ordered-ids", action="store_true",
                   help="time-ordered request ids instead of random ones (same length)")
    anyio.run(main, p.parse_args())
