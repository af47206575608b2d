"""The admin listener keeps the client listener's limits, through a real ``kraken serve``
process: the usage page checks API keys under the same per-address auth-failure limit (one
limiter shared with the client listener), one address may hold at most
``[server] max_connections_per_ip`` admin connections, and idle admin connections are closed
after the head / keep-alive timeouts."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import AsyncIterator

import anyio
import pytest

from adminkit import ADMIN_TOKEN
from authkit import chat_from, metric, request_from
from harness import (TEST_KEY, KrakenProcess, free_port, http, kraken_mapping, running_mock,
                     write_toml)
from kraken.admin.token import hash_token

pytestmark = pytest.mark.anyio

LIMIT = 5
CAP = 3
IDLE_S = 1.0
"""head_timeout_s and keepalive_timeout_s of the test process (small, so the test is short)."""
BOUND_S = 15.0
"""How long a test waits for something that must happen after IDLE_S."""


def wrong_secret(n: int) -> str:
    """A well-formed key for the configured id, each with its own wrong secret (a real miss)."""
    prefix, _, secret = TEST_KEY.rpartition("_")
    return f"{prefix}_{'x' * (len(secret) - 8)}{n:08d}"


@contextlib.asynccontextmanager
async def admin_process(tmp: Path) -> AsyncIterator[tuple[int, int]]:
    """(client port, admin port) of a ``kraken serve`` subprocess with its admin listener."""
    async with running_mock() as mock:
        port, admin_port = free_port(), free_port()
        doc = kraken_mapping(
            tmp, mock.port,
            server={"port": port, "max_connections_per_ip": CAP, "head_timeout_s": IDLE_S,
                    "keepalive_timeout_s": IDLE_S},
            admin={"port": admin_port, "token_hash": hash_token(ADMIN_TOKEN)},
            limits={"ip_auth_failures": LIMIT})
        write_toml(tmp / "k.toml", doc)
        kp = KrakenProcess(tmp / "k.toml", port, tmp / "k.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            yield port, admin_port
        finally:
            kp.kill()


def usage_data(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_usage_page_runs_bcrypt_at_most_the_address_limit_then_answers_429(tmp_path):
    async with admin_process(tmp_path) as (port, admin_port):
        runs_before = await metric(port, "kraken_bcrypt_runs_total")
        replies = [await request_from(admin_port, "GET", "/usage/data",
                                      headers=usage_data(wrong_secret(n))) for n in range(30)]
        assert [r.status for r in replies] == [401] * LIMIT + [429] * (30 - LIMIT)
        assert all(r.headers["retry-after"].isdigit() for r in replies[LIMIT:])
        assert await metric(port, "kraken_bcrypt_runs_total") - runs_before == LIMIT
        # One limiter for both listeners: the address is refused on the client port too...
        assert (await chat_from(port, wrong_secret(99))).status == 429
        # ...while another address still reads its usage with a valid key.
        own = await request_from(admin_port, "GET", "/usage/data", source="127.0.0.2",
                                 headers=usage_data(TEST_KEY))
        assert own.status == 200, own.body


async def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by BOUND_S)."""
    loop = asyncio.get_running_loop()
    data = b""
    with anyio.fail_after(BOUND_S):
        while chunk := await loop.sock_recv(sock, 65536):
            data += chunk
    return data


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_one_address_holds_at_most_the_connection_cap_on_the_admin_listener(tmp_path):
    async with admin_process(tmp_path) as (port, admin_port):
        shed = {"reason": "per_ip_connections"}
        before = await metric(port, "kraken_refused_total", shed)
        idle = [await connect(admin_port) for _ in range(CAP)]
        over = await connect(admin_port)
        try:
            refused = await read_all(over)
            assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
            assert b"too_many_connections" in refused
            assert await metric(port, "kraken_refused_total", shed) - before == 1
            # Another address is not affected by this one's connections.
            page = await request_from(admin_port, "GET", "/usage", source="127.0.0.2")
            assert page.status == 200
        finally:
            for sock in idle + [over]:
                sock.close()
        # Once they are closed the address may connect again.
        with anyio.fail_after(BOUND_S):
            while (await http(admin_port, "GET", "/usage")).status != 200:
                await asyncio.sleep(0.05)


async def test_idle_admin_connections_are_closed_after_the_timeouts(tmp_path):
    async with admin_process(tmp_path) as (_, admin_port):
        silent = await connect(admin_port)  # never sends a request head
        kept = await connect(admin_port)  # one request, then idle on keep-alive
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(kept, b"GET /usage HTTP/1.1\r\nHost: t\r\n\r\n")
            answered = await read_all(kept)
            assert answered.startswith(b"HTTP/1.1 200")
            closed = await read_all(silent)
            assert not closed or closed.startswith(b"HTTP/1.1 408"), closed[:200]
        finally:
            silent.close()
            kept.close()
