"""Records in → committed, no HTTP: the meter's writer with billing wired as app.py wires it.

A real store - SqliteStore (WAL) in a temp dir, and with ``--postgres DSN`` (an empty database)
or ``--postgres-temp`` (a throwaway local server started by tests/postgres_server.py, which runs
with fsync and synchronous_commit off, as for tests) also a PostgresStore, measured one after the
other in the same run - a real Meter + Journal, the real BillingGuard as the
batch hook (``meter.billing = billing``) with its refresh loop, and the BYOK change poll on
the writer's connection, as in a serving process. Customers: some prepaid (topped-up wallets),
some postpaid with monthly caps; some keys with lifetime budgets. One producer task pushes
records the way the hot path does (``reserve()``, ``record()``, ``billing.note()``), keeping
the queue as full as ``queue_max`` allows, and the figure is records committed per second end
to end (first push to last commit). The run is bounded by ``--records`` and ``--seconds``.

    .venv/bin/python bench/writer_bench.py [--records 200000] [--seconds 30] [--batch-max 500]
                                           [--no-billing] [--random-ids]
                                           [--postgres DSN | --postgres-temp] [--postgres-only]

At the end the bench checks what it wrote: one row per record, balance == SUM(ledger) for
every wallet, ``usage_monthly`` equal to the sums over ``requests``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import anyio

from kraken.accounts import apikeys, service
from kraken.accounts.byok_cache import ByokCache
from kraken.billing import wallet
from kraken.billing.guard import BillingGuard
from kraken.billing.plans import Plan, PlanBook
from kraken.config import MeterConfig
from kraken.gateway.call import new_request_id
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.store.interface import Store
from kraken.store.record import RequestRecord
from kraken.store.sqlite import SqliteStore

PREPAID, POSTPAID = 8, 24
"""Customers of each kind; every customer has two keys, one of them with budgets."""


def plans() -> PlanBook:
    return PlanBook({
        "pre": Plan("pre", prepaid=True),
        "capped": Plan("capped", monthly_token_cap=10**12, monthly_spend_cap_usd=10**6),
    }, default="capped")


async def accounts(store: Store) -> list[tuple[str, str]]:
    """Customers, wallets and keys; returns (customer id, key id) pairs to draw records from."""
    pairs = []
    for i in range(PREPAID + POSTPAID):
        prepaid = i < PREPAID
        cus = await service.create_customer(store, f"c{i}@bench.example",
                                            plan="pre" if prepaid else "capped")
        if prepaid:
            await wallet.top_up(store, cus.id, 10**12, f"bench-top-up-{i}")
        plain = await apikeys.create_key(store, cus.id, rounds=4)
        budgeted = await apikeys.create_key(store, cus.id, rounds=4, token_budget=10**12,
                                            spend_budget_usd=10**6)
        pairs += [(cus.id, plain.key.id), (cus.id, budgeted.key.id)]
    return pairs


def request_id(random_ids: bool) -> str:
    """Kraken's own ids (time in ms, then random: kraken/gateway/call.py), or wholly random ones
    of the same shape (req_ + 24 hex, as before 2026-12) to show what the time prefix buys."""
    return "req_" + os.urandom(12).hex() if random_ids else new_request_id()


def records(n: int, pairs: list[tuple[str, str]], random_ids: bool = False) -> list[RequestRecord]:
    """Built before the clock starts: the bench measures the writer, not record building."""
    rng = random.Random(13)
    now = time.time()
    out = []
    for i in range(n):
        customer, key = pairs[rng.randrange(len(pairs))]
        failed = i % 50 == 0
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 800)
        out.append(RequestRecord(
            ts=now + i * 1e-5, request_id=request_id(random_ids), customer_id=customer,
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


_MONTH = {"sqlite": "strftime('%Y-%m', ts, 'unixepoch')",
          "postgres": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM')"}


async def check(store: Store, backend: str, pushed: int, billed: bool) -> list[str]:
    """What must hold after the run; returns the problems found (none expected)."""
    problems = []
    rows = (await store.fetch_all("SELECT COUNT(*) FROM requests"))[0][0]
    if rows != pushed:
        problems.append(f"{rows} rows for {pushed} records")
    for wallet_id, bal, total in await store.fetch_all(
            "SELECT w.wallet_id, w.balance_micros, SUM(t.amount_micros) FROM wallets w"
            " JOIN wallet_transactions t USING (wallet_id) GROUP BY w.wallet_id, w.balance_micros"):
        if bal != total:
            problems.append(f"wallet {wallet_id}: balance {bal} != ledger {total}")
    if not billed:
        return problems
    monthly = {(c, m): (t, s) for c, m, t, s in await store.fetch_all(
        "SELECT customer_id, month, tokens, spend_micros FROM usage_monthly")}
    for c, m, t in await store.fetch_all(
            f"SELECT customer_id, {_MONTH[backend]},"
            " SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0))"
            " FROM requests GROUP BY 1, 2"):
        if monthly.get((c, m), (None,))[0] != t:
            problems.append(f"usage_monthly {c} {m}: {monthly.get((c, m))} tokens != {t}")
    return problems


@contextlib.contextmanager
def postgres_temp() -> Iterator[str]:
    """A throwaway local PostgreSQL (tests/postgres_server.py); yields an empty database's DSN."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgres_server import postgres_server

    with postgres_server() as server:
        yield server.create_database("writer_bench")


