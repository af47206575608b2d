"""UpstreamConnection over a real local socket: body bytes go straight from the parser to the
exchange's handler, and nothing reaches a handler whose exchange was cancelled mid-read."""
from __future__ import annotations

import asyncio

import pytest

from kraken.errors import UpstreamError
from kraken.upstream.connection import UpstreamConnection

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'data: {"n":1}\n\n'


class Handler:
    def __init__(self, abort_on_head: UpstreamConnection | None = None):
        self.done = asyncio.get_running_loop().create_future()
        self.reads: list[bytes] = []
        self.data: list[bytes] = []
        self.status = 0
        self.headed = asyncio.get_running_loop().create_future()
        self._abort = abort_on_head

    def on_head(self, status, headers):
        self.status = status
        self.headed.set_result(None)
        if self._abort is not None:
            self._abort.abort()  # e.g. the client went away while the head was relayed

    def on_data(self, data):
        self.data.append(data)

    def on_end(self):
        self.done.set_result(None)

    def on_error(self, exc):
        self.done.set_exception(exc)

    def on_read_end(self):
        self.reads.append(b"".join(self.data))


async def serve(reply: list[bytes]):
    """A provider that answers any request with ``reply``, one socket write per item."""
    async def on_conn(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        for piece in reply:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate reads on the other side
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def connect(port: int) -> UpstreamConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: UpstreamConnection("http://x", 5.0), "127.0.0.1", port)
    return conn


async def test_body_reaches_the_handler_exactly_per_read():
    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    server, port = await serve([HEAD, frame, frame + frame, b"0\r\n\r\n"])
    async with server:
        conn = await connect(port)
        handler = Handler()
        conn.send("GET", "/", [(b"host", b"x")], b"", handler)
        await asyncio.wait_for(handler.done, 5)
        assert handler.status == 200
        assert b"".join(handler.data) == EVENT * 3
        assert EVENT * 2 in handler.data  # two chunks of one read: one on_data call
        assert conn.reusable
        conn.close()


async def test_cancelled_exchange_gets_no_bytes_of_the_same_read():
    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    server, port = await serve([HEAD + frame])
    async with server:
        conn = await connect(port)
        handler = Handler()
        handler._abort = conn
        conn.send("GET", "/", [(b"host", b"x")], b"", handler)
        await asyncio.wait_for(handler.headed, 5)
        assert handler.status == 200
        assert handler.data == [] and conn.closed


async def test_a_request_sent_first_is_answered_to_the_handler_expect_names():
    """The gateway writes the request, then builds its relay: the answer reaches that."""
    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    server, port = await serve([HEAD + frame + b"0\r\n\r\n"])
    async with server:
        conn = await connect(port)
        conn.send("HEAD", "/", [(b"host", b"x")], b"")
        handler = Handler()
        conn.expect(handler)
        await asyncio.wait_for(handler.done, 5)
        assert handler.status == 200 and handler.data == []  # a HEAD's answer has no body
        conn.close()
        conn = await connect(port)
        conn.send("GET", "/", [(b"host", b"x")], b"")
        conn.expect(handler := Handler())
        await asyncio.wait_for(handler.done, 5)
        assert b"".join(handler.data) == EVENT and conn.reusable
        conn.close()


class Wire:
    """A transport that keeps what is written."""

    def __init__(self):
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)


@pytest.mark.parametrize("body", [b"", b'{"model":"m"}'])
async def test_a_request_is_written_in_one_write_as_its_head_then_its_body(body: bytes):
    conn = UpstreamConnection("http://x", 5.0)
    conn.transport = wire = Wire()  # type: ignore[assignment]
    handler = Handler()
    conn.send("POST", "/v1/chat/completions",
              [(b"host", b"x:1"), (b"content-length", b"%d" % len(body))], body, handler)
    assert wire.out == [b"POST /v1/chat/completions HTTP/1.1\r\nhost: x:1\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body)]
    conn.connection_lost(None)  # drops the read deadline's timer
    assert isinstance(handler.done.exception(), UpstreamError)  # closed before an answer


async def test_a_chunked_upload_starts_with_its_first_piece_framed():
    conn = UpstreamConnection("http://x", 5.0)
    conn.transport = wire = Wire()  # type: ignore[assignment]
    handler = Handler()
    conn.send("POST", "/up", [(b"transfer-encoding", b"chunked")], b"abc", handler, more=True)
    assert wire.out == [b"POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"]
    conn.connection_lost(None)
    assert isinstance(handler.done.exception(), UpstreamError)  # closed before an answer


@pytest.mark.parametrize("used", [False, True])
async def test_a_closed_connection_is_freed_without_the_cycle_collector(used: bool, pipe_version):
    """Once lost, a provider connection holds neither its transport (which holds it) nor its
    deadline's timer callback nor its last exchange: reference counting alone frees it, where
    a cycle would keep it (and, used, its last exchange's objects) until a full gc run."""
    import gc
    import weakref

    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    if used:
        server, port = await serve([HEAD, frame, b"0\r\n\r\n"])
    else:  # never asked anything: reads until Kraken closes
        async def on_conn(reader, writer):
            await reader.read()
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    async with server:
        conn = await connect(port)
        handler = Handler()
        if used:
            conn.send("GET", "/", [(b"host", b"x")], b"", handler)
            await asyncio.wait_for(handler.done, 5)
        gc.disable()
        try:
            lost = asyncio.get_running_loop().create_future()
            conn.on_close = lambda c: lost.set_result(None)
            gone, handler_gone = weakref.ref(conn), weakref.ref(handler)
            conn.close()
            await asyncio.wait_for(lost, 5)
            del conn, handler
            await asyncio.sleep(0)  # the transport's own close callback
            assert gone() is None and handler_gone() is None
        finally:
            gc.enable()


class PausingHandler(Handler):
    """Pauses its connection as a relay's sink does when the client's buffer fills: on the
    response's last read (``on_data``) or with the held answer's one write (``on_end``)."""

    def __init__(self, conn: UpstreamConnection, where: str):
        super().__init__()
        self._conn, self._where = conn, where

    def on_data(self, data):
        super().on_data(data)
        if self._where == "on_data":
            self._conn.pause_reading()

    def on_end(self):
        if self._where == "on_end":
            self._conn.pause_reading()
        super().on_end()


@pytest.mark.parametrize("where", ["on_data", "on_end"])
async def test_a_pause_by_the_last_read_does_not_outlive_the_response(where):
    """A paused connection given back to the pool never read its next answer: that request
    hung for the read timeout, then was retried as if the connection were stale."""
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def on_conn(reader, writer):
        for _ in range(2):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)  # one read: the body and its end
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    async with server:
        conn = await connect(server.sockets[0].getsockname()[1])
        first = PausingHandler(conn, where)
        conn.send("GET", "/", [(b"host", b"x")], b"", first)
        await asyncio.wait_for(first.done, 5)
        assert conn.reusable
        conn.send("GET", "/", [(b"host", b"x")], b"", second := Handler())
        await asyncio.wait_for(second.done, 2)
        assert b"".join(second.data) == b"ok"
        conn.close()
