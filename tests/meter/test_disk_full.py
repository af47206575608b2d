"""A full disk under a real Kraken process: never serve what cannot be journalled, never hang
at shutdown on a store that cannot be written, and lose no completed request either way.

The full disk is real: a tiny tmpfs holding the journal (or the database), filled until the
kernel answers ENOSPC, then freed by deleting the filler."""
from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from diskfull import fill, free, tiny_filesystem
from harness import KrakenProcess, auth_headers, free_port, http, kraken_mapping, running_mock, write_toml

pytestmark = pytest.mark.anyio

BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
PRICES = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _chat(port: int):
    return await http(port, "POST", "/v1/chat/completions", BODY, auth_headers())


def _metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` includes its labels) in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _stored(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests")]


async def _credit(db: Path, customer_id: str) -> None:
    """Create the database and credit the customer's wallet (only a wallet is debited)."""
    from kraken.billing import wallet
    from kraken.store.sqlite import SqliteStore

    store = await SqliteStore.open(str(db))
    try:
        await wallet.top_up(store, customer_id, 10**9, "test-credit")
    finally:
        await store.close()


def _start(tmp: Path, mock_port: int, **sections) -> KrakenProcess:
    port = free_port()
    doc = kraken_mapping(tmp, mock_port, server={"port": port, "drain_timeout_s": 3.0},
                         prices=PRICES, **sections)
    write_toml(tmp / "k.toml", doc)
    kp = KrakenProcess(tmp / "k.toml", port, tmp / "kraken.log")
    kp.start()
    return kp


async def test_a_journal_on_a_full_disk_refuses_requests_until_it_recovers(tmp_path):
    served: list[str] = []  # request ids answered 200
    with tiny_filesystem(tmp_path / "jfs", "512k") as jfs:
        async with running_mock() as mock:
            kp = await anyio.to_thread.run_sync(
                lambda: _start(tmp_path, mock.port, store={"journal_dir": str(jfs / "journal")}))
            try:
                port = kp.port
                for _ in range(3):
                    reply = await _chat(port)
                    assert reply.status == 200
                    served.append(reply.headers["x-request-id"])
                filler = fill(jfs)
                refused = None
                for _ in range(40):  # the first appends may still fit in a page's tail
                    reply = await _chat(port)
                    if reply.status != 200:
                        refused = reply
                        break
                    served.append(reply.headers["x-request-id"])
                assert refused is not None, "requests were served although nothing could be journalled"
                for reply in [refused] + [await _chat(port) for _ in range(5)]:
                    assert reply.status == 503 and reply.headers.get("retry-after") == "1"
                    assert reply.json()["error"]["type"] == "server_overloaded"
                assert (await http(port, "GET", "/readyz")).status == 503
                page = (await http(port, "GET", "/metrics")).body.decode()
                assert _metric(page, 'kraken_refused_total{reason="journal_failed"}') >= 6
                assert _metric(page, "kraken_meter_records_unjournaled_total") >= 1
                free(filler)
                with anyio.fail_after(20):  # the writer's probe finds room again
                    while (reply := await _chat(port)).status != 200:
                        assert reply.status == 503
                        await anyio.sleep(0.05)
                served.append(reply.headers["x-request-id"])
                for _ in range(3):
                    reply = await _chat(port)
                    assert reply.status == 200
                    served.append(reply.headers["x-request-id"])
                kp.signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(kp.wait) == 0
            finally:
                kp.kill()
    # Every request that was answered 200 has its record, including those whose journal
    # append failed (kept in memory, written to the store).
    assert sorted(_stored(tmp_path / "kraken.db")) == sorted(served)


async def test_sigterm_with_the_database_on_a_full_disk_exits_75_and_replays_at_restart(tmp_path):
    served: list[str] = []
    with tiny_filesystem(tmp_path / "dbfs", "4m") as dbfs:
        db = dbfs / "kraken.db"
        store = {"path": str(db), "journal_dir": str(tmp_path / "journal")}
        await _credit(db, "cust_1")  # a wallet, so each priced request is a ledger debit too
        async with running_mock() as mock:
            kp = await anyio.to_thread.run_sync(lambda: _start(tmp_path, mock.port, store=store))
            try:
                port = kp.port
                for _ in range(3):
                    reply = await _chat(port)
                    assert reply.status == 200
                    served.append(reply.headers["x-request-id"])
                filler = fill(dbfs)
                for _ in range(40):  # until a batch hits SQLITE_FULL and /readyz turns red
                    reply = await _chat(port)
                    assert reply.status == 200  # the journal still takes every record
                    served.append(reply.headers["x-request-id"])
                    if (await http(port, "GET", "/readyz")).status == 503:
                        break
                else:
                    pytest.fail("the store never reported the full disk")
                for _ in range(3):
                    reply = await _chat(port)
                    assert reply.status == 200
                    served.append(reply.headers["x-request-id"])
                kp.signal(signal.SIGTERM)
                try:  # drain_timeout_s = 3: shutdown ends by then (plus process teardown)
                    code = await anyio.to_thread.run_sync(lambda: kp.wait(20))
                except subprocess.TimeoutExpired:
                    pytest.fail("SIGTERM with the store on a full disk never exited")
            finally:
                kp.kill()
            assert code == 75
            log = (tmp_path / "kraken.log").read_text()
            left = re.search(r"(\d+) record\(s\) could not be written to the store before the "
                             r"deadline; (\d+) left in the journal", log)
            assert left is not None, log[-3000:]
            assert int(left.group(1)) == int(left.group(2)) >= 3
            assert "record(s) left in the crash journal (exit 75)" in log
            free(filler)
            # The disk has room again: the next start replays the journal into the store.
            await _start_and_stop(tmp_path, mock.port, store)
        with sqlite3.connect(db) as conn:
            ids = [r[0] for r in conn.execute("SELECT request_id FROM requests")]
            tokens = conn.execute("SELECT SUM(COALESCE(prompt_tokens, 0) + "
                                  "COALESCE(completion_tokens, 0)) FROM requests").fetchone()[0]
            monthly = conn.execute("SELECT SUM(tokens) FROM usage_monthly").fetchone()[0]
            debits = conn.execute("SELECT COUNT(*), COUNT(DISTINCT ref) FROM wallet_transactions "
                                  "WHERE kind = 'usage_debit'").fetchone()
    assert sorted(ids) == sorted(served)  # every completed request, exactly once
    assert monthly == tokens  # billed once too, replay or not
    assert debits == (len(served), len(served))


async def _start_and_stop(tmp_path, mock_port: int, store: dict) -> None:
    """A start (it replays the journal into the store), then a clean stop: exit 0."""
    kp = await anyio.to_thread.run_sync(lambda: _start(tmp_path, mock_port, store=store))
    try:
        kp.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(kp.wait) == 0
    finally:
        kp.kill()


async def test_a_restart_that_cannot_replay_the_journal_is_one_line_and_keeps_it(tmp_path):
    """Kraken killed with records in its journal, restarted on a full disk (systemd's
    Restart=): the replay fails. That must be one line naming the store and a non-zero
    exit, not a traceback, and the journal must stay for the start after the disk is freed."""
    served: list[str] = []
    with tiny_filesystem(tmp_path / "dbfs", "4m") as dbfs:
        store = {"path": str(dbfs / "kraken.db"), "journal_dir": str(tmp_path / "journal")}
        async with running_mock() as mock:
            kp = await anyio.to_thread.run_sync(lambda: _start(
                tmp_path, mock.port, store=store, meter={"flush_interval_ms": 60000}))
            try:
                for _ in range(3):
                    reply = await _chat(kp.port)
                    assert reply.status == 200
                    served.append(reply.headers["x-request-id"])
            finally:
                kp.kill()  # no drain: the records are only in the journal
            filler = fill(dbfs)
            out = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "kraken", "serve", "--config", str(tmp_path / "k.toml")],
                capture_output=True, text=True, timeout=60))
            assert out.returncode == 2, out.stderr[-3000:]
            assert "Traceback" not in out.stderr, out.stderr[-3000:]
            line, = [ln for ln in out.stderr.splitlines() if ln.startswith("kraken: ")]
            assert "store.path" in line and "journal" in line, line
            assert list((tmp_path / "journal").glob("seg-*")), "the journal was kept"
            free(filler)
            await _start_and_stop(tmp_path, mock.port, store)
        assert sorted(_stored(dbfs / "kraken.db")) == sorted(served)
