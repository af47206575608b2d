"""SQLite's batch as one job in the driver's thread: the inline hook's contract and its edges."""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import anyio
import pytest

from kraken.store.errors import StoreError
from kraken.store.record import RequestRecord
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def make(i: int) -> RequestRecord:
    return RequestRecord(
        ts=1_700_000_000.0 + i, request_id=f"req-{i:06d}", customer_id="cust-1",
        model_requested="m", model_dispatched="m", provider="openai", prompt_tokens=1,
        completion_tokens=2, cached_tokens=0, reasoning_tokens=None, latency_ms=1.0,
        ttfb_ms=None, task_type="chat", cost_usd=0.001, kraken_fee_usd=None,
        fallback_used=False, error_type=None, status=200)


def count(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(str(tmp_path / "k.db"))
    yield s
    await s.close()


async def test_an_inline_hook_runs_in_the_drivers_thread_in_the_batchs_transaction(store, tmp_path):
    seen: list = []

    async def hook(tx, records) -> None:
        seen.append(threading.get_ident())
        seen.append(await tx.fetch_one("SELECT count(*) FROM requests"))
        await tx.execute("INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros)"
                         " VALUES ('cust-1', '2023-11', ?, 0)", (len(records),))

    hook.sqlite_inline = True  # type: ignore[attr-defined]
    assert await store.insert_records([make(1), make(2)], hook) == 2
    assert seen[0] != threading.get_ident() and seen[1] == (0,)
    assert await store.fetch_all("SELECT tokens FROM usage_monthly") == [(2,)]
    assert count(tmp_path / "k.db") == 2


async def test_an_inline_hook_that_waits_on_the_loop_is_refused_and_nothing_is_written(
        store, tmp_path):
    async def hook(tx, records) -> None:
        await tx.execute("INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros)"
                         " VALUES ('cust-1', '2023-11', 1, 0)")
        await asyncio.sleep(0)  # suspends: would wait on the loop

    hook.sqlite_inline = True  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="only its tx's methods"):
        await store.insert_records([make(1)], hook)
    assert count(tmp_path / "k.db") == 0
    assert await store.fetch_all("SELECT count(*) FROM usage_monthly") == [(0,)]
    assert await store.insert_records([make(1)]) == 1  # the connection is usable again


async def test_a_failing_inline_hook_rolls_back_and_surfaces_as_a_store_error(store, tmp_path):
    async def hook(tx, records) -> None:
        await tx.execute("INSERT INTO no_such_table VALUES (1)")

    hook.sqlite_inline = True  # type: ignore[attr-defined]
    with pytest.raises(StoreError):
        await store.insert_records([make(1)], hook)
    assert count(tmp_path / "k.db") == 0


async def test_a_batch_right_after_a_checkpoint_commits(store, tmp_path):
    """The driver's thread holds its last result until the next job: a checkpoint's cursor
    left stepping there made the batch job's COMMIT fail ("SQL statements in progress")."""
    await store.checkpoint()
    assert await store.insert_records([make(1), make(2)]) == 2
    assert count(tmp_path / "k.db") == 2
