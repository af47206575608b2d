"""The wire layer every mock shares (kraken.mock.server), seen through each provider's mock."""
from __future__ import annotations

import asyncio
import json

import pytest
from harness import wait_for
from mock_wire import raw_exchange

from kraken.mock.anthropic_mock import MockAnthropic
from kraken.mock.gemini_mock import MockGemini
from kraken.mock.openai_mock import MockOpenAI

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"



@pytest.mark.parametrize("cls, shape", [
    (MockOpenAI, lambda b: b["error"]["type"] == "invalid_request_error"),
    (MockAnthropic, lambda b: b["type"] == "error" and b["error"]["type"] == "invalid_request_error"),
    (MockGemini, lambda b: b["error"]["status"] == "INVALID_ARGUMENT" and b["error"]["code"] == 400),
])
async def test_malformed_http_is_answered_in_the_providers_error_format(cls, shape):
    async with cls() as mock:
        status, headers, body = await raw_exchange(mock.port, b"GARBAGE\r\n\r\n")
        assert status == 400 and headers[b"connection"] == b"close"
        assert shape(json.loads(body)) and "Malformed request line" in json.loads(body)["error"]["message"]
        assert not mock.requests


async def test_gemini_stream_drop_is_a_bare_fin_after_the_sent_chunks():
    async with MockGemini() as mock:
        reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
        body = json.dumps({"contents": [{"parts": [{"text": "x"}]}],
                           "mock": {"chunks": 4, "drop_after_chunks": 2}}).encode()
        writer.write(b"POST /v1beta/models/g:streamGenerateContent?alt=sse HTTP/1.1\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        raw = await asyncio.wait_for(reader.read(-1), 5)  # until the mock closes
        writer.close()
        sent = mock.responses[-1]
        assert sent[0] == 200 and sent[1].count(b"\r\n\r\n") == 2
        assert b"content-type: text/event-stream\r\n" in raw and not raw.endswith(b"0\r\n\r\n")
        assert [r.request_line for r in mock.requests] == [
            "POST /v1beta/models/g:streamGenerateContent?alt=sse"]


async def test_gemini_delayed_json_array_stream_arrives_whole_and_recorded():
    async with MockGemini() as mock:
        body = json.dumps({"contents": [{"parts": [{"text": "x"}]}],
                           "mock": {"chunks": 3, "chunk_delay_ms": 1}}).encode()
        status, _, got = await raw_exchange(mock.port, (
            b"POST /v1beta/models/g:streamGenerateContent HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)))
        assert status == 200 and len(json.loads(got)) == 3 and got == mock.responses[-1][1]


def stream_request(cls) -> bytes:
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}],
            "mock": {"hang_after_chunks": 2}}
    if cls is MockGemini:
        path, body = b"/v1beta/models/g:streamGenerateContent?alt=sse", {
            "contents": [{"parts": [{"text": "x"}]}], "mock": {"hang_after_chunks": 2}}
    else:
        path = b"/v1/messages" if cls is MockAnthropic else b"/v1/chat/completions"
    raw = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nanthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n%s"
            % (path, len(raw), raw))


@pytest.mark.parametrize("cls", [MockOpenAI, MockAnthropic, MockGemini])
async def test_hang_after_chunks_sends_that_many_events_then_keeps_the_socket_open(cls):
    async with cls() as mock:
        reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
        try:
            writer.write(stream_request(cls))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 200")
            got = b""
            while got.count(b"data: ") < 2:
                got += await asyncio.wait_for(reader.read(65536), 2)
            assert got.count(b"data: ") == 2
            await wait_for(lambda: mock.responses)  # recorded when the hang starts
            assert mock.responses[-1][-1].count(b"data: ") == 2
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.2)  # nothing more, and no EOF
        finally:
            writer.close()
