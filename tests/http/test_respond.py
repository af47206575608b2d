"""``ResponseSink.respond``: a whole response in one call, head and body in one write, on
HTTP/1.1 and HTTP/2 alike (in memory, then on real sockets)."""
from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from h1wire import connect, parse_responses, read_to_eof
from h1wire import serve as h1_serve
from kraken.config import ServerConfig
from kraken.http.exchange import Request
from kraken.http.h2 import H2Connection
from test_h2 import h2_client
from test_h2 import serve as h2_serve

pytestmark = pytest.mark.anyio

BODY = b'{"ok":true}'


async def respond(req: Request, sink: Any) -> None:
    sink.respond(200, [(b"content-type", b"application/json")], BODY)


class Wire:
    """An in-memory transport that keeps every write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_h1_respond_sends_head_and_body_in_one_write():
    from kraken.http.h1 import H1Connection

    conn = H1Connection(respond, ServerConfig())
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n")
    await settle()
    (data,) = wire.writes
    (resp,) = parse_responses(data, eof=False)
    assert resp.status == 200 and resp.body == BODY
    assert resp.headers[b"content-length"] == b"%d" % len(BODY)
    conn.connection_lost(None)


async def test_h1_respond_keeps_the_connection_alive_and_honours_head():
    async with h1_serve(respond) as server, connect(server.port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n"
                     b"HEAD / HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
        data = await read_to_eof(reader)
    second = data.index(b"HTTP/1.1 ", 1)
    (get,) = parse_responses(data[:second])
    assert get.status == 200 and get.body == BODY
    head, rest = data[second:].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and rest == b""  # HEAD: no body
    assert b"\r\ncontent-length: %d" % len(BODY) in head


async def test_h2_respond_sends_headers_and_data_in_one_write():
    conn = H2Connection(respond, ServerConfig())
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                            (":authority", "k")], end_stream=True)
    conn.data_received(client.data_to_send())
    before = len(wire.writes)
    await settle()
    assert len(wire.writes) == before + 1  # HEADERS and DATA together
    response = wire.writes[-1]
    assert response[3] == 0x1 and BODY in response  # starts with HEADERS, carries the body
    events = client.receive_data(b"".join(wire.writes))
    kinds = [type(e) for e in events]
    assert h2.events.ResponseReceived in kinds and h2.events.StreamEnded in kinds
    conn.connection_lost(None)


async def test_h2_respond_on_a_real_connection():
    async with h2_serve(respond) as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("GET", "/"))
        head = await cl.response(cl.request("HEAD", "/"))
    assert resp.status == 200 and resp.body == BODY
    assert resp.headers[b"content-length"] == b"%d" % len(BODY)
    assert head.status == 200 and head.body == b"" and head.ended
