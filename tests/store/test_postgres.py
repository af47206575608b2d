"""PostgresStore against a real PostgreSQL: migrations across hosts, outages, error mapping, meter.

The record path shared with SQLite is in test_records.py (run once per backend); this file holds
what only PostgreSQL has: a server that can go away and come back, several hosts migrating at
once, statement timeouts, the erasure lock.
"""
from __future__ import annotations

import asyncio
import sqlite3

import anyio
import pytest

from postgres_server import pg_dsn, pg_server  # noqa: F401  (fixtures)
from kraken import metrics
from kraken.config import MeterConfig
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.store import StoreBusy, StoreDataError, StoreError
from kraken.store import schema as sqlite_schema
from kraken.store.postgres import PostgresStore, erased
from kraken.store.postgres.schema import MIGRATIONS, VERSION
from kraken.store.record import FIELD_NAMES
from test_records import make

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def store(pg_dsn):
    s = await PostgresStore.open(pg_dsn, pool_size=2)
    yield s
    await s.close()


async def ids(store) -> list[str]:
    return [r[0] for r in await store.fetch_all("SELECT request_id FROM requests ORDER BY request_id")]


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_schema_matches_sqlites_version_for_version(store, tmp_path):
    assert VERSION == sqlite_schema.VERSION
    cols = await store.fetch_all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests' "
        "ORDER BY ordinal_position")
    assert tuple(c for (c,) in cols) == FIELD_NAMES
    assert await store.fetch_all("SELECT version FROM kraken_schema") == [(VERSION,)]
    ours = {t for (t,) in await store.fetch_all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    with sqlite3.connect(tmp_path / "k.db") as conn:
        for script in sqlite_schema.MIGRATIONS:
            for stmt in sqlite_schema.statements(script):
                conn.execute(stmt)
        theirs = {t for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    assert ours - {"kraken_schema"} == theirs


async def test_two_hosts_opening_at_once_apply_each_migration_once(pg_dsn):
    first, second = await asyncio.gather(PostgresStore.open(pg_dsn), PostgresStore.open(pg_dsn))
    try:
        assert sorted(first.applied + second.applied) == list(range(1, len(MIGRATIONS) + 1))
        assert {first.applied, second.applied} == {(), tuple(range(1, VERSION + 1))}
        assert await first.insert_records([make(1)]) == 1
        assert await ids(second) == ["req-000001"]
    finally:
        await first.close()
        await second.close()


async def test_a_host_starting_while_another_migrates_waits_past_the_statement_timeout(pg_dsn):
    """Hosts starting together wait for the first one's migrations (README), however long they
    take (an index over a large table, or a ``kraken migrate`` copy holding the lock): the
    statement timeout bounds Kraken's work on the hot path, not this wait."""
    import asyncpg

    from kraken.store.postgres.schema import MIGRATION_LOCK

    migrating = await asyncpg.connect(pg_dsn)
    try:
        holding = migrating.transaction()
        await holding.start()
        await migrating.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        opening = asyncio.ensure_future(PostgresStore.open(  # each call bounded by 0.6 s
            pg_dsn, statement_timeout_ms=100, connect_timeout_s=0.5))
        with anyio.fail_after(10):
            while not await migrating.fetch("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                                            "AND NOT granted"):
                await asyncio.sleep(0.01)
        await asyncio.wait([opening], timeout=1.5)  # past both timeouts: still waiting
        assert not opening.done(), opening.exception()
        await holding.rollback()
        store = await opening
    finally:
        await migrating.close()
    try:
        assert store.applied == tuple(range(1, VERSION + 1))
    finally:
        await store.close()


async def test_a_database_from_a_newer_kraken_is_refused(store, pg_dsn):
    await store.fetch_all("UPDATE kraken_schema SET version = version + 1 RETURNING version")
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore.open(pg_dsn)


async def test_an_unreachable_server_at_open_is_a_store_error(pg_server):
    with pytest.raises(StoreError) as info:
        await PostgresStore.open("postgresql://postgres@127.0.0.1:1/x", connect_timeout_s=1)
    assert not isinstance(info.value, StoreDataError)


async def test_a_value_the_column_refuses_is_a_data_error_without_row_content(store):
    with pytest.raises(StoreDataError) as info:
        await store.insert_records([make(1, customer_id="secret-customer", prompt_tokens=2**70)])
    assert "secret-customer" not in str(info.value) and "req-000001" not in str(info.value)
    assert await store.insert_records([make(1)]) == 1


async def test_the_statement_timeout_cancels_a_slow_statement_as_busy(pg_dsn):
    store = await PostgresStore.open(pg_dsn, statement_timeout_ms=50)
    try:
        with pytest.raises(StoreBusy):
            await store.fetch_all("SELECT pg_sleep(2)")
        assert await store.writable() is True
    finally:
        await store.close()


async def test_a_restart_mid_batch_is_a_retryable_error_then_the_batch_commits_once(store, pg_server):
    assert await store.insert_records([make(0)]) == 1
    inside = anyio.Event()

    async def hook(tx, records):  # holds the batch's transaction open while the server stops
        inside.set()
        await anyio.sleep(0.5)

    async def stop_when_inside():
        await inside.wait()
        await anyio.to_thread.run_sync(pg_server.stop)

    batch = [make(i) for i in range(1, 101)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_inside)
        with pytest.raises(StoreError) as info:
            await store.insert_records(batch, hook)
    assert not isinstance(info.value, StoreDataError)  # the meter keeps and retries it
    with pytest.raises(StoreError) as down:
        await store.insert_records(batch)  # still down: refused, not a data error
    assert not isinstance(down.value, StoreDataError)
    assert await store.writable() is False

    await anyio.to_thread.run_sync(pg_server.start)
    assert await store.insert_records(batch) == 100  # the pool reconnects at once
    assert await store.insert_records(batch) == 0
    assert await ids(store) == [f"req-{i:06d}" for i in range(101)]
    assert await store.writable() is True


@pytest.mark.parametrize("keep_billing", [False, True])
async def test_a_batch_of_an_erased_customer_is_tombstoned_and_not_billed(pg_dsn, keep_billing):
    first = await PostgresStore.open(pg_dsn)
    try:
        async with first.transaction() as tx:
            await erased.mark(tx, "cus_gone", keep_billing_records=keep_billing)
    finally:
        await first.close()
    store = await PostgresStore.open(pg_dsn)  # another host
    billed: list = []

    async def hook(tx, records):
        billed.extend(records)

    try:
        batch = [make(1, customer_id="cus_gone", key_id="key_1"), make(2, customer_id="cus_kept"),
                 make(3, customer_id="cus_gone", key_id="key_1")]
        assert await store.insert_records(batch, hook) == 3
        rows = await store.fetch_all(
            "SELECT request_id, customer_id, key_id FROM requests ORDER BY request_id")
        marks = await store.fetch_all("SELECT digest FROM erased_customers")
    finally:
        await store.close()
    assert [r.request_id for r in billed] == ["req-000002"]
    assert rows[1] == ("req-000002", "cus_kept", None)
    tombs = {rows[0][1], rows[2][1]}
    assert len(tombs) == 1 and tombs.pop().startswith("erased_")
    assert [r[2] for r in (rows[0], rows[2])] == (["key_1"] * 2 if keep_billing else [None] * 2)
    assert "cus_gone" not in str(marks)


# -- the real meter (queue, journal, batch writer) over PostgreSQL ------------------------------
# Billing's batch hook still issues SQLite SQL, so these run with meter.billing = None.

async def wait_until(condition, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.01)


def new_meter(store, jdir, **cfg) -> Meter:
    journal = Journal(jdir)
    journal.open()
    meter = Meter(store, journal, MeterConfig(**cfg))
    meter.billing = None
    return meter


def push(meter: Meter, numbers) -> None:
    for i in numbers:
        assert meter.reserve()
        meter.record(make(i))


async def test_the_meter_commits_every_record(store, tmp_path):
    meter = new_meter(store, tmp_path / "journal", batch_max=100, flush_interval_ms=10)
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        push(meter, range(1234))

        async def all_in():
            return meter.depth == 0
        await wait_until(all_in)
        assert await meter.close() == 0
    assert await ids(store) == [f"req-{i:06d}" for i in range(1234)]
    assert Journal(tmp_path / "journal").segments() == []


async def test_the_meter_keeps_a_failed_batch_and_commits_it_once_the_server_is_back(
        store, pg_server, tmp_path):
    jdir = tmp_path / "journal"
    meter = new_meter(store, jdir, batch_max=50, flush_interval_ms=10, retry_backoff_ms=20)
    errors = sample("kraken_store_errors_total", reason="other")
    dropped = sample("kraken_meter_records_dropped_total")
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        push(meter, range(100))

        async def committed():
            return meter.depth == 0
        await wait_until(committed)
        await anyio.to_thread.run_sync(pg_server.stop)
        push(meter, range(100, 220))

        async def failing():
            return not meter.ready
        await wait_until(failing)
        assert sample("kraken_store_errors_total", reason="other") > errors
        assert meter.depth == 120
        kept = [r.request_id for seg in Journal(jdir).segments() for r in Journal.read(seg)]
        assert sorted(kept)[-120:] == [f"req-{i:06d}" for i in range(100, 220)]

        await anyio.to_thread.run_sync(pg_server.start)

        async def recovered():
            return meter.ready and meter.depth == 0
        await wait_until(recovered)
        assert await meter.close() == 0
    assert await ids(store) == [f"req-{i:06d}" for i in range(220)]
    assert sample("kraken_meter_records_dropped_total") == dropped
    assert Journal(jdir).segments() == []
