"""The relay's chunk framing toward an HTTP/1.1 client, over real sockets: a provider's chunk
whose size line is as Kraken writes one is sent as received, any other is framed again, and
either way the client gets the same bytes as if every chunk were framed by Kraken."""
from __future__ import annotations

import pytest

from harness import db_rows, kraken_mapping, running_kraken, wait_for
from kraken.h1framing import NO_LIMIT, ChunkedBody
from rawprovider import SSE_HEAD, scripted_provider, stream_through

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


async def test_chunk_frames_are_relayed_or_reframed_as_kraken_writes_them(tmp_path):
    # the head, then each frame after a pause: each a read of its own
    server, port = await scripted_provider([[SSE_HEAD, *frames()]], 0.02)
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            got = await stream_through(k.port)
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
