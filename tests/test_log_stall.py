"""A stdout nobody reads (journald stalled: its pipe full) never stalls requests.

A real ``kraken serve`` whose stdout is a pipe the test does not read keeps answering; the
request lines that do not fit its log queue are dropped and counted in /metrics. Once the pipe
is read, lines flow again and one line says how many were lost, and a stop writes the process
log's last lines (stderr is not held by stdout) and ends within its bound, read or not.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from harness import auth_headers, free_port, http, kraken_mapping, running_mock, write_toml
from kraken.gateway.request_log import DROPPED_MSG

pytestmark = pytest.mark.anyio

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
DROPPED = re.compile(rb'^kraken_log_lines_dropped_total\{stream="request"\} ([0-9.e+]+)$', re.M)
CHAT = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()


@contextlib.asynccontextmanager
async def kraken_on_a_pipe(tmp: Path, mock_port: int) -> AsyncIterator[tuple]:
    """``kraken serve`` with stdout a 4 KiB pipe (full after ~10 request lines) and a 4 KiB
    log queue, stderr a file; yields (process, port, the pipe's read end)."""
    port = free_port()
    write_toml(tmp / "k.toml", kraken_mapping(tmp, mock_port, server={"port": port},
                                              logging={"queue_max_kib": 4}))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    with open(tmp / "k.stderr.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kraken", "serve", "--config",
                                 str(tmp / "k.toml")], stdout=write_end, stderr=err)
    os.close(write_end)  # the process's exit is the pipe's end
    try:
        with anyio.fail_after(20):
            while not await answers(port, "/readyz"):
                assert proc.poll() is None, (tmp / "k.stderr.log").read_text()
                await anyio.sleep(0.05)
        yield proc, port, read_end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(read_end)


async def answers(port: int, path: str) -> bool:
    with contextlib.suppress(OSError, TimeoutError):
        return (await http(port, "GET", path, timeout=2)).status == 200
    return False


async def dropped(port: int) -> float:
    found = DROPPED.search((await http(port, "GET", "/metrics", timeout=10)).body)
    return float(found[1]) if found else 0.0


async def chat(port: int) -> str:
    """One request, answered within a bound: a stalled loop fails here. Its request id."""
    reply = await http(port, "POST", "/v1/chat/completions", CHAT, auth_headers(), timeout=10)
    assert reply.status == 200, reply.body
    return reply.headers["x-request-id"]


async def fill_until_lines_drop(port: int) -> list[str]:
    """Requests until /metrics counts dropped request lines (a bounded number of them)."""
    ids = []
    for _ in range(40):
        ids += [await chat(port) for _ in range(10)]
        if await dropped(port) > 0:
            return ids
    raise AssertionError("no request line was dropped after 400 requests")


def read_all(fd: int, into: bytearray) -> None:
    """Read the pipe until every writer has closed it (the process ended)."""
    while chunk := os.read(fd, 65536):
        into += chunk


async def test_a_stdout_nobody_reads_costs_request_lines_never_answers(tmp_path):
    async with running_mock() as mock, kraken_on_a_pipe(tmp_path, mock.port) as (proc, port, fd):
        sent = await fill_until_lines_drop(port)
        got = bytearray()
        reader = threading.Thread(target=read_all, args=(fd, got), daemon=True)
        reader.start()  # journald catches up
        later = [await chat(port) for _ in range(3)]
        with anyio.fail_after(10):
            while not all(rid.encode() in got for rid in later):
                await anyio.sleep(0.01)
        lost = await dropped(port)
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 30) == 0
        await anyio.to_thread.run_sync(reader.join, 10)
    lines = [json.loads(line) for line in bytes(got).splitlines()]  # none torn
    notices = [line for line in lines if line["msg"] == DROPPED_MSG]
    logged = [line["request_id"] for line in lines if line["msg"] == "request"]
    assert notices and sum(line["dropped"] for line in notices) == lost > 0
    assert logged[-3:] == later  # flowing again, in order
    assert set(logged) <= set(sent + later) and len(logged) + lost == len(sent + later)
    assert lines.index(notices[-1]) < len(lines) - 3  # the gap is announced before them
    stderr = (tmp_path / "k.stderr.log").read_text().splitlines()
    assert "kraken stopped" in json.loads(stderr[-1])["msg"]


async def test_a_stop_while_stdout_still_takes_nothing_ends_within_its_bound(tmp_path):
    """Nobody ever reads stdout: the stop still ends (the queue gets a bounded flush) and the
    drain's own lines reach stderr, whose writer stdout's full pipe does not hold."""
    async with running_mock() as mock, kraken_on_a_pipe(tmp_path, mock.port) as (proc, port, _):
        await fill_until_lines_drop(port)
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
    stderr = (tmp_path / "k.stderr.log").read_text()
    assert "shutting down: draining" in stderr
    assert "kraken stopped" in json.loads(stderr.splitlines()[-1])["msg"]
