"""Request records in -> committed per second, SQLite and PostgreSQL, no HTTP.

    .venv/bin/python bench/store_bench.py                      # 50,000 records each, throwaway PostgreSQL
    .venv/bin/python bench/store_bench.py --records 200000 --dsn postgresql://user@host/db

Two figures per backend, same record shape (tests/store/test_records.py's, 100 customers):
  store  ``insert_records`` in batches of ``--batch`` back to back (the batch write cost alone);
  meter  the real writer path: ``reserve()`` + ``record()`` (journal append, queue) for every
         record while the Meter's writer task commits batches, until the last one is committed.
Billing's batch hook is off (``meter.billing = None``): it issues SQLite SQL until issue 12's next
step, so neither backend pays for wallet and usage updates here.

Without ``--dsn`` a throwaway cluster is made with tests/postgres_server.py (initdb in a temp dir,
fsync=off as in tests; a production server syncs its WAL). Each phase stops at ``--seconds``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import anyio  # noqa: E402

from kraken.config import MeterConfig  # noqa: E402
from kraken.meter.journal import Journal  # noqa: E402
from kraken.meter.writer import Meter  # noqa: E402
from kraken.store.record import RequestRecord  # noqa: E402
from kraken.store.sqlite import SqliteStore  # noqa: E402


def record(run: str, i: int) -> RequestRecord:
    return RequestRecord(
        ts=1_700_000_000.0 + i / 1000, request_id=f"{run}-{i:09d}", customer_id=f"cus_{i % 100:04d}",
        model_requested="gpt-4o-mini", model_dispatched="gpt-4o-mini-2024-07-18", provider="openai",
        prompt_tokens=120 + i % 50, completion_tokens=340, cached_tokens=0, reasoning_tokens=None,
        latency_ms=823.5, ttfb_ms=145.25, task_type="chat", cost_usd=0.000123,
        kraken_fee_usd=0.00001, fallback_used=False, error_type=None, status=200,
        byok=False, key_id=f"key_{i % 100:04d}")


async def bench_store(store: Any, n: int, batch: int, seconds: float) -> tuple[int, float]:
    """insert_records back to back; (records committed, seconds)."""
    done, start = 0, time.perf_counter()
    with anyio.move_on_after(seconds):
        while done < n:
            size = min(batch, n - done)
            done += await store.insert_records([record("s", i) for i in range(done, done + size)])
    return done, time.perf_counter() - start


async def bench_meter(store: Any, n: int, batch: int, seconds: float, jdir: Path) -> tuple[int, float]:
    """reserve() + record() for every record while the writer commits; (committed, seconds)."""
    journal = Journal(jdir)
    journal.open()
    meter = Meter(store, journal, MeterConfig(queue_max=20_000, batch_max=batch, flush_interval_ms=20))
    meter.billing = None
    pushed, start = 0, time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(meter.run)
        with anyio.move_on_after(seconds):
            while pushed < n:
                while pushed < n and meter.reserve():
                    meter.record(record("m", pushed))
                    pushed += 1
                await anyio.sleep(0.001)  # queue full: let the writer run
            while meter.depth:
                await anyio.sleep(0.001)
        left = await meter.close(timeout_s=5)
    return pushed - left, time.perf_counter() - start


async def run_backend(name: str, open_store: Callable[[], Awaitable[Any]], args, workdir: Path) -> None:
    store = await open_store()
    try:
        for phase in ("store", "meter"):
            if phase == "store":
                done, took = await bench_store(store, args.records, args.batch, args.seconds)
            else:
                done, took = await bench_meter(store, args.records, args.batch, args.seconds,
                                               workdir / f"{name}.journal")
            print(f"{name:10s} {phase:5s} {done:8d} records in {took:6.2f} s = "
                  f"{done / took:9,.0f} records/s", flush=True)
    finally:
        await store.close()


@contextlib.contextmanager
def postgres_dsn(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from postgres_server import postgres_server  # tests/: the hermetic throwaway cluster

    with postgres_server() as server:
        yield server.create_database("kraken_bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per phase")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (meter batch_max)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per phase")
    parser.add_argument("--dsn", help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="run one backend")
    args = parser.parse_args()
    print(f"{args.records} records per phase, batches of {args.batch}, billing hook off")
    with tempfile.TemporaryDirectory(prefix="kraken-store-bench-") as tmp:
        workdir = Path(tmp)
        if args.only != "postgres":
            anyio.run(run_backend, "sqlite", lambda: SqliteStore.open(str(workdir / "k.db")),
                      args, workdir, backend_options={"use_uvloop": True})
        if args.only != "sqlite":
            from kraken.store.postgres import PostgresStore

            with postgres_dsn(args.dsn) as dsn:
                anyio.run(run_backend, "postgresql", lambda: PostgresStore.open(dsn),
                          args, workdir, backend_options={"use_uvloop": True})


if __name__ == "__main__":
    main()
