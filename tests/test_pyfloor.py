"""bench/pyfloor.py, the table's minimal Python relay, relays what the mock sends, on a keep-alive
connection, streamed and not: its column measures a relay that works."""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "mock"))
import pyfloor  # noqa: E402
from mock_wire import read_response  # noqa: E402

from kraken.mock.openai_mock import MockOpenAI  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))


async def test_floor_relays_the_mocks_answers_on_one_keep_alive_connection():
    port = _free_port()
    async with MockOpenAI(chunks=5) as mock:
        server = asyncio.ensure_future(pyfloor.serve(port, mock.port))
        try:
            for _ in range(100):  # until the floor listens
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.01)
            chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
            for stream in (True, False, True):
                writer.write(_request({**chat, "stream": stream}))
                status, headers, body, _ = await read_response(reader)
                sent = mock.responses[-1]
                assert status == sent.status == 200 and body == sent.body
                assert (headers.get(b"transfer-encoding") == b"chunked") is stream
            assert body.count(b"data: ") == 5 + 3 and body.endswith(b"data: [DONE]\n\n")
            assert len(mock.responses) == 3
            writer.close()
        finally:
            server.cancel()


def test_work_per_request_is_cpu_time_spent():
    """``--work-us``: the stand-in for a gateway's per-request work costs what it says."""
    start = time.thread_time()
    pyfloor._spin(0.003)
    assert time.thread_time() - start >= 0.003
