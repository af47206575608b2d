"""A provider's error event in a stream, as each SSE tap reads it: the failure it records, its
type from a fixed table, found whether the event comes whole, split over reads or unended."""
from __future__ import annotations

import pytest

from kraken.gateway.sse import SseTap
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.gemini import UsageMetadataTap
from kraken.providers.openai_compat import OpenAICompat
from kraken.providers.openai_responses import usage_event
from kraken.providers.stream_failure import sse_failure

ANTHROPIC = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
             b'"message":"Overloaded"}}\n\n')
OK = b'data: {"choices":[{"delta":{"content":"an \\"error\\""}}],"error":null}\n\n'


@pytest.mark.parametrize("event, error_type", [
    (ANTHROPIC, "upstream_overloaded"),
    (b'data: {"type":"error","error":{"type":"rate_limit_error"}}\n\n', "upstream_rate_limited"),
    (b'data: {"type":"error","error":{"type":"api_error","message":"secret"}}\n\n',
     "upstream_error"),
    (b'data: {"error":{"message":"m","type":"server_error"}}\n\n', "upstream_error"),
    (b'data: {"error":{"code":503,"message":"m","status":"UNAVAILABLE"}}\n\n',
     "upstream_overloaded"),  # Google
    (b'data: {"error":{"code":504}}\n\n', "upstream_timeout"),
    (b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"m"}\n\n',
     "upstream_rate_limited"),  # Responses API
    (b'data: {"type":"response.failed","response":{"error":{"code":"server_error"}}}\n\n',
     "upstream_error"),
    (b'data: {"type":"error",\ndata: "error":{"type":"timeout_error"}}\n\n', "upstream_timeout"),
])
def test_error_events_and_their_types(event, error_type):
    failure = sse_failure(event)
    assert failure.error_type == error_type
    assert "secret" not in str(failure)  # a fixed name at most, never the provider's text


@pytest.mark.parametrize("event", [
    OK, b"data: [DONE]\n\n", b'data: {"type":"response.completed","response":{"error":null}}\n\n',
    b'data: {"error":"a string"}\n\n', b'event: error\n\n', b'data: {"error":{\n\n',
    b'data: ["error"]\n\n'])
def test_other_events_are_no_failure(event):
    assert sse_failure(event) is None


def sse_taps():
    return [SseTap(OpenAICompat.usage_event, strip_usage=True),
            SseTap(AnthropicFamily.usage_parser(), strip_usage=False),
            SseTap(usage_event, strip_usage=False)]


@pytest.mark.parametrize("cut", [None, 3, ANTHROPIC.index(b'"error"') + 3, len(ANTHROPIC) - 1])
def test_the_sse_tap_keeps_the_first_failure_however_the_reads_fall(cut):
    data = OK + ANTHROPIC + b'data: {"error":{"type":"rate_limit_exceeded"}}\n\n'
    reads = [data] if cut is None else [data[:len(OK) + cut], data[len(OK) + cut:]]
    for tap in sse_taps():
        out = b"".join(tap.feed(r) for r in reads) + tap.flush()
        assert out == data
        assert tap.failure.error_type == "upstream_overloaded"


def test_an_unended_last_error_event_is_read_at_the_end():
    for tap in sse_taps():
        assert tap.feed(OK) == OK and tap.failure is None
        tap.feed(ANTHROPIC[:-2])
        tap.flush()
        assert tap.failure.error_type == "upstream_overloaded"


def test_no_failure_in_an_ordinary_stream():
    for tap in sse_taps():
        tap.feed(OK * 3)
        tap.flush()
        assert tap.failure is None


@pytest.mark.parametrize("cut", [None, 10, 40])
def test_geminis_tap_reads_googles_error_event(cut):
    meta = b'data: {"usageMetadata":{"promptTokenCount":2}}\r\n\r\n'
    error = b'data: {"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
    data = meta + error
    reads = [data] if cut is None else [data[:len(meta) + cut], data[len(meta) + cut:]]
    tap = UsageMetadataTap()
    assert b"".join(tap.feed(r) for r in reads) == data
    tap.flush()
    assert tap.failure.error_type == "upstream_rate_limited"
    assert tap.usage.prompt_tokens == 2
    clean = UsageMetadataTap()
    clean.feed(meta)
    clean.flush()
    assert clean.failure is None
