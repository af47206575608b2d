"""Balance == sum of transactions under contention: several OS processes, each with several
tasks and its own store (SQLite connections, or PostgreSQL pools as several hosts would have),
top up, withdraw and debit usage on the same wallets at once. The prepaid wallet (top-ups and
withdrawals only) must never go below zero."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

PROCESSES = 4
TASKS = 3
ROUNDS = 40

WORKER = textwrap.dedent(r'''
    import asyncio, json, random, sys, time
    from kraken.billing import wallet
    from kraken.billing.guard import BillingGuard
    from kraken.billing.plans import PlanBook
    from kraken.store.record import RequestRecord
    from kraken.store.sqlite import SqliteStore

    db, proc = sys.argv[1], int(sys.argv[2])

    async def open_store():
        if db.startswith("postgresql://"):
            from kraken.store.postgres import PostgresStore
            return await PostgresStore.open(db, pool_size=2, statement_timeout_ms=60000)
        return await SqliteStore.open(db, busy_timeout_ms=60000)
    TASKS, ROUNDS = int(sys.argv[3]), int(sys.argv[4])

    def rec(rid, micros):
        return RequestRecord(ts=time.time(), request_id=rid, customer_id="mixed", model_requested="m",
            model_dispatched="m", provider="p", prompt_tokens=1, completion_tokens=1, cached_tokens=0,
            reasoning_tokens=0, latency_ms=1.0, ttfb_ms=None, task_type="chat",
            cost_usd=micros / 1e6, kraken_fee_usd=None, fallback_used=False, error_type=None, status=200)

    async def task(t, out):
        store = await open_store()
        guard = BillingGuard(PlanBook())
        rng = random.Random(proc * 100 + t)
        try:
            for i in range(ROUNDS):
                tag = f"p{proc}t{t}i{i}"
                for w in ("pre", "mixed"):
                    amount = rng.randint(1, 50)
                    _, created = await wallet.top_up(store, w, amount, f"top-{w}-{tag}")
                    # the same ref again (a webhook redelivery) must not credit twice
                    _, again = await wallet.top_up(store, w, amount, f"top-{w}-{tag}")
                    assert created and not again
                    out[w] += amount
                    take = rng.randint(1, 80)
                    try:
                        await wallet.apply(store, w, "adjustment", -take, f"adj-{w}-{tag}")
                        out[w] -= take
                        out["withdrawals"] += 1
                    except wallet.Overdraft:
                        out["refused"] += 1
                batch = [rec(f"req-{tag}-{k}", rng.randint(1, 40)) for k in range(3)]
                inserted = await store.insert_records(batch, guard.in_batch)
                guard.committed()
                # the same batch replayed (journal recovery) debits nothing more
                assert await store.insert_records(batch, guard.in_batch) == 0
                guard.committed()
                if inserted:
                    out["mixed"] -= sum(round(r.cost_usd * 1e6) for r in batch)
        finally:
            await store.close()

    async def main():
        out = {"pre": 0, "mixed": 0, "withdrawals": 0, "refused": 0}
        await asyncio.gather(*(task(t, out) for t in range(TASKS)))
        print(json.dumps(out))

    asyncio.run(main())
''')


@pytest.mark.anyio
async def test_balance_equals_sum_under_concurrent_processes(backend, tmp_path):
    db = backend.target
    # Create the schema once, so the processes race on data, not on migrations.
    await (await backend.open()).close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(db), str(p), str(TASKS), str(ROUNDS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for p in range(PROCESSES)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out))

    expected = {w: sum(r[w] for r in results) for w in ("pre", "mixed")}
    withdrawals = sum(r["withdrawals"] for r in results)
    assert withdrawals > 0 and sum(r["refused"] for r in results) > 0  # both paths exercised
    store = await backend.open()
    try:
        for w in ("pre", "mixed"):
            balance = (await store.fetch_all(backend.sql(
                "SELECT balance_micros FROM wallets WHERE wallet_id = ?"), (w,)))[0][0]
            total = (await store.fetch_all(backend.sql(
                "SELECT SUM(amount_micros) FROM wallet_transactions WHERE wallet_id = ?"), (w,)))[0][0]
            assert balance == total == expected[w], w
            running = 0
            for amount, after, kind in await store.fetch_all(backend.sql(
                    "SELECT amount_micros, balance_after_micros, kind FROM wallet_transactions"
                    " WHERE wallet_id = ? ORDER BY id"), (w,)):
                running += amount
                assert after == running  # every row's balance_after is the running sum
                if w == "pre":
                    assert after >= 0  # prepaid: never below zero, at any point in history
        debits = (await store.fetch_all(
            "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'usage_debit'"))[0][0]
        records = (await store.fetch_all("SELECT COUNT(*) FROM requests"))[0][0]
    finally:
        await store.close()
    assert debits == records == PROCESSES * TASKS * ROUNDS * 3


async def _prepaid_gateway_under_concurrent_requests_and_top_ups(tmp_path):
    import anyio
    import orjson

    from kraken.billing import wallet
    from kraken.store import SqliteStore
    from tests.harness import (
        auth_headers,
        db_rows,
        http,
        kraken_mapping,
        running_kraken,
        running_mock,
    )

    clients, per_request = 8, 2_100  # $0.002 cost + 5% fee, in micro-dollars
    body = orjson.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                         "mock": {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}})
    statuses: list[int] = []
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, wallet={"refresh_interval_s": 0.02},
                             prices={"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}},
                             plans={"default": "pre", "pre": {"prepaid": True}})
        async with running_kraken(doc) as k:
            other = await SqliteStore.open(str(k.db_path))
            try:
                async def client() -> None:
                    for _ in range(15):
                        r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
                        statuses.append(r.status)

                async def top_ups() -> None:
                    for i in range(10):
                        await wallet.top_up(other, "cust_1", 5 * per_request, f"topup-{i}")
                        await anyio.sleep(0.01)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(top_ups)
                    for _ in range(clients):
                        tg.start_soon(client)
            finally:
                await other.close()
        served = sum(1 for r in db_rows(k.db_path) if r["status"] == 200)
    return statuses, served, clients, per_request



@pytest.mark.anyio
async def test_prepaid_gateway_balance_is_the_sum_and_overshoot_is_bounded(tmp_path):
    statuses, served, clients, per_request = await _prepaid_gateway_under_concurrent_requests_and_top_ups(tmp_path)
    assert set(statuses) <= {200, 402} and 200 in statuses and 402 in statuses
    with sqlite3.connect(tmp_path / "kraken.db") as conn:
        balance = conn.execute("SELECT balance_micros FROM wallets WHERE wallet_id = 'cust_1'").fetchone()[0]
        total, low = conn.execute("SELECT SUM(amount_micros), MIN(balance_after_micros)"
                                  " FROM wallet_transactions WHERE wallet_id = 'cust_1'").fetchone()
        debits = conn.execute("SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'usage_debit'").fetchone()[0]
    assert balance == total == 10 * 5 * per_request - served * per_request
    assert debits == served
    # Usage counts against the balance as each request ends (before its batch is written), so
    # only requests already in flight when the money ran out - one per client - overdraw it.
    assert low >= -clients * per_request
