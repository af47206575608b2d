"""A sink wrapped by the gateway (an opted-in stream's cost) sees every relayed byte through its
own ``write``, also when a provider chunk could be sent as received (``write_frame``)."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness import TEST_KEY, kraken_mapping, running_kraken

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
          b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
          b'"total_tokens":4}}\n\n', b"data: [DONE]\n\n"]


async def provider():
    """Each chunk in a write of its own, read by Kraken on its own (the usage event alone)."""
    async def on_conn(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(HEAD)
        for event in EVENTS:
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_an_opted_in_stream_gets_its_cost_when_the_usage_chunk_is_a_read_of_its_own(tmp_path):
    server, port = await provider()
    doc = kraken_mapping(tmp_path, port)
    doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
    req = json.dumps({"model": "mock-gpt", "stream": True, "stream_options": {"include_usage": True},
                      "messages": [{"role": "user", "content": "hi"}]}).encode()
    async with server:
        async with running_kraken(doc) as k:
            reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                         b"content-type: application/json\r\nx-kraken-include-cost: true\r\n"
                         b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (TEST_KEY.encode(), len(req), req))
            got = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
            writer.close()
    # 3 prompt + 1 completion tokens at 1 and 2 USD per million: 0.000005
    assert b'"total_tokens":4,"cost_usd":0.000005}}\n\n' in got
    assert got.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
