"""Erasure is final whatever is in flight: streams of the erased customer that end after the
erasure, in this process or another worker, bring back no row and no byte of its id, in
``requests``, ``usage_monthly``, wallets or anywhere else in the database files."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from adminkit import Admin, admin_doc
from harness import TEST_KEY, KrakenProcess, auth_headers, free_port, http, running_mock, write_toml
from streamkit import Stream

pytestmark = pytest.mark.anyio

PRICES = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
TABLES = ("requests", "usage_monthly", "wallets", "wallet_transactions", "api_keys", "customers",
          "members", "byok_keys", "wallet_erasures")


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _chat(port: int, key: str) -> str:
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    reply = await http(port, "POST", "/v1/chat/completions", body.encode(), auth_headers(key))
    assert reply.status == 200, reply.body
    return reply.headers["x-request-id"]


def _query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _rows_holding(db: Path, needle: str) -> dict[str, int]:
    """Rows of every table with a column equal to ``needle`` (any table, any column)."""
    found = {}
    for (table,) in _query(db, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        cols = [r[1] for r in _query(db, f'PRAGMA table_info("{table}")')]
        where = " OR ".join(f'"{c}" = ?' for c in cols)
        n = _query(db, f'SELECT COUNT(*) FROM "{table}" WHERE {where}', (needle,) * len(cols))[0][0]
        if n:
            found[table] = n
    return found


def _files_holding(tmp: Path, needle: bytes) -> list[str]:
    """Database, -wal, -shm and journal segments whose bytes contain ``needle``."""
    return [str(p) for p in tmp.rglob("*") if p.is_file()
            and p.suffix not in (".toml", ".log") and needle in p.read_bytes()]


def _cli_erase(config: Path, customer_id: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kraken", "erase", customer_id, "--yes",
                           "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _wait_workers_ready(log: Path, workers: int, timeout: float = 30.0) -> None:
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while f"all {workers} workers ready" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
async def test_streams_ending_after_an_erasure_leave_no_trace_of_the_customer(tmp_path, workers):
    db = tmp_path / "kraken.db"
    async with running_mock() as mock:
        port, admin_port = free_port(), free_port()
        doc = admin_doc(tmp_path, mock.port, admin_port, prices=PRICES,
                        server={"port": port, "workers": workers})
        write_toml(tmp_path / "k.toml", doc)
        admin = Admin(admin_port, db)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            await anyio.to_thread.run_sync(_wait_workers_ready, tmp_path / "kraken.log", workers)
            # Customer A is erased through the admin API, B with `kraken erase`.
            ids, keys = [], []
            for _ in range(2):
                cus = await admin.customer()
                created = await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"]}, 201)
                ids.append(cus["id"])
                keys.append(created["secret"])
            for key in keys:  # completed before the erasure: billed, then erased with it
                for _ in range(2):
                    await _chat(port, key)
            with anyio.fail_after(20):
                while len(_query(db, "SELECT 1 FROM requests")) < 4:
                    await anyio.sleep(0.02)
            assert all(_rows_holding(db, cid).get("usage_monthly") for cid in ids)
            # Three streams each, spread over the workers, still running at the erasure.
            streams = [Stream(port, key, chunks=40, chunk_delay_ms=250)
                       for key in keys for _ in range(3)]
            for stream in streams:
                await stream.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(admin.ok, "DELETE", f"/admin/customers/{ids[0]}")
                tg.start_soon(anyio.to_thread.run_sync, _cli_erase, tmp_path / "k.toml", ids[1])
            assert not any(stream.done for stream in streams), "erased after the streams ended"
            for stream in streams:
                await stream.finish()
            late = [stream.request_id for stream in streams]
            marks = ", ".join("?" * len(late))
            with anyio.fail_after(20):  # their records are written
                while len(_query(db, f"SELECT 1 FROM requests WHERE request_id IN ({marks})",
                                 tuple(late))) < len(late):
                    await anyio.sleep(0.02)
            other = await _chat(port, TEST_KEY)  # another customer is unaffected
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
    for cid in ids:
        assert _rows_holding(db, cid) == {}, cid
        assert _files_holding(tmp_path, cid.encode()) == [], cid
    rows = _query(db, "SELECT request_id, customer_id, key_id FROM requests")
    assert sorted(r[0] for r in rows) == sorted(late + [other])
    assert all(r[1].startswith("erased_") and r[2] is None for r in rows if r[0] in late)
    assert _query(db, "SELECT customer_id FROM usage_monthly") == [("cust_1",)]
    assert _query(db, "SELECT DISTINCT wallet_id FROM wallets") == []  # none was ever credited
