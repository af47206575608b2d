"""The relay's one retry: a provider that closes a kept-alive connection without answering
gets the same request again on a fresh connection (the pipeline shapes it again rather than
holding the body while an answer streams)."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness import auth_headers, http, kraken_mapping, running_kraken

pytestmark = pytest.mark.anyio

ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "mock-gpt",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}).encode()


class DroppingProvider:
    """Answers the first request of its first connection, then closes that connection on
    its second request without a byte; every other connection answers. Keeps each request
    as (connection number, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> DroppingProvider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, served = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append((number, await reader.readexactly(length)))
                served += 1
                if number == 1 and served == 2:
                    return  # the stale keep-alive connection: closed, nothing answered
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_a_stale_keep_alive_connection_is_retried_fresh_with_the_same_body(tmp_path):
    async with DroppingProvider() as provider:
        async with running_kraken(kraken_mapping(tmp_path, provider.port)) as k:
            first = b'{"model":"mock-gpt","messages":[{"role":"user","content":"one"}]}'
            second = b'{"model":"mock-gpt","messages":[{"role":"user","content":"two"}]}'
            assert (await http(k.port, "POST", "/v1/chat/completions", first,
                               auth_headers())).status == 200
            r = await http(k.port, "POST", "/v1/chat/completions", second, auth_headers())
            assert r.status == 200 and json.loads(r.body)["choices"][0]["message"]["content"] == "ok"
    connections = [number for number, _ in provider.requests]
    assert connections == [1, 1, 2]
    stale, retried = provider.requests[1][1], provider.requests[2][1]
    assert retried == stale and b'"two"' in retried
