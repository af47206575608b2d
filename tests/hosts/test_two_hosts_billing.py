"""Two hosts, one wallet, and failures under load: every request a client saw complete is in
PostgreSQL exactly once and debited exactly once, whichever host served it, whether a host is
killed (SIGKILL) or PostgreSQL restarts in the middle."""
from __future__ import annotations

import anyio
import h11
import pytest

from harness import running_mock
from hostkit import Host, chat, fetch, hosts, new_key, status_within
from postgres_server import pg_server  # noqa: F401  (fixture)
from redis_server import redis_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.anyio
PREPAID = {"plans": {"prepaid": {"prepaid": True}}, "wallet": {"refresh_interval_s": 0.2}}


async def stored_within(dsn: str, request_ids: set[str], seconds: float = 20.0) -> None:
    """Every id in ``request_ids`` reaches the requests table (polled)."""
    with anyio.fail_after(seconds):
        while True:
            got = {r["request_id"] for r in await fetch(
                dsn, "SELECT request_id FROM requests WHERE request_id = ANY($1::text[])",
                list(request_ids))}
            if got == request_ids:
                return
            await anyio.sleep(0.1)


async def load(targets: list[Host], secret: str, total: int, concurrency: int,
               on_done=None, statuses: dict[int, int] | None = None) -> set[str]:
    """``total`` requests over ``targets`` (round robin, skipping a host that refuses the
    connection); returns the request ids of those answered 200."""
    done: set[str] = set()
    sent = iter(range(total))

    async def worker() -> None:
        for i in sent:
            for attempt in range(len(targets)):
                host = targets[(i + attempt) % len(targets)]
                try:
                    reply = await chat(host, secret)
                except (OSError, TimeoutError, h11.RemoteProtocolError):
                    continue  # a killed host: the client's load balancer tries the next
                if statuses is not None:
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
                if reply.status == 200:
                    done.add(reply.headers["x-request-id"])
                    if on_done is not None:
                        await on_done(len(done))
                break

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return done


async def test_a_prepaid_wallet_is_debited_exactly_once_across_hosts(tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port,
                                             **PREPAID) as (a, b):
        cus = await a.admin.ok("POST", "/admin/customers",
                               {"email": "wallet@example.com", "plan": "prepaid"}, 201)
        cid = cus["id"]
        secret, _ = await new_key(a, cid)
        await status_within(b, secret, 402)  # an empty prepaid wallet is refused everywhere
        await a.admin.ok("POST", f"/admin/customers/{cid}/wallet",
                         {"amount_usd": "1.00", "ref": "opening"}, 201)
        await status_within(b, secret, 200)
        served = await load([a, b], secret, total=80, concurrency=8)
        await stored_within(dsn, served)
        # (the probes of status_within were served too: the database says what was charged;
        # the refused 402 probes are recorded, unpriced)
        charged = await fetch(dsn, "SELECT request_id FROM requests WHERE customer_id = $1 "
                                   "AND status = 200", cid)
        assert served <= {r["request_id"] for r in charged}
        with anyio.fail_after(20):
            while len(await fetch(dsn, "SELECT 1 FROM wallet_transactions WHERE wallet_id = $1 "
                                       "AND kind = 'usage_debit'", cid)) < len(charged):
                await anyio.sleep(0.1)
        ledger = await fetch(dsn, "SELECT ref, amount_micros FROM wallet_transactions "
                                  "WHERE wallet_id = $1 AND kind = 'usage_debit'", cid)
        assert sorted(r["ref"] for r in ledger) == sorted(r["request_id"] for r in charged)
        assert all(r["amount_micros"] < 0 for r in ledger)
        debited = -sum(r["amount_micros"] for r in ledger)
        balance = (await fetch(dsn, "SELECT balance_micros FROM wallets WHERE wallet_id = $1",
                               cid))[0]["balance_micros"]
        assert balance == 1_000_000 - debited
        for host in (a, b):
            shown = await host.admin.ok("GET", f"/admin/customers/{cid}/wallet")
            assert shown["balance_micros"] == balance


async def test_an_exhausted_wallet_is_refused_on_every_host_within_a_second(
        tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port,
                                             **PREPAID) as (a, b):
        cus = await a.admin.ok("POST", "/admin/customers",
                               {"email": "small@example.com", "plan": "prepaid"}, 201)
        cid = cus["id"]
        secret, _ = await new_key(b, cid)
        await b.admin.ok("POST", f"/admin/customers/{cid}/wallet",
                         {"amount_usd": "0.001", "ref": "small"}, 201)
        await status_within(a, secret, 200)
        with anyio.fail_after(20):  # spend it all on a only
            while (await chat(a, secret)).status == 200:
                pass
        await status_within(b, secret, 402)


async def test_sigkill_of_one_host_under_load_loses_no_completed_request(
        tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        cus = await a.admin.customer()
        secret, _ = await new_key(a, cus["id"])
        await status_within(b, secret, 200)

        async def kill_a_midway(n: int) -> None:
            if n == 60 and a.process.proc.poll() is None:
                a.process.kill()

        served = await load([a, b], secret, total=200, concurrency=8, on_done=kill_a_midway)
        assert a.process.proc.poll() is not None and len(served) >= 150
        await anyio.to_thread.run_sync(a.process.start, 60.0)  # replays its own journal
        await stored_within(dsn, served)
        ids = [r["request_id"] for r in await fetch(
            dsn, "SELECT request_id FROM requests WHERE customer_id = $1", cus["id"])]
        assert len(ids) == len(set(ids)) and served <= set(ids)


async def test_a_postgres_restart_under_load_loses_no_completed_request(
        tmp_path, dsn, redis_url, pg_server):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        cus = await a.admin.customer()
        secret, _ = await new_key(a, cus["id"])
        for host in (a, b):
            await status_within(host, secret, 200)  # cached: served while the database is away

        async def restart_midway(n: int) -> None:
            if n == 50:
                await anyio.to_thread.run_sync(pg_server.restart)

        statuses: dict[int, int] = {}
        served = await load([a, b], secret, total=160, concurrency=6, on_done=restart_midway,
                            statuses=statuses)
        assert len(served) >= 100, statuses
        await stored_within(dsn, served, seconds=30)
        ids = [r["request_id"] for r in await fetch(
            dsn, "SELECT request_id FROM requests WHERE customer_id = $1", cus["id"])]
        assert len(ids) == len(set(ids)) and served <= set(ids)
