"""Meter: reservations, batching, retries on a busy store, crash recovery, clean close."""
from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from kraken import metrics
from kraken.config import MeterConfig
from kraken.meter.journal import Journal
from kraken.store.record import RequestRecord
from kraken.meter.writer import DEEP_BATCHES, Meter
from kraken.store import SqliteStore

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make(i: int, **kw) -> RequestRecord:
    values = dict(
        ts=1_700_000_000.0 + i, request_id=f"req-{i:06d}", customer_id="cust-1",
        model_requested="gpt-4o-mini", model_dispatched="gpt-4o-mini", provider="openai",
        prompt_tokens=10, completion_tokens=20, cached_tokens=0, reasoning_tokens=None,
        latency_ms=100.0, ttfb_ms=20.0, task_type="chat", cost_usd=0.0001,
        kraken_fee_usd=0.00001, fallback_used=False, error_type=None, status=200,
    )
    values.update(kw)
    return RequestRecord(**values)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def rows(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests ORDER BY request_id")]


async def wait_until(condition, timeout: float = 5.0) -> None:
    """Poll a condition with a hard deadline (no fixed sleeps standing in for sync)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "k.db"


@pytest.fixture
def jdir(tmp_path) -> Path:
    return tmp_path / "k.db.journal"


@pytest.fixture
async def store(db):
    s = await SqliteStore.open(str(db), busy_timeout_ms=50)
    yield s
    await s.close()


def new_meter(store, jdir, **cfg) -> Meter:
    journal = Journal(jdir)
    journal.open()
    return Meter(store, journal, MeterConfig(**cfg))


def push(meter: Meter, ids) -> None:
    for i in ids:
        assert meter.reserve()
        meter.record(make(i))


async def test_a_deep_queue_is_written_in_batches_of_up_to_deep_batches_times_batch_max(
        store, db, jdir):
    meter = new_meter(store, jdir, batch_max=2, flush_interval_ms=60_000)
    flushes = sample("kraken_meter_flush_seconds_count")
    written = sample("kraken_meter_records_written_total")
    push(meter, range(2 * DEEP_BATCHES + 9))
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        await wait_until(lambda: meter.depth == 0)
        # 2 * DEEP_BATCHES, then the 9 left (more than batch_max: one batch)
        assert sample("kraken_meter_flush_seconds_count") - flushes == 2
        assert sample("kraken_meter_records_written_total") - written == 2 * DEEP_BATCHES + 9
        await meter.close()
    assert rows(db) == [f"req-{i:06d}" for i in range(2 * DEEP_BATCHES + 9)]


async def test_reaching_batch_max_wakes_the_writer_before_the_interval(store, db, jdir):
    meter = new_meter(store, jdir, batch_max=10, flush_interval_ms=60_000)
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        push(meter, range(10))
        await wait_until(lambda: len(rows(db)) == 10)  # a 60 s interval would time out
        push(meter, range(10, 13))
        assert meter.depth == 3  # below batch_max: waits for the interval (or close)
        await meter.close()
    assert len(rows(db)) == 13


async def test_interval_flushes_a_partial_batch(store, db, jdir):
    meter = new_meter(store, jdir, batch_max=100, flush_interval_ms=10)
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        push(meter, [1])
        await wait_until(lambda: rows(db) == ["req-000001"])
        await meter.close()


async def test_reserve_refuses_exactly_at_queue_max(store, jdir):
    meter = new_meter(store, jdir, queue_max=3)
    assert sample("kraken_meter_queue_capacity") == 3
    assert [meter.reserve() for _ in range(4)] == [True, True, True, False]
    assert meter.depth == 3 and not meter.ready
    assert sample("kraken_meter_queue_depth") == 3
    meter.release()
    assert meter.ready and meter.depth == 2
    assert meter.reserve() and not meter.reserve()
    meter.record(make(1))  # consumes a reservation: still 3 slots taken
    assert meter.depth == 3 and not meter.reserve()
    meter.record(make(2))  # without a reservation: kept anyway, never dropped
    meter.record(make(3))
    meter.record(make(4))
    assert meter.depth == 4 and not meter.reserve()
    await meter.close()
    assert meter.depth == 0 and meter.ready


async def test_busy_store_keeps_records_then_commits_each_once(store, db, jdir):
    meter = new_meter(store, jdir, batch_max=3, flush_interval_ms=10, retry_backoff_ms=20)
    busy = sample("kraken_store_errors_total", reason="busy")
    dropped = sample("kraken_meter_records_dropped_total")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(meter.run)
            push(meter, range(7))
            await wait_until(lambda: not meter.ready)
            assert meter.depth == 7
            assert sample("kraken_store_errors_total", reason="busy") > busy
            on_disk = [r for seg in Journal(jdir).segments() for r in Journal.read(seg)]
            assert sorted(r.request_id for r in on_disk) == [f"req-{i:06d}" for i in range(7)]
            other.execute("ROLLBACK")
            push(meter, range(7, 9))
            await wait_until(lambda: meter.ready and meter.depth == 0)
            await meter.close()
    finally:
        other.close()
    assert rows(db) == [f"req-{i:06d}" for i in range(9)]
    assert sample("kraken_meter_records_dropped_total") == dropped
    assert Journal(jdir).segments() == []  # all committed, all segments deleted


async def test_recover_replays_a_previous_runs_journal_once(store, db, jdir, tmp_path):
    previous = Journal(jdir)  # a run that died before its writer flushed
    previous.open()
    for i in range(5):
        previous.append(make(i))
    with open(previous.current, "ab") as f:
        f.write(b'{"ts": 1700000099.0, "request_id": "req-0')  # torn by the crash
    previous.rotate()
    previous.append(make(5))
    backup = {p.name: p.read_bytes() for p in previous.segments()}
    replayed = sample("kraken_meter_records_replayed_total")

    journal = Journal(jdir)
    journal.open()
    meter = Meter(store, journal, MeterConfig())
    assert await meter.recover() == 6
    assert rows(db) == [f"req-{i:06d}" for i in range(6)]
    assert journal.segments() == [journal.current]  # old segments deleted
    assert sample("kraken_meter_records_replayed_total") - replayed == 6

    for name, data in backup.items():  # the same data again (e.g. crash before delete)
        (jdir / name).write_bytes(data)
    again = new_meter(store, jdir)
    assert await again.recover() == 0
    assert rows(db) == [f"req-{i:06d}" for i in range(6)]
    await meter.close()
    await again.close()
    previous.close()


async def test_close_flushes_everything_queued_and_cleans_the_journal(store, db, jdir):
    meter = new_meter(store, jdir, batch_max=1000, flush_interval_ms=60_000)
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        push(meter, range(7))
        assert rows(db) == []
        await meter.close()  # returns only once run() has flushed and exited
        assert rows(db) == [f"req-{i:06d}" for i in range(7)]
    assert meter.depth == 0
    assert Journal(jdir).segments() == []
    assert (db.parent / "k.db-wal").stat().st_size == 0  # checkpointed


async def test_a_record_after_close_is_journaled_and_recovered(store, db, jdir):
    meter = new_meter(store, jdir, flush_interval_ms=10)
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        await meter.close()
    meter.record(make(42))
    await meter.close()  # safe after run() exited; flushes what it can
    assert rows(db) == ["req-000042"]
    meter.record(make(43))
    assert rows(db) == ["req-000042"]
    assert await new_meter(store, jdir).recover() == 1
    assert rows(db) == ["req-000042", "req-000043"]


async def test_a_record_the_schema_refuses_does_not_block_the_others(store, db, jdir):
    meter = new_meter(store, jdir, batch_max=10)
    dropped = sample("kraken_meter_records_dropped_total")
    push(meter, [1])
    meter.record(make(2, request_id=None))  # a bug upstream: NOT NULL violated
    meter.record(make(3, customer_id=["not", "bindable"]))  # SQLite refuses the type
    push(meter, [4])
    await meter.close()
    assert rows(db) == ["req-000001", "req-000004"]
    assert sample("kraken_meter_records_dropped_total") - dropped == 2
    assert meter.ready


CRASHING_RUN = """
import os, signal, sys, anyio
from kraken.config import MeterConfig
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.store.record import FIELD_NAMES, RequestRecord
from kraken.store import SqliteStore

def make(i):
    rec = dict.fromkeys(FIELD_NAMES)
    rec.update(ts=1700000000.0 + i, request_id=f"req-{i:06d}", latency_ms=1.0,
               fallback_used=False, status=200)
    return RequestRecord(**rec)

async def main(db, jdir):
    store = await SqliteStore.open(db)
    journal = Journal(jdir)
    journal.open()
    meter = Meter(store, journal, MeterConfig(batch_max=50, flush_interval_ms=60_000))
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        for i in range(120):
            assert meter.reserve()
            meter.record(make(i))
            if i == 99:  # two full batches: wait until they are committed
                with anyio.fail_after(5):
                    while meter.depth:
                        await anyio.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)  # 20 records only in memory + journal

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_kill_9_loses_no_recorded_record(store, db, jdir):
    result = await anyio.run_process(
        [sys.executable, "-c", CRASHING_RUN, str(db), str(jdir)],
        cwd=REPO, check=False, env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert len(rows(db)) == 100
    meter = new_meter(store, jdir)
    assert await meter.recover() == 20
    assert rows(db) == [f"req-{i:06d}" for i in range(120)]
    await meter.close()


async def test_a_row_the_database_rejects_is_isolated_not_retried_forever(store, db, jdir):
    with sqlite3.connect(db) as conn:  # e.g. an operator's trigger rejecting one row
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON requests WHEN NEW.request_id = 'req-000002'"
            " BEGIN SELECT RAISE(ABORT, 'rejected'); END"
        )
    meter = new_meter(store, jdir, batch_max=10)
    dropped = sample("kraken_meter_records_dropped_total")
    push(meter, [1, 2, 3])
    await meter.close()
    assert rows(db) == ["req-000001", "req-000003"]
    assert sample("kraken_meter_records_dropped_total") - dropped == 1
    assert meter.ready and meter.depth == 0


@pytest.mark.parametrize("count", [2**63, 2**64 - 1])  # 2**64 - 1: a provider's u64 "-1"
async def test_a_count_beyond_sqlites_integers_is_isolated_not_a_dead_writer(
        store, db, jdir, count):
    """SQLite binds at most 64-bit signed integers; a larger one raised OverflowError (no
    sqlite3.Error), which ended the writer task, Kraken with it, and every restart's replay."""
    meter = new_meter(store, jdir, batch_max=10)
    dropped = sample("kraken_meter_records_dropped_total")
    push(meter, [1])
    assert meter.reserve()
    meter.record(make(2, prompt_tokens=count))
    push(meter, [3])
    await meter.close()
    assert rows(db) == ["req-000001", "req-000003"]
    assert sample("kraken_meter_records_dropped_total") - dropped == 1
    assert meter.ready and meter.depth == 0
