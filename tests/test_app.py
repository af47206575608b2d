"""Process lifecycle with a real ``kraken serve`` subprocess: drain on SIGTERM, and no
completed record lost to ``kill -9``."""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3

import anyio
import h11
import pytest

from harness import (KrakenProcess, auth_headers, free_port, http, kraken_mapping, running_kraken,
                     running_mock, wait_for, write_toml)

pytestmark = pytest.mark.anyio


def stream_body(**mock) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "stream": True, "mock": mock}).encode()


def request_ids(db) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests")]
    finally:
        conn.close()


def process(tmp_path, mock_port: int, **sections) -> KrakenProcess:
    port = free_port()
    sections["server"] = {"port": port, **sections.get("server", {})}
    doc = kraken_mapping(tmp_path, mock_port, **sections)
    path = tmp_path / "kraken.toml"
    write_toml(path, doc)
    return KrakenProcess(path, port, tmp_path / "kraken.log")


async def test_sigterm_drains_in_flight_stream_then_exits_zero(tmp_path):
    async with running_mock() as mock:
        kp = process(tmp_path, mock.port)
        await anyio.to_thread.run_sync(kp.start)
        try:
            pending = asyncio.ensure_future(http(kp.port, "POST", "/v1/chat/completions",
                                                 stream_body(chunks=40, chunk_delay_ms=25),
                                                 auth_headers()))
            await asyncio.sleep(0)
            with anyio.fail_after(5):  # the stream is in flight at the provider
                while not mock.requests:
                    await asyncio.sleep(0.01)
            kp.signal(signal.SIGTERM)
            reply = await pending
            assert reply.status == 200 and reply.body.endswith(b"data: [DONE]\n\n")
            code = await anyio.to_thread.run_sync(kp.wait)
            assert code == 0
            assert request_ids(tmp_path / "kraken.db") == [reply.headers["x-request-id"]]
            assert list((tmp_path / "kraken.db.journal").iterdir()) == [], "journal trimmed"

        finally:
            kp.kill()


async def test_drain_deadline_records_aborted_shutdown(tmp_path):
    async with running_mock() as mock:
        kp = process(tmp_path, mock.port, server={"drain_timeout_s": 0.3})
        await anyio.to_thread.run_sync(kp.start)
        try:
            pending = asyncio.ensure_future(http(kp.port, "POST", "/v1/chat/completions",
                                                 stream_body(chunks=200, chunk_delay_ms=50),
                                                 auth_headers()))
            with anyio.fail_after(5):
                while not mock.requests:
                    await asyncio.sleep(0.01)
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
            with pytest.raises((h11.RemoteProtocolError, ConnectionError)):
                await pending  # the client sees the stream cut, never a fake clean end
            conn = sqlite3.connect(tmp_path / "kraken.db")
            (error_type,), = conn.execute("SELECT error_type FROM requests").fetchall()
            conn.close()
            assert error_type == "aborted_shutdown"
        finally:
            kp.kill()


async def test_kill_9_under_load_loses_no_completed_record(tmp_path):
    """Every request a client saw complete is in the database exactly once, across
    three SIGKILLs mid-load and restarts (the crash journal is replayed at startup)."""
    completed: list[str] = []
    async with running_mock(chunks=5) as mock:
        kp = process(tmp_path, mock.port, meter={"flush_interval_ms": 500, "batch_max": 1000})
        for round_ in range(3):
            await anyio.to_thread.run_sync(kp.start)
            stop = asyncio.Event()

            async def client(n: int) -> None:
                for i in range(200):  # bounded in requests (and by the kill below)
                    if stop.is_set():
                        return
                    try:
                        r = await http(kp.port, "POST", "/v1/chat/completions",
                                       stream_body(chunks=5) if i % 2 else
                                       json.dumps({"model": "mock-gpt",
                                                   "messages": [{"role": "user", "content": "x"}]}).encode(),
                                       auth_headers(), timeout=5)
                    except (OSError, asyncio.IncompleteReadError, TimeoutError, Exception):
                        return
                    done = r.body.endswith(b"data: [DONE]\n\n") if i % 2 else r.body.endswith(b"}")
                    if r.status == 200 and done:
                        completed.append(r.headers["x-request-id"])

            tasks = [asyncio.ensure_future(client(n)) for n in range(8)]
            target = len(completed) + 60
            with anyio.fail_after(30):
                while len(completed) < target:
                    await asyncio.sleep(0.005)
            kp.kill()  # SIGKILL mid-load: no drain, no flush
            stop.set()
            await asyncio.gather(*tasks)
        await anyio.to_thread.run_sync(kp.start)  # replays the journal left by the last kill
        kp.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(kp.wait) == 0
    stored = request_ids(tmp_path / "kraken.db")
    assert len(stored) == len(set(stored))
    missing = set(completed) - set(stored)
    assert not missing, f"{len(missing)} completed requests lost of {len(completed)}"
    assert len(completed) >= 180


