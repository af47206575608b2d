"""A provider's own error event in a stream that then ends cleanly (Anthropic's ``event: error``,
an OpenAI-compatible ``{"error":{...}}``) is a failed request: the record names the failure
(its status stays the 200 the client saw), the breaker and the health averages count it, and
the client still gets the provider's bytes unchanged, whether the error came in a read of its
own after the relay's pipe took over or with the rest of the answer."""
from __future__ import annotations

import pytest
from harness import (
    PROVIDER_KEY, db_rows, http, kraken_mapping, running_kraken, wait_for, wait_rows,
)
from rawprovider import SSE_HEAD, scripted_provider, stream_through
from test_fallback import gauge
from test_messages import HEADERS, body, claude_config

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

BREAKER = {"breaker_failures": 1, "breaker_cooldown_s": 300}


@pytest.mark.parametrize("delay_ms", [0, 5], ids=["one-read", "piped"])
async def test_an_anthropic_error_event_is_recorded_and_counted_as_a_failure(tmp_path, delay_ms):
    async with MockAnthropic(api_key=PROVIDER_KEY) as mock:
        doc = claude_config(tmp_path, mock)
        doc["routing"] = BREAKER
        async with running_kraken(doc) as k:
            steer = {"chunks": 12, "chunk_delay_ms": delay_ms, "error_after_chunks": 10}
            r = await http(k.port, "POST", "/v1/messages", body(stream=True, mock=steer), HEADERS)
            assert r.status == 200
            assert r.body == mock.responses[-1].body  # byte for byte
            assert r.body.endswith(b'event: error\ndata: {"type":"error","error":{"type":'
                                   b'"overloaded_error","message":"Overloaded"}}\n\n')
            [row] = await wait_rows(k.db_path, 1)
            assert (row["status"], row["error_type"]) == (200, "upstream_overloaded")
            assert row["prompt_tokens"] is not None  # message_start's usage still counts
            assert gauge("kraken_circuit_state", provider="claude") == 2  # opened by it
            assert gauge("kraken_route_error_rate_ewma", provider="claude",
                         model="claude-test") > 0
            refused = await http(k.port, "POST", "/v1/messages", body(stream=True), HEADERS)
            assert refused.status != 200  # the open circuit: the provider is not asked
            assert len(mock.requests) == 1


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


EVENTS = [b'data: {"n":%d,"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n' % i
          for i in range(4)]
ERRORS = {
    "server_error": (b'data: {"error":{"message":"The server had an error","type":"server_error",'
                     b'"param":null,"code":null}}\n\n', "upstream_error"),
    "rate_limited": (b'data: {"error":{"message":"Slow down","type":"requests",'
                     b'"code":"rate_limit_exceeded"}}\n\n', "upstream_rate_limited"),
    "vllm": (b'data: {"object":"error","message":"x","type":"BadRequestError","code":503}\n\n',
             "upstream_overloaded"),
}


@pytest.mark.parametrize("kind", ERRORS)
@pytest.mark.parametrize("alone", [True, False], ids=["own-read", "with-events"])
async def test_an_openai_compatible_error_event_is_recorded_and_counted(tmp_path, kind, alone):
    error, error_type = ERRORS[kind]
    tail = [chunk(error)] if alone else [chunk(EVENTS[3] + error)]
    reads = [SSE_HEAD, *map(chunk, EVENTS[:3]), *tail, chunk(b"data: [DONE]\n\n"),
             b"0\r\n\r\n"]
    server, port = await scripted_provider([reads], 0.02)  # each write a read of its own
    doc = kraken_mapping(tmp_path, port, routing=BREAKER)
    async with server, running_kraken(doc) as k:
        got = await stream_through(k.port, include_usage=True)
        assert got.partition(b"\r\n\r\n")[2] == b"".join(reads[1:])  # the provider's frames
        rows = await wait_for(lambda: db_rows(k.db_path))
        assert (rows[0]["status"], rows[0]["error_type"]) == (200, error_type)
        assert gauge("kraken_circuit_state", provider="mockai") == 2
        assert gauge("kraken_route_error_rate_ewma", provider="mockai", model="mock-gpt") > 0


async def test_a_null_error_and_the_word_in_text_are_no_failure(tmp_path):
    """Responses-style ``"error":null`` and a model writing "error" (escaped quotes) pass."""
    events = [b'data: {"choices":[{"delta":{"content":"an \\"error\\": none"}}],"error":null}\n\n',
              b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":6}}\n\n']
    reads = [SSE_HEAD, *map(chunk, EVENTS[:3]), *map(chunk, events), b"0\r\n\r\n"]
    server, port = await scripted_provider([reads], 0.02)
    async with server, running_kraken(kraken_mapping(tmp_path, port, routing=BREAKER)) as k:
        got = await stream_through(k.port, include_usage=True)
        assert got.partition(b"\r\n\r\n")[2] == b"".join(reads[1:])
        rows = await wait_for(lambda: db_rows(k.db_path))
        assert (rows[0]["status"], rows[0]["error_type"], rows[0]["prompt_tokens"]) == (
            200, None, 3)
        assert gauge("kraken_circuit_state", provider="mockai") == 0
