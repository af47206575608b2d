"""The relay: byte-exact SSE, errors before and after the first byte, cancellation, fallback."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness import (auth_headers, db_rows, free_port, http, kraken_mapping, running_kraken,
                     running_mock, wait_for)

pytestmark = pytest.mark.anyio

UNICODE = "Grüße 🌊 世界 — naïve café ✓ " * 8


def chat(stream: bool, **extra) -> bytes:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body.update(extra)
    return json.dumps(body).encode()


def without_usage_event(body: bytes) -> bytes:
    events = [e for e in body.split(b"\n\n") if e]
    kept = [e for e in events if b'"choices":[]' not in e]
    assert len(kept) == len(events) - 1, "exactly one usage-only event"
    return b"".join(e + b"\n\n" for e in kept)


@pytest.fixture
async def stack(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port)
        doc["providers"]["slow"] = {**doc["providers"]["mockai"], "models": ["slow-gpt"],
                                    "read_timeout_s": 0.3}
        doc["providers"]["dead"] = {**doc["providers"]["mockai"], "models": [],
                                    "base_url": f"http://127.0.0.1:{free_port()}/v1"}
        doc["models"] = {"with-fallback": ["dead/mock-gpt", "mockai/mock-gpt"],
                         "only-dead": ["dead/mock-gpt"]}
        async with running_kraken(doc) as k:
            yield mock, k


async def test_stream_bytes_identical_when_client_asked_for_usage(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions",
                   chat(True, stream_options={"include_usage": True}, mock={"content": UNICODE}),
                   auth_headers())
    assert r.status == 200
    assert r.headers["x-accel-buffering"] == "no"
    assert r.body == mock.responses[-1].body
    assert UNICODE.split()[0].encode() in r.body or b"Gr" in r.body


async def test_stream_bytes_identical_except_the_hidden_usage_event(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions",
                   chat(True, mock={"content": UNICODE, "chunks": 40}), auth_headers())
    assert r.status == 200
    assert r.body == without_usage_event(mock.responses[-1].body)
    assert r.body.endswith(b"data: [DONE]\n\n")


async def test_non_stream_body_identical(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", chat(False, mock={"content": UNICODE}),
                   auth_headers())
    assert r.status == 200 and r.body == mock.responses[-1].body


async def test_cached_and_reasoning_tokens_are_recorded(stack):
    _, k = stack
    usage = {"cached_tokens": 7, "reasoning_tokens": 5}
    await http(k.port, "POST", "/v1/chat/completions", chat(True, mock={"usage": usage}),
               auth_headers())
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["cached_tokens"] == 7 and row["reasoning_tokens"] == 5


@pytest.mark.parametrize("status,expect", [(500, 502), (503, 502), (429, 429)])
async def test_provider_failure_before_first_byte_is_openai_error(stack, status, expect):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", chat(True, mock={"status": status}),
                   auth_headers())
    assert r.status == expect
    err = r.json()["error"]
    assert err["message"] and err["type"]
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["status"] == expect and row["error_type"] == err["type"]


async def test_provider_4xx_is_relayed_with_its_status(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", chat(False, mock={"status": 400}),
                   auth_headers())
    assert r.status == 400 and "error" in r.json()


async def test_unreachable_provider_is_502(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions",
                   json.dumps({"model": "only-dead", "messages": [{"role": "user", "content": "x"}]}).encode(),
                   auth_headers())
    assert r.status == 502 and r.json()["error"]["type"] == "upstream_error"


async def test_slow_first_byte_is_504(stack):
    _, k = stack
    body = json.dumps({"model": "slow-gpt", "messages": [{"role": "user", "content": "x"}],
                       "mock": {"first_byte_delay_ms": 2000}}).encode()
    r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
    assert r.status == 504 and r.json()["error"]["type"] == "upstream_timeout"


async def test_fallback_before_first_byte_is_recorded(stack):
    mock, k = stack
    body = json.dumps({"model": "with-fallback", "messages": [{"role": "user", "content": "x"}],
                       "stream": True}).encode()
    r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
    assert r.status == 200 and r.body.endswith(b"data: [DONE]\n\n")
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["fallback_used"] == 1 and row["provider"] == "mockai"
    assert row["model_requested"] == "with-fallback" and row["model_dispatched"] == "mock-gpt"


async def test_provider_drop_mid_stream_becomes_sse_error_event(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions",
                   chat(True, mock={"drop_after_chunks": 3}), auth_headers())
    assert r.status == 200
    events = [e for e in r.body.split(b"\n\n") if e]
    assert events[-1].startswith(b"event: error\ndata: ")
    assert json.loads(events[-1].split(b"data: ", 1)[1])["error"]["type"] == "upstream_error"
    assert len(events) >= 4
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["error_type"] == "upstream_error" and row["status"] == 200


async def test_provider_hang_mid_stream_times_out_with_sse_error(stack):
    _, k = stack
    body = json.dumps({"model": "slow-gpt", "messages": [{"role": "user", "content": "x"}],
                       "stream": True, "mock": {"hang_after_chunks": 2}}).encode()
    r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
    last = [e for e in r.body.split(b"\n\n") if e][-1]
    assert json.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "upstream_timeout"


async def test_client_disconnect_cancels_upstream_within_a_second(stack):
    mock, k = stack
    reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
    body = chat(True, mock={"chunks": 400, "chunk_delay_ms": 20})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: {auth_headers()['Authorization']}\r\n\r\n").encode()
    writer.write(head + body)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.read(200)  # the stream has started
    assert len(mock._conns) == 1
    writer.transport.abort()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await wait_for(lambda: len(mock._conns) == 0, seconds=1.0)
    assert loop.time() - t0 < 1.0
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["error_type"] == "client_cancelled" and row["status"] == 200


async def test_request_id_header_matches_record(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", chat(True), auth_headers())
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert r.headers["x-request-id"] == row["request_id"]


async def test_cost_and_fee_from_usage_and_price_table(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port)
        doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "cached_input": 0.5, "output": 2.0}}}
        async with running_kraken(doc) as k:
            await http(k.port, "POST", "/v1/chat/completions",
                       chat(True, mock={"usage": {"cached_tokens": 4}}), auth_headers())
            row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    # 12 prompt tokens, 4 of them cached; 20 completion tokens, per 1M tokens:
    # (12-4) x $1 + 4 x $0.50 + 20 x $2 = $50 per 1M  ->  $0.000050; fee 5% -> $0.0000025
    assert row["cost_usd"] == pytest.approx(0.000050, abs=1e-12)
    assert row["kraken_fee_usd"] == pytest.approx(0.0000025, abs=1e-13)


async def test_unpriced_model_records_null_cost_not_zero(stack):
    _, k = stack
    await http(k.port, "POST", "/v1/chat/completions", chat(False), auth_headers())
    row = (await wait_for(lambda: db_rows(k.db_path)))[0]
    assert row["prompt_tokens"] == 12 and row["cost_usd"] is None and row["kraken_fee_usd"] is None
    metrics = (await http(k.port, "GET", "/metrics")).body.decode()
    assert 'kraken_unpriced_requests_total{model="mock-gpt",provider="mockai"}' in metrics


def dechunk(raw: bytes) -> bytes:
    out, pos = [], 0
    while True:
        nl = raw.index(b"\r\n", pos)
        size = int(raw[pos:nl], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[nl + 2: nl + 2 + size])
        pos = nl + 4 + size


async def test_slow_client_pauses_the_provider_and_loses_nothing(stack):
    """Backpressure end to end: a client that stops reading stops Kraken reading from the
    provider (the provider's own writes pause); when it reads again, every byte arrives."""
    import socket

    mock, k = stack
    body = chat(True, stream_options={"include_usage": True},
                mock={"content": "y" * 4_000_000, "chunks": 100_000, "chunk_delay_ms": 0.0001})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", k.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\nAuthorization: {auth_headers()['Authorization']}"
                  f"\r\n\r\n").encode() + body)

    def provider_paused() -> bool:
        return any(c._drain is not None and not c._drain.done() for c in mock._conns)

    await wait_for(provider_paused, seconds=20)
    raw = await asyncio.wait_for(reader.read(-1), 60)
    writer.close()
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert dechunk(chunked) == mock.responses[-1].body
