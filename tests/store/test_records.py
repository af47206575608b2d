"""The record path of the Store interface, proven once per backend (SQLite and PostgreSQL).

Each test gets a fresh store: a new SQLite file, or a new database on this module's PostgreSQL
server. SQL differs only in placeholders (``?`` vs ``$1``), which ``Backend.sql`` rewrites.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest

from postgres_server import pg_server  # noqa: F401  (module-scoped fixture)
from kraken.store import SqliteStore, StoreDataError, StoreError
from kraken.store.interface import Store, Tx
from kraken.store.record import FIELD_NAMES, RequestRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make(i: int, **kw) -> RequestRecord:
    values = dict(
        ts=1_700_000_000.0 + i, request_id=f"req-{i:06d}", customer_id="cust-1",
        model_requested="gpt-4o-mini", model_dispatched="gpt-4o-mini-2024-07-18",
        provider="openai", prompt_tokens=12, completion_tokens=34, cached_tokens=0,
        reasoning_tokens=None, latency_ms=123.5, ttfb_ms=45.25, task_type="chat",
        cost_usd=0.000123, kraken_fee_usd=0.00001, fallback_used=False, error_type=None,
        status=200,
    )
    values.update(kw)
    return RequestRecord(**values)


@dataclass
class Backend:
    name: str
    open: Callable[[], Awaitable[Any]]
    """Open another store on the same database (as another process or host would)."""

    def sql(self, text: str) -> str:
        if self.name == "sqlite":
            return text
        numbers = iter(range(1, 1000))
        return re.sub(r"\?", lambda _: f"${next(numbers)}", text)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        path = str(tmp_path / "k.db")
        return Backend("sqlite", lambda: SqliteStore.open(path))
    from kraken.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_server").create_database()
    return Backend("postgres", lambda: PostgresStore.open(dsn))


@pytest.fixture
async def store(backend):
    s = await backend.open()
    yield s
    await s.close()


async def ids(store) -> list[str]:
    return [r[0] for r in await store.fetch_all("SELECT request_id FROM requests ORDER BY request_id")]


async def test_both_backends_implement_the_store_interface(store):
    assert isinstance(store, Store)
    async with store.transaction() as tx:
        assert isinstance(tx, Tx)


async def test_record_round_trips_field_for_field(store):
    rec = make(7, fallback_used=True, reasoning_tokens=5, error_type="upstream_timeout", status=504,
               byok=True, key_id="key_abc")
    assert await store.insert_records([rec]) == 1
    (row,) = await store.fetch_all(f"SELECT {', '.join(FIELD_NAMES)} FROM requests")
    data = dict(zip(FIELD_NAMES, row))
    data["fallback_used"], data["byok"] = bool(data["fallback_used"]), bool(data["byok"])
    assert RequestRecord(**data) == rec


async def test_byok_none_is_stored_as_managed_access(store):
    assert await store.insert_records([make(1, byok=None)]) == 1
    assert [bool(r[0]) for r in await store.fetch_all("SELECT byok FROM requests")] == [False]


async def test_insert_is_idempotent_by_request_id(store, backend):
    assert await store.insert_records([make(1)]) == 1
    assert await store.insert_records([make(1, status=500)]) == 0
    assert await store.insert_records([make(2), make(2), make(1)]) == 1
    assert await ids(store) == ["req-000001", "req-000002"]
    assert await store.fetch_all(backend.sql("SELECT status FROM requests WHERE request_id = ?"),
                                 ("req-000001",)) == [(200,)]


async def test_a_batch_of_500_goes_in_one_call(store):
    batch = [make(i, customer_id=f"cust-{i % 7}", byok=i % 2 == 0) for i in range(500)]
    assert await store.insert_records(batch) == 500
    assert await store.insert_records(batch) == 0  # a replay of the same batch
    assert (await store.fetch_all("SELECT count(*) FROM requests"))[0][0] == 500


async def test_empty_batch_inserts_nothing(store):
    assert await store.insert_records([]) == 0


async def test_reopen_keeps_rows_and_migrates_nothing(backend):
    first = await backend.open()
    assert await first.insert_records([make(1)]) == 1
    await first.close()
    second = await backend.open()
    try:
        assert await ids(second) == ["req-000001"]
        assert getattr(second, "applied", ()) == ()
    finally:
        await second.close()


async def test_hook_runs_in_the_batch_transaction_and_a_failing_hook_writes_nothing(store, backend):
    seen: list[str] = []

    async def hook(tx, records):
        seen.extend(r.request_id for r in records)
        await tx.execute(backend.sql("INSERT INTO wallet_erasures (wallet_id, ts) VALUES (?, ?)"),
                         ("w1", 1.0))

    assert await store.insert_records([make(1), make(2)], hook) == 2
    assert seen == ["req-000001", "req-000002"]

    async def failing(tx, records):
        await tx.execute(backend.sql("INSERT INTO wallet_erasures (wallet_id, ts) VALUES (?, ?)"),
                         ("w2", 2.0))
        raise RuntimeError("billing failed")

    with pytest.raises(RuntimeError):
        await store.insert_records([make(3)], failing)
    assert await ids(store) == ["req-000001", "req-000002"]
    assert await store.fetch_all("SELECT wallet_id FROM wallet_erasures") == [("w1",)]
    assert await store.insert_records([make(3)]) == 1  # the connection is usable again


async def test_transaction_commits_on_exit_and_rolls_back_on_error(store, backend):
    insert = backend.sql("INSERT INTO wallet_erasures (wallet_id, ts) VALUES (?, ?)")
    async with store.transaction() as tx:
        assert await tx.execute(insert, ("a", 1.0)) == 1
        await tx.executemany(insert, [("b", 2.0), ("c", 3.0)])
        assert await tx.fetch_one("SELECT count(*) FROM wallet_erasures") == (3,)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.execute(insert, ("d", 4.0))
            raise RuntimeError("abort")
    rows = await store.fetch_all("SELECT wallet_id FROM wallet_erasures ORDER BY wallet_id")
    assert rows == [("a",), ("b",), ("c",)]
    async with store.transaction() as tx:
        assert await tx.fetch_all("SELECT wallet_id FROM wallet_erasures WHERE ts > 2") == [("c",)]
        assert await tx.fetch_one("SELECT wallet_id FROM wallet_erasures WHERE ts > 9") is None


async def test_a_trigger_refusal_is_a_store_data_error(store, backend):
    with pytest.raises(StoreDataError):
        async with store.transaction() as tx:
            await tx.execute(backend.sql(
                "INSERT INTO wallets (wallet_id, balance_micros, created_ts) VALUES (?, ?, ?)"),
                ("w", 5, 1.0))


async def test_writable_and_checkpoint_on_a_healthy_store(store):
    assert await store.writable() is True
    await store.checkpoint()


async def test_errors_are_store_errors(store):
    with pytest.raises(StoreError):
        await store.fetch_all("SELECT * FROM no_such_table")
    assert await store.insert_records([make(1)]) == 1
