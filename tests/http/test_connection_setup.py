"""What a new inbound connection is given and makes before its first request: the headers
on every response, the loop it runs on, the timers it holds (in memory, one ``Wire`` each)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from h1wire import parse_responses
from kraken.config import ServerConfig
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.h1 import H1Connection
from kraken.http.listener import ProtocolSelector
from test_respond import Wire, respond, settle

pytestmark = pytest.mark.anyio

GET = b"GET / HTTP/1.1\r\nHost: k\r\n\r\n"
HSTS = (b"strict-transport-security", b"max-age=63072000")


class SwitchableWire(Wire):
    """A ``Wire`` a ``ProtocolSelector`` can hand to the protocol it chose."""

    protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


def heads(wire: Wire) -> list[dict[bytes, bytes]]:
    return [resp.headers for resp in parse_responses(b"".join(wire.writes), eof=False)]


async def test_always_headers_are_on_every_response_of_the_connection():
    conn = H1Connection(respond, ServerConfig(), always_headers=[HSTS, (b"x-a", b"1")])
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    for _ in range(2):
        conn.data_received(GET)
        await settle()
    assert [(h[HSTS[0]], h[b"x-a"]) for h in heads(wire)] == [(HSTS[1], b"1")] * 2
    conn.connection_lost(None)


@pytest.mark.parametrize("always", [None, []])
async def test_no_always_headers_adds_no_header_line(always):
    conn = H1Connection(respond, ServerConfig(), always_headers=always)
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(GET)
    await settle()
    (head,) = heads(wire)
    assert sorted(head) == [b"content-length", b"content-type", b"date", b"server"]
    conn.connection_lost(None)


@pytest.mark.parametrize("h2c", [True, False])
async def test_the_selector_hands_its_loop_and_headers_to_the_http1_connection(h2c):
    loop = asyncio.get_running_loop()
    selector = ProtocolSelector(respond, ServerConfig(), set(), h2c=h2c, always_headers=[HSTS],
                                limiter=ConnectionLimiter(4))
    wire = SwitchableWire()
    selector.connection_made(wire)  # type: ignore[arg-type]
    selector.data_received(GET)
    await settle()
    conn = wire.protocol
    assert isinstance(conn, H1Connection) and conn.loop is loop
    (head,) = heads(wire)
    assert head[HSTS[0]] == HSTS[1]
    conn.connection_lost(None)


async def test_a_connection_never_paused_makes_no_stall_timer():
    conn = H1Connection(respond, ServerConfig())
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.data_received(GET)
    await settle()
    assert conn._stall_deadline is None
    conn.pause_writing()  # the client stops reading: the stall deadline runs
    assert conn._stall.timeout == ServerConfig().send_stall_timeout_s > 0
    conn.resume_writing()
    assert conn._stall.timeout == 0
    conn.connection_lost(None)
    conn.pause_writing()  # gone: nothing is armed any more
    assert conn._stall.timeout == 0


async def test_a_connection_gone_before_any_pause_arms_no_stall_timer():
    conn = H1Connection(respond, ServerConfig())
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.connection_lost(None)
    conn.pause_writing()
    assert conn._stall.timeout == 0
