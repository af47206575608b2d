"""A provider's usage count beyond what the store can hold (a u64 "-1" from a buggy backend:
18446744073709551615, which orjson reads as an int) loses that one record, not the gateway."""
from __future__ import annotations

import asyncio
import json

import pytest
from harness import auth_headers, db_rows, http, kraken_mapping, running_kraken, wait_for

pytestmark = pytest.mark.anyio

CHAT = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()


def answer(prompt_tokens: int) -> bytes:
    body = (b'{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":%d,'
            b'"completion_tokens":3}}' % prompt_tokens)
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body))


async def provider(answers: list[bytes]):
    """Answers each request on its connection with the next of ``answers``."""
    async def on_conn(reader, writer):
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answers.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_u64_usage_count_costs_its_record_and_kraken_keeps_serving(tmp_path):
    """Before: the batch writer died on OverflowError and took the whole process down."""
    server, port = await provider([answer(2**64 - 1), answer(7)])
    async with server, running_kraken(kraken_mapping(tmp_path, port)) as k:
        first = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
        assert first.status == 200
        second = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
        assert second.status == 200
        rows = await wait_for(lambda: db_rows(k.db_path))
        assert [r["prompt_tokens"] for r in rows] == [7]
        assert not k.task.done()
