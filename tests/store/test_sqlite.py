"""SqliteStore against real SQLite files: schema, WAL, error mapping (SQLite only).

The record path both backends share is tested once per backend in test_records.py.
"""
from __future__ import annotations

import sqlite3

import pytest

from kraken.store.record import FIELD_NAMES, RequestRecord
from kraken.store import SqliteStore, StoreBusy, StoreError, StoreFull
from kraken.store.schema import MIGRATIONS, VERSION, statements

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make(i: int, **kw) -> RequestRecord:
    values = dict(
        ts=1_700_000_000.0 + i,
        request_id=f"req-{i:06d}",
        customer_id="cust-1",
        model_requested="gpt-4o-mini",
        model_dispatched="gpt-4o-mini-2024-07-18",
        provider="openai",
        prompt_tokens=12,
        completion_tokens=34,
        cached_tokens=0,
        reasoning_tokens=None,
        latency_ms=123.5,
        ttfb_ms=45.25,
        task_type="chat",
        cost_usd=0.000123,
        kraken_fee_usd=0.00001,
        fallback_used=False,
        error_type=None,
        status=200,
    )
    values.update(kw)
    return RequestRecord(**values)


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(str(tmp_path / "k.db"), busy_timeout_ms=50)
    yield s
    await s.close()


def count(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]


@pytest.mark.parametrize("n", [1, 3, 256, 257, 555])
async def test_a_batch_of_any_size_stores_each_record_once_and_counts_only_new_rows(store, tmp_path, n):
    """One statement size per batch, the last chunk filled up with copies of the last record
    (kraken/store/sqlite.py ``_padded_chunks``): the copies store nothing and count nothing."""
    assert await store.insert_records([make(i) for i in range(0, n, 2)]) == len(range(0, n, 2))
    batch = [make(i) for i in range(n)]
    assert await store.insert_records(batch) == n - len(range(0, n, 2))
    rows = await store.fetch_all("SELECT request_id, ts FROM requests ORDER BY request_id")
    assert rows == [(rec.request_id, rec.ts) for rec in batch]
    assert count(tmp_path / "k.db") == n


async def test_migrations_create_requests_table_with_one_column_per_field(store, tmp_path):
    cols = [r[1] for r in await store.fetch_all("PRAGMA table_info(requests)")]
    assert tuple(cols) == FIELD_NAMES
    indexes = {r[1]: r for r in await store.fetch_all("PRAGMA index_list(requests)")}
    assert {"requests_ts", "requests_customer_ts"} <= set(indexes)
    cols_of = lambda name: [r[2] for r in sqlite3.connect(tmp_path / "k.db").execute(f"PRAGMA index_info({name})")]
    assert cols_of("requests_ts") == ["ts"]
    assert cols_of("requests_customer_ts") == ["customer_id", "ts"]
    assert (await store.fetch_all("PRAGMA user_version"))[0][0] == VERSION == len(MIGRATIONS)


async def test_a_database_from_a_newer_kraken_is_refused(tmp_path):
    path = tmp_path / "k.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        await SqliteStore.open(str(path))


async def test_wal_mode_is_on(store, tmp_path):
    assert (await store.fetch_all("PRAGMA journal_mode"))[0][0] == "wal"
    with sqlite3.connect(tmp_path / "k.db") as other:  # persistent, seen by any connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_connection_pragmas(store):
    assert (await store.fetch_all("PRAGMA synchronous"))[0][0] == 1  # NORMAL
    assert (await store.fetch_all("PRAGMA foreign_keys"))[0][0] == 1
    assert (await store.fetch_all("PRAGMA secure_delete"))[0][0] == 1
    assert (await store.fetch_all("PRAGMA busy_timeout"))[0][0] == 50


async def test_exclusive_lock_held_elsewhere_maps_to_store_busy(store, tmp_path):
    other = sqlite3.connect(tmp_path / "k.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusy) as info:
            await store.insert_records([make(1, customer_id="secret-customer")])
        assert "secret-customer" not in str(info.value)
        assert "req-000001" not in str(info.value)
        assert await store.writable() is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The failed transaction was rolled back: the connection is usable again.
    assert await store.writable() is True
    assert await store.insert_records([make(1)]) == 1
    assert count(tmp_path / "k.db") == 1


async def test_max_page_count_reached_maps_to_store_full_and_batch_is_atomic(tmp_path):
    path = str(tmp_path / "k.db")
    store = await SqliteStore.open(path, max_page_count=1)  # clamped to the current size
    try:
        assert await store.insert_records([make(0)]) == 1  # fits in the existing pages
        big = [make(i, customer_id=f"secret-{i}") for i in range(1, 2000)]
        with pytest.raises(StoreFull) as info:
            await store.insert_records(big)
        assert "secret-" not in str(info.value) and "req-" not in str(info.value)
        assert count(path) == 1  # the whole batch was rolled back
        assert await store.writable() is True
    finally:
        await store.close()


async def test_checkpoint_truncates_the_wal(store, tmp_path):
    await store.insert_records([make(i) for i in range(50)])
    wal = tmp_path / "k.db-wal"
    assert wal.stat().st_size > 0
    await store.checkpoint()
    assert wal.stat().st_size == 0
    assert count(tmp_path / "k.db") == 50


def test_statements_keeps_semicolons_inside_literals_and_triggers():
    script = """
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 'y;z'; END;
    """
    parts = statements(script)
    assert len(parts) == 2
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")


@pytest.mark.parametrize("keep_billing", [False, True])
async def test_a_batch_of_an_erased_customer_is_tombstoned_and_not_billed(tmp_path, keep_billing):
    """Erasure marks travel with the database: any writer, any time after (a journal replay
    too) writes the customer's records under a tombstone and hands none to billing."""
    from kraken.store import erased

    path = tmp_path / "k.db"
    first = await SqliteStore.open(str(path))
    try:
        async with first.transaction() as tx:
            await erased.mark(tx, "cus_gone", keep_billing_records=keep_billing)
    finally:
        await first.close()
    store = await SqliteStore.open(str(path))  # another connection, as another process
    billed: list = []

    async def hook(tx, records):
        billed.extend(records)

    try:
        batch = [make(1, customer_id="cus_gone", key_id="key_1"), make(2, customer_id="cus_kept"),
                 make(3, customer_id="cus_gone", key_id="key_1")]
        assert await store.insert_records(batch, hook) == 3
    finally:
        await store.close()
    assert [r.request_id for r in billed] == ["req-000002"]
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT request_id, customer_id, key_id FROM requests "
                            "ORDER BY request_id").fetchall()
        marks = conn.execute("SELECT digest FROM erased_customers").fetchall()
    assert rows[1] == ("req-000002", "cus_kept", None)
    tombs = {rows[0][1], rows[2][1]}
    assert len(tombs) == 1 and tombs.pop().startswith("erased_")
    assert [r[2] for r in (rows[0], rows[2])] == (["key_1"] * 2 if keep_billing else [None] * 2)
    assert path.read_bytes().count(b"cus_gone") == 0 and "cus_gone" not in str(marks)
