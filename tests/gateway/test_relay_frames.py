"""The relay's chunk framing toward an HTTP/1.1 client, over real sockets: a provider's chunk
whose size line is as Kraken writes one is sent as received, any other is framed again, and
either way the client gets the same bytes as if every chunk were framed by Kraken."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness import TEST_KEY, db_rows, kraken_mapping, running_kraken, wait_for
from kraken.h1framing import NO_LIMIT, ChunkedBody

pytestmark = pytest.mark.anyio

EVENTS = [b'data: {"n":%d,"choices":[{"delta":{"content":"x"}}]}\n\n' % i for i in range(6)]
USAGE = (b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":6,'
         b'"total_tokens":9}}\n\n')


def frames() -> list[bytes]:
    """One provider write per chunk; size lines plain, upper-case, zero-padded, with an
    extension; then the usage event, [DONE] and the last chunk in one write."""
    shapes = [b"%x", b"%X", b"00%x", b"%x;ext=1", b"%x", b"0%X"]
    out = [(shape % len(e)) + b"\r\n" + e + b"\r\n" for shape, e in zip(shapes, EVENTS)]
    tail = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in (USAGE, b"data: [DONE]\n\n"))
    return out + [tail + b"0\r\n\r\n"]


async def provider(reply: list[bytes]):
    """An OpenAI-compatible provider answering any request with ``reply``, one write each,
    each read on its own by the other side (it waits for the client's bytes in between)."""
    async def on_conn(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for piece in reply:
            await asyncio.sleep(0.02)
            writer.write(piece)
            await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def raw_stream(port: int) -> bytes:
    """A streamed chat request; the response's bytes as received, up to the last chunk."""
    body = json.dumps({"model": "mock-gpt", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                 % (TEST_KEY.encode(), len(body), body))
    got = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
    writer.close()
    return got


async def test_chunk_frames_are_relayed_or_reframed_as_kraken_writes_them(tmp_path):
    server, port = await provider(frames())
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            got = await raw_stream(k.port)
            rows = await wait_for(lambda: db_rows(k.db_path))
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    decoded: list[bytes] = []
    assert ChunkedBody(NO_LIMIT, 1024).feed(body, decoded) == b""
    assert b"".join(decoded) == b"".join(EVENTS) + b"data: [DONE]\n\n"  # usage event hidden
    # every frame as Kraken writes one: lower-case hex, no leading zero, no extension
    expected = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS)
    assert body.startswith(expected)
    assert rows[0]["prompt_tokens"] == 3 and rows[0]["completion_tokens"] == 6
