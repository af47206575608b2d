"""A full record queue refuses new requests with 503, and /metrics says why."""
from __future__ import annotations

import json
import signal

import anyio
import pytest
from harness import (
    TEST_KEY, KrakenProcess, auth_headers, free_port, http, kraken_mapping, running_mock, write_toml,
)
from streamkit import Stream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_queue_full_refusal_is_counted_by_reason_on_metrics(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        write_toml(tmp_path / "k.toml", kraken_mapping(
            tmp_path, mock.port, server={"port": port}, meter={"queue_max": 2}))
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            # Two slow streams hold both of the queue's slots (one reservation each).
            streams = [Stream(port, TEST_KEY, chunks=30, chunk_delay_ms=100) for _ in range(2)]
            for stream in streams:
                await stream.start()
            body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]})
            reply = await http(port, "POST", "/v1/chat/completions", body.encode(), auth_headers())
            assert reply.status == 503 and reply.headers.get("retry-after") == "1"
            assert reply.json()["error"]["type"] == "server_overloaded"
            assert not any(stream.done for stream in streams)  # the slots were really held
            page = (await http(port, "GET", "/metrics")).body.decode()
            assert 'kraken_refused_total{reason="queue_full"} 1.0' in page.splitlines()
            for stream in streams:
                await stream.finish()
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