async def test_readyz_goes_red_when_store_is_locked_and_queue_bound_gives_503(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, store={"busy_timeout_ms": 50},
                             meter={"queue_max": 3, "flush_interval_ms": 10, "retry_backoff_ms": 20})
        async with running_kraken(doc) as k:
            assert (await http(k.port, "GET", "/readyz")).status == 200
            lock = sqlite3.connect(k.db_path, timeout=5, isolation_level=None,
                                   check_same_thread=False)
            # Off the event loop: a Kraken transaction in flight needs the loop to finish.
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
            try:
                body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}).encode()
                statuses = [(await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())).status
                            for _ in range(5)]
                assert statuses[:3] == [200, 200, 200]
                assert statuses[3:] == [503, 503]
                with anyio.fail_after(5):
                    while (await http(k.port, "GET", "/readyz")).status != 503:
                        await asyncio.sleep(0.02)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            with anyio.fail_after(5):
                while (await http(k.port, "GET", "/readyz")).status != 200:
                    await asyncio.sleep(0.02)
            # Green again once the queue has room, which may be before every record is in:
            # the batch taken while locked may hold only the first (wait, bounded, for all 3).
            await wait_for(lambda: len(request_ids(k.db_path)) >= 3)
            assert len(request_ids(k.db_path)) == 3
            ok = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
            assert ok.status == 200


def log_lines(kp: KrakenProcess, text: str) -> list[str]:
    return [line for line in kp.log_path.read_text().splitlines() if text in line]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_stop_signal_cuts_the_drain_short_and_loses_no_record(tmp_path, second):
    """An operator's second Ctrl-C (or orchestration's second TERM) ends the drain at once, as
    uvicorn's and nginx's fast shutdown do: the streams still going are cut instead of getting
    the whole drain_timeout_s, and every admitted request is still recorded."""
    async with running_mock() as mock:
        kp = process(tmp_path, mock.port)  # drain_timeout_s: the default 30 s
        await anyio.to_thread.run_sync(kp.start)
        try:
            done = await http(kp.port, "POST", "/v1/chat/completions", json.dumps(
                {"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}).encode(),
                auth_headers())
            assert done.status == 200
            streams = [asyncio.ensure_future(http(
                kp.port, "POST", "/v1/chat/completions",
                stream_body(chunks=600, chunk_delay_ms=50), auth_headers(), timeout=60))
                for _ in range(3)]  # 30 s each
            await wait_for(lambda: len(mock.requests) == 4)
            kp.signal(signal.SIGTERM)
            await wait_for(lambda: log_lines(kp, "shutting down: draining"))
            kp.signal(second)
            assert await anyio.to_thread.run_sync(kp.wait, 10) == 0  # not after 30 s
            cut = await asyncio.gather(*streams, return_exceptions=True)
            assert all(isinstance(e, (h11.RemoteProtocolError, ConnectionError)) for e in cut), cut
        finally:
            kp.kill()
    conn = sqlite3.connect(tmp_path / "kraken.db")
    rows = dict(conn.execute("SELECT request_id, error_type FROM requests").fetchall())
    conn.close()
    assert len(rows) == 4 and rows.pop(done.headers["x-request-id"]) is None
    assert sorted(rows.values()) == ["aborted_shutdown"] * 3
    assert list((tmp_path / "kraken.db.journal").iterdir()) == [], "journal trimmed"
    assert len(log_lines(kp, "drain cut short")) == 1
    assert f"a second {second.name}: drain cut short" in log_lines(kp, "drain cut short")[0]


def notify_messages(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting on ``sock``, as its KEY=value fields."""
    sock.setblocking(False)
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines()))
    return out


async def test_sighup_during_the_drain_is_ignored_and_reports_no_ready(tmp_path, monkeypatch):
    """systemd takes READY=1 after STOPPING=1 as the service being up again: a reload
    (``systemctl reload`` during ``systemctl stop``) must not send it while draining."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))  # Popen inherits it
    try:
        async with running_mock() as mock:
            kp = process(tmp_path, mock.port)
            await anyio.to_thread.run_sync(kp.start)
            try:
                pending = asyncio.ensure_future(http(kp.port, "POST", "/v1/chat/completions",
                                                     stream_body(chunks=60, chunk_delay_ms=50),
                                                     auth_headers()))
                await wait_for(lambda: mock.requests)
                kp.signal(signal.SIGTERM)
                notify.settimeout(10)
                while "STOPPING" not in (fields := dict(
                        line.split("=", 1) for line in notify.recv(4096).decode().splitlines())):
                    assert "READY" in fields  # the start's
                kp.signal(signal.SIGHUP)
                reply = await pending
                assert reply.status == 200 and reply.body.endswith(b"data: [DONE]\n\n")
                assert await anyio.to_thread.run_sync(kp.wait) == 0
            finally:
                kp.kill()
        after_stopping = notify_messages(notify)
    finally:
        notify.close()
    assert not [m for m in after_stopping if "READY" in m or "RELOADING" in m], after_stopping
    assert len(log_lines(kp, "SIGHUP ignored")) == 1
