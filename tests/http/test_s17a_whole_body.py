"""A request whose whole Content-Length body came with its head is taken at once, without a
body reader (H1Connection._receive_body): the handler must get exactly the request, and the
client exactly the answers, that the reader gives when the same bytes arrive in pieces."""
from __future__ import annotations

import asyncio

import pytest

from h1wire import parse_responses
from kraken.config import ServerConfig
from kraken.h1framing import FixedBody
from kraken.http.h1 import H1Connection
from test_respond import Wire

pytestmark = pytest.mark.anyio


def post(body: bytes, path: bytes = b"/p", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: k\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


STREAMS = [
    post(b'{"model":"m"}'),
    post(b""),
    post(b"x"),
    post(b"a" * 70_000),
    post(b"abc", extra=b"Content-Type: application/json\r\nExpect: 100-continue\r\n"),
    post(b"abc", version=b"1.0"),
    post(b"abc") + post(b"second", path=b"/two"),  # pipelined: the rest is the next head
    post(b"abc") + b"\r\n" + post(b"de", path=b"/crlf"),  # a stray CRLF between them
    post(b"abc") + b"GET /g HTTP/1.1\r\nHost: k\r\n\r\n",
    post(b"abc") + b"GET /g HTTP/1.1\r\nHo",  # the next head cut short
    b"GET /nobody HTTP/1.1\r\nHost: k\r\n\r\n",
    post(b"abc", extra=b"Connection: close\r\n") + post(b"after close"),
    b"POST /c HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
]


async def exchange(data: bytes, pieces: int) -> tuple[list[tuple], bytes]:
    """Feed ``data`` in ``pieces`` reads (1: the whole at once); the requests the handler got
    and the bytes the client got."""
    seen: list[tuple] = []

    async def handler(req, sink) -> None:
        seen.append((req.method, req.target, req.headers, req.body, req.http_version))
        sink.respond(200, [], b"%d:%s" % (len(req.body), req.body[:8]))

    conn = H1Connection(handler, ServerConfig())
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    step = -(-len(data) // pieces)
    for at in range(0, len(data), step):
        conn.data_received(data[at:at + step])
        for _ in range(5):
            await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    conn.connection_lost(None)
    return seen, b"".join(wire.writes)


def without_dates(data: bytes) -> list:
    """The answers, without their Date and the 100 Continue a body sent in pieces gets."""
    return [(r.status, r.body, {k: v for k, v in r.headers.items() if k != b"date"})
            for r in parse_responses(data, eof=False) if r.status != 100]


@pytest.mark.parametrize("data", STREAMS)
async def test_a_whole_body_in_one_read_is_the_request_its_pieces_make(data: bytes):
    whole = await exchange(data, 1)
    assert whole[0], "no request reached the handler"
    for pieces in (2, 3, 7, len(data)):
        pieced = await exchange(data, pieces)
        assert pieced[0] == whole[0]
        assert without_dates(pieced[1]) == without_dates(whole[1])


async def test_a_whole_body_takes_no_body_reader(monkeypatch):
    """Observable: the reader is never fed when the body came with its head, and is when it
    did not (the general path still works)."""
    fed = []
    feed = FixedBody.feed
    monkeypatch.setattr(FixedBody, "feed", lambda self, data, out: fed.append(data)
                        or feed(self, data, out))
    seen, _ = await exchange(post(b"hello"), 1)
    assert seen[0][3] == b"hello" and fed == []
    seen, _ = await exchange(post(b"hello"), len(post(b"hello")))  # a byte a read
    assert seen[0][3] == b"hello" and b"".join(fed) == b"hello" and len(fed) > 5
