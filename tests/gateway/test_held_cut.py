"""A non-streamed answer is held until its end (``CostSink``, for its cost header): when the
provider cuts it (FIN or read timeout before the body is whole) nothing has reached the client,
so the call is refused like one the provider never answered: the next candidate is tried, or
the client gets the endpoint's error, and the record says what the client saw."""
from __future__ import annotations

import asyncio
import json

import pytest
from harness import auth_headers, http, kraken_mapping, running_kraken, running_mock, wait_rows

pytestmark = pytest.mark.anyio

CHAT = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n"
PART = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{'


async def cutting_provider(hang: bool):
    """Answers 200 with a Content-Length body it cuts short: a FIN, or (``hang``) silence."""
    async def on_conn(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
        writer.write(HEAD + PART)
        await writer.drain()
        if hang:
            await reader.read()  # until Kraken gives up on it
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def config(tmp_path, cut_port: int, good_port: int) -> dict:
    doc = kraken_mapping(tmp_path, cut_port)
    doc["providers"]["mockai"]["read_timeout_s"] = 0.3
    doc["providers"]["good"] = {**doc["providers"]["mockai"], "models": ["good-gpt"],
                                "base_url": f"http://127.0.0.1:{good_port}/v1"}
    doc["models"] = {"with-fallback": ["mockai/mock-gpt", "good/mock-gpt"]}
    return doc


@pytest.mark.parametrize("hang, status, error_type",
                         [(False, 502, "upstream_error"), (True, 504, "upstream_timeout")])
async def test_a_cut_held_answer_is_an_error_answer_and_recorded_as_one(tmp_path, hang, status,
                                                                         error_type):
    """Before: the client's connection was cut with no response, recorded as a 200."""
    server, port = await cutting_provider(hang)
    async with server, running_mock() as good, running_kraken(config(tmp_path, port,
                                                                     good.port)) as k:
        r = await http(k.port, "POST", "/v1/chat/completions", CHAT, auth_headers())
        assert r.status == status and r.json()["error"]["type"] == error_type
        row = (await wait_rows(k.db_path, 1))[0]
        assert (row["status"], row["error_type"]) == (status, error_type)
        assert row["ttfb_ms"] is None


async def test_a_cut_held_answer_falls_back_to_the_next_candidate(tmp_path):
    """No byte reached the client: the fallback rule applies (another provider answers)."""
    server, port = await cutting_provider(False)
    async with server, running_mock() as good, running_kraken(config(tmp_path, port,
                                                                     good.port)) as k:
        body = json.loads(CHAT) | {"model": "with-fallback"}
        r = await http(k.port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                       auth_headers())
        assert r.status == 200 and r.body == good.responses[-1].body
        row = (await wait_rows(k.db_path, 1))[0]
        assert (row["status"], row["provider"], row["fallback_used"]) == (200, "good", 1)
        assert row["error_type"] == "upstream_error"  # the attempt that failed, as on a 5xx
        assert row["prompt_tokens"] is not None
