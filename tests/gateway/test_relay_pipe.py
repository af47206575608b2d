"""The relay's pipe (``UpstreamConnection.pipe``, ``Relay.on_chunk``), over real sockets: once
a plain chunk of whole events has passed, later such reads skip the parser and the tap, yet a
usage object still reaches the record (and is hidden from a client that did not ask for it)
whether it comes in a read of its own, spaced, or split across two reads."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness import TEST_KEY, db_rows, kraken_mapping, running_kraken, wait_for
from rawprovider import SSE_HEAD, scripted_provider, stream_through

pytestmark = pytest.mark.anyio

EVENTS = [b'data: {"n":%d,"choices":[{"delta":{"content":"x"}}]}\n\n' % i for i in range(4)]
COMPACT = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":6,"total_tokens":9}}\n\n'
SPACED = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}}\n\n'
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def usage_reads(usage: bytes, split: int | None) -> list[bytes]:
    """The usage event as one read, or cut at ``split`` into two reads (two chunks)."""
    if split is None:
        return [chunk(usage)]
    return [chunk(usage[:split]), chunk(usage[split:])]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("usage, split", [
    (COMPACT, None),
    (SPACED, None),
    (COMPACT, COMPACT.index(b'"usage"') + 4),  # the key itself cut in two
    (COMPACT, len(COMPACT) - 2),  # the event's end in the next read
], ids=["own-read", "spaced", "key-split", "end-split"])
async def test_usage_after_piped_reads_is_recorded_and_hidden_unless_asked(
        tmp_path, include_usage, usage, split):
    reads = [SSE_HEAD, *map(chunk, EVENTS[:3]), *usage_reads(usage, split),
             chunk(EVENTS[3]), chunk(DONE), b"0\r\n\r\n"]
    server, port = await scripted_provider([reads], 0.02)  # each write a read of its own
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            got = await stream_through(k.port, include_usage=include_usage)
            rows = await wait_for(lambda: db_rows(k.db_path))
    body = got.partition(b"\r\n\r\n")[2]
    sent = [*EVENTS[:3], *([usage] if include_usage else []), EVENTS[3], DONE]
    if include_usage:  # what the provider sent, chunk for chunk
        expected = b"".join(reads[1:])
    else:  # the usage event cut out, every other event as sent
        expected = b"".join(map(chunk, sent)) + b"0\r\n\r\n"
    assert body == expected
    assert rows[0]["prompt_tokens"] == 3 and rows[0]["completion_tokens"] == 6


async def test_an_http10_client_gets_the_events_unframed_never_piped(tmp_path):
    """An HTTP/1.0 response has no chunk framing: a provider's frames are never passed on as
    they are, piped or not (the body is the events, up to the close)."""
    reads = [SSE_HEAD, *map(chunk, EVENTS), chunk(COMPACT), chunk(DONE), b"0\r\n\r\n"]
    server, port = await scripted_provider([reads], 0.02)
    body = json.dumps({"model": "mock-gpt", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
            writer.write(b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
                         b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (TEST_KEY.encode(), len(body), body))
            got = await asyncio.wait_for(reader.read(-1), 10)  # until Kraken closes
            writer.close()
            rows = await wait_for(lambda: db_rows(k.db_path))
    head, _, got_body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert got_body == b"".join(EVENTS) + DONE  # usage hidden, nothing framed
    assert rows[0]["prompt_tokens"] == 3 and rows[0]["completion_tokens"] == 6
