"""A provider connection the relay gives back to the pool is ready for the next exchange:
whatever the client's flow control did to it during the last one is undone."""
from __future__ import annotations

import json
import socket

import pytest

from harness import auth_headers, http, kraken_mapping, running_kraken, running_mock, wait_for

pytestmark = pytest.mark.anyio


def chat(content: str) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "mock": {"content": content}}).encode()


async def test_a_connection_paused_by_the_answers_last_write_is_reused_reading(tmp_path):
    """A held answer (``CostSink``) leaves in one write at its end; to a client that reads
    slowly that write pauses the provider connection, after the response is complete. Given
    back paused, the next request on it was never read: it hung for the read timeout."""
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"write_buffer_high": 16384})
        doc["providers"]["mockai"]["read_timeout_s"] = 30.0
        async with running_kraken(doc) as k:
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # small segments: Kraken's kernel sizes its send buffer by them (not ~2.6 MB)
            slow.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            slow.connect(("127.0.0.1", k.port))
            body = chat("x" * 900_000)  # held whole (under MAX_HELD), far past the buffers
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
                         b"authorization: %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (auth_headers()["Authorization"].encode(), len(body), body))
            try:
                await wait_for(lambda: len(mock.responses) == 1)
                r = await http(k.port, "POST", "/v1/chat/completions", chat("again"),
                               auth_headers(), timeout=5)
                assert r.status == 200
                assert len(mock.requests) == 2 and len(mock._conns) == 1  # reused, not retried
            finally:
                slow.close()
