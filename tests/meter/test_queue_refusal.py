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
            again = await http(port, "POST", "/v1/chat/completions", body.encode(), auth_headers())
            assert again.status == 503
            page = (await http(port, "GET", "/metrics")).body.decode()
            assert 'kraken_refused_total{reason="queue_full"} 2.0' in page.splitlines()
            # The operator sees the shedding in the log: one line, not one per refusal.
            shed = [line for line in (tmp_path / "kraken.log").read_text().splitlines()
                    if "refusing requests" in line]
            assert len(shed) == 1 and "queue_full (1 since the last line)" in shed[0], shed
            for stream in streams:
                await stream.finish()
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()


def test_refusals_are_logged_once_per_reason_per_interval_with_the_count_since(monkeypatch, caplog):
    import logging

    from kraken import metrics, shedding

    now = [1000.0]
    monkeypatch.setattr(shedding.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(shedding, "_last_logged", {})
    monkeypatch.setattr(shedding, "_since_logged", {})
    counted = metrics.REGISTRY.get_sample_value("kraken_refused_total", {"reason": "queue_full"}) or 0
    with caplog.at_level(logging.WARNING, logger="kraken.shedding"):
        for _ in range(5):
            shedding.refused("queue_full")
        shedding.refused("journal_failed")
        now[0] += shedding.LOG_INTERVAL_S - 0.1
        shedding.refused("queue_full")
        now[0] += 0.2
        shedding.refused("queue_full")
    assert [r.getMessage() for r in caplog.records] == [
        "refusing requests: queue_full (1 since the last line)",
        "refusing requests: journal_failed (1 since the last line)",
        "refusing requests: queue_full (6 since the last line)",
    ]
    assert metrics.REGISTRY.get_sample_value(
        "kraken_refused_total", {"reason": "queue_full"}) - counted == 7