@contextlib.asynccontextmanager
async def opened(backend: str, target: str) -> AsyncIterator[Store]:
    if backend == "sqlite":
        store: Any = await SqliteStore.open(target)
    else:
        from kraken.store.postgres import PostgresStore

        store = await PostgresStore.open(target)
    try:
        yield store
    finally:
        await store.close()


async def run(args: argparse.Namespace, backend: str, target: str, tmp: Path) -> None:
    """One measured run on one backend; prints its figures."""
    async with opened(backend, target) as store:
        pairs = await accounts(store)
        recs = records(args.records, pairs, args.random_ids)
        # The prepared records stay alive all run: frozen, the collector's full passes no
        # longer walk them (50-65 ms a pass at 200,000 records, read as the writer's stall).
        # A serving process holds only its queue; app.py freezes what start made the same way.
        gc.collect()
        gc.freeze()
        billing = BillingGuard(plans())
        await billing.refresh(store)
        cfg = MeterConfig(queue_max=args.queue_max, batch_max=args.batch_max,
                          flush_interval_ms=args.flush_interval_ms)
        meter = Meter(store, Journal(tmp / f"journal-{backend}"), cfg)
        meter.billing = None if args.no_billing else billing
        byok = ByokCache(store, None, poll_interval_s=0.25)
        async with anyio.create_task_group() as tg:
            await tg.start(meter.run)
            tg.start_soon(billing.run, store, 5.0)
            await tg.start(byok.run)
            worst = [0.0]
            tg.start_soon(lag, worst)
            start, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
            pushed = await produce(meter, billing, recs, time.monotonic() + args.seconds)
            while meter.depth:
                await anyio.sleep(0.001)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            main_cpu = time.thread_time() - main_cpu
            tg.cancel_scope.cancel()
        await meter.close()
        problems = await check(store, backend, pushed, not args.no_billing)
        gc.unfreeze()  # the next backend's run freezes its own
    print(f"[{backend}] records committed: {pushed} in {elapsed:.2f} s = "
          f"{pushed / elapsed:,.0f} records/s (batch_max {args.batch_max}, queue_max "
          f"{args.queue_max}, {PREPAID} prepaid + {POSTPAID} postpaid customers, {len(pairs)} keys"
          f"{', billing off' if args.no_billing else ''}{', random ids' if args.random_ids else ''})")
    print(f"[{backend}] process CPU (all threads): {cpu / pushed * 1e6:.1f} us per record "
          f"(steadier than records/s on a shared machine; the PostgreSQL server's CPU not included)")
    print(f"[{backend}] of which the event-loop thread (journal, billing, the writer's Python): "
          f"{main_cpu / pushed * 1e6:.1f} us, other threads (the driver's): "
          f"{(cpu - main_cpu) / pushed * 1e6:.1f} us per record")
    print(f"[{backend}] longest event-loop stall: {worst[0] * 1000:.1f} ms")
    print(f"[{backend}] checks:", "ok" if not problems else "; ".join(problems[:5]))


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="writer-bench-") as tmp, contextlib.ExitStack() as stack:
        dsn = args.postgres or (stack.enter_context(postgres_temp()) if args.postgres_temp else None)
        if dsn is None or not args.postgres_only:
            await run(args, "sqlite", str(Path(tmp) / "kraken.db"), Path(tmp))
        if dsn is not None:
            await run(args, "postgres", dsn, Path(tmp))


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
    p.add_argument("--random-ids", action="store_true",
                   help="wholly random request ids (same shape) instead of Kraken's time-first ones")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--postgres", metavar="DSN",
                        help="also measure a PostgresStore on this (empty) database, after SQLite")
    target.add_argument("--postgres-temp", action="store_true",
                        help="also measure PostgreSQL on a throwaway local server "
                             "(tests/postgres_server.py: fsync and synchronous_commit off)")
    p.add_argument("--postgres-only", action="store_true", help="skip the SQLite run")
    anyio.run(main, p.parse_args())
