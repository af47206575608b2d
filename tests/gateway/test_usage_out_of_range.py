"""A provider's absurd usage count (a u64 "-1" from a buggy backend: 18446744073709551615, which
orjson reads as an int; anything past JSON's safe integer range) is read as unknown: the record
is written with that count null, nothing is charged for it, and the gateway keeps serving."""
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


async def test_a_u64_usage_count_is_unknown_and_kraken_keeps_serving(tmp_path):
    """Before 2c1212d the batch writer died on OverflowError and took the whole process down;
    then the store set the record aside, after the billing guard had counted it."""
    server, port = await provider([answer(2**64 - 1), answer(7)])
    async with server, running_kraken(kraken_mapping(tmp_path, port)) as k:
        first = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
        assert first.status == 200
        second = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
        assert second.status == 200
        rows = await wait_for(lambda: (r := db_rows(k.db_path)) and len(r) == 2 and r)
        assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(None, 3), (7, 3)]
        assert not k.task.done()


@pytest.mark.parametrize("count", [2**53, 2**63, 2**64 - 1])
async def test_a_huge_count_charges_no_monthly_token_cap(tmp_path, count):
    """Before: ``BillingGuard.note`` counted the huge count (the store then set the record aside,
    or for one below 2**63 kept it), so the customer's cap refused every later request (429)."""
    server, port = await provider([answer(count), answer(7), answer(8)])
    doc = kraken_mapping(tmp_path, port, plans={"default": "capped",
                                                "capped": {"monthly_token_cap": 2000}})
    async with server, running_kraken(doc) as k:
        for _ in range(3):  # the last one is admitted on the counts the first two left
            r = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
            assert r.status == 200, r.body
        rows = await wait_for(lambda: (r := db_rows(k.db_path)) and len(r) == 3 and r)
        assert [r["prompt_tokens"] for r in rows] == [None, 7, 8]
