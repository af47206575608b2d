"""Request shaping, usage extraction and error rendering for the Anthropic wire family."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from kraken.billing.pricing import AnthropicUsage, PriceTable, cost_decimal
from kraken.config import ProviderConfig
from kraken.errors import (
    BadRequest, KrakenError, NotFound, Overloaded, PayloadTooLarge, RateLimited, Unauthorized,
    UpstreamCredentialsRejected, UpstreamError, UpstreamFailed, UpstreamOverloaded,
    UpstreamRateLimited, UpstreamStatus, UpstreamTimeout,
)
from kraken.gateway.sse import SseTap
from kraken.mock.anthropic_mock import MessagePlan, build_stream
from kraken.providers.anthropic import DEFAULT_VERSION, AnthropicFamily, StreamUsage
from kraken.providers.error_formats import ANTHROPIC
from kraken.providers.error_formats import anthropic_error_body as error_body_for

KEY = "sk-ant-api03-PROVIDERkeyPROVIDERkey0123456789"
CLIENT_KEY = "kr_live_clientkey123456"


def family() -> AnthropicFamily:
    cfg = ProviderConfig(name="claude", kind="anthropic", base_url="https://api.anthropic.com/v1",
                         api_key=KEY)
    return AnthropicFamily(cfg, "/v1", "api.anthropic.com")


def shaped(payload: dict | None = None, headers=(), model: str = "claude-sonnet-4-5"):
    payload = payload or {"model": "pub", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hi"}]}
    req = family().messages_request(payload, model, headers)
    return req.target, req.headers, req.body, req.hide_usage


def header(headers, name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


# ---------------------------------------------------------------- request shaping


def test_target_headers_and_only_model_replaced():
    payload = {
        "model": "public-name", "max_tokens": 2048, "stream": True, "temperature": 0.7,
        "system": [{"type": "text", "text": "Be brief. Grüße 🌊",
                    "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "call the tool", "signature": "EqQB+/abc=="},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                 "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "-3°C"}]},
        ],
        "mock": {"chunks": 3},
    }
    target, headers, body, hide = shaped(payload)
    assert target == "/v1/messages" and hide is False
    sent = json.loads(body)
    assert sent == {**payload, "model": "claude-sonnet-4-5"}
    assert payload["model"] == "public-name"  # the caller's dict is not modified
    assert [k for k, _ in headers] == [b"host", b"content-type", b"accept", b"user-agent",
                                       b"x-api-key", b"anthropic-version", b"content-length"]
    assert header(headers, b"host") == [b"api.anthropic.com"]
    assert header(headers, b"x-api-key") == [KEY.encode()]
    assert header(headers, b"content-length") == [str(len(body)).encode()]


def test_clients_credentials_are_never_forwarded():
    client = [(b"x-api-key", CLIENT_KEY.encode()),
              (b"authorization", b"Bearer " + CLIENT_KEY.encode()),
              (b"anthropic-version", b"2023-06-01"), (b"cookie", b"a=b"),
              (b"x-forwarded-for", b"1.2.3.4")]
    _, headers, body, _ = shaped(headers=client)
    assert header(headers, b"x-api-key") == [KEY.encode()]
    assert not header(headers, b"authorization") and not header(headers, b"cookie")
    assert not header(headers, b"x-forwarded-for")
    assert all(CLIENT_KEY.encode() not in v for _, v in headers) and CLIENT_KEY.encode() not in body


def test_no_provider_key_means_no_key_header():
    cfg = ProviderConfig(name="local", kind="anthropic", base_url="http://127.0.0.1:9/v1")
    headers = AnthropicFamily(cfg, "/v1", "127.0.0.1:9").messages_request(
        {"model": "m", "messages": []}, "m", [(b"x-api-key", CLIENT_KEY.encode())]).headers
    assert not header(headers, b"x-api-key")


@pytest.mark.parametrize("given, sent", [
    (None, DEFAULT_VERSION),
    (b"2023-06-01", b"2023-06-01"),
    (b"2026-10-21", b"2026-10-21"),  # what the anthropic SDK 2.x sends
    (b" 2023-01-01 ", b"2023-01-01"),
    (b"latest", DEFAULT_VERSION),
    (b"2023-6-1", DEFAULT_VERSION),
    (b"2023-06-01x", DEFAULT_VERSION),
    (b"2023-06-01,2024-01-01", DEFAULT_VERSION),
    (b"", DEFAULT_VERSION),
])
def test_anthropic_version_passes_through_when_well_formed(given, sent):
    _, headers, _, _ = shaped(headers=[] if given is None else [(b"anthropic-version", given)])
    assert header(headers, b"anthropic-version") == [sent]


def test_first_anthropic_version_wins():
    _, headers, _, _ = shaped(headers=[(b"anthropic-version", b"2024-01-01"),
                                       (b"anthropic-version", b"2025-01-01")])
    assert header(headers, b"anthropic-version") == [b"2024-01-01"]


@pytest.mark.parametrize("given, sent", [
    ([b"prompt-caching-2024-07-31"], b"prompt-caching-2024-07-31"),
    ([b"interleaved-thinking-2025-05-14,context-1m-2025-08-07"],
     b"interleaved-thinking-2025-05-14,context-1m-2025-08-07"),
    ([b"a-1, b-2"], b"a-1, b-2"),
    ([b"a-1", b"b-2"], b"a-1,b-2"),  # a repeated list header is one list
    ([b"Fancy_Beta"], None),
    ([b"a-1;b-2"], None),
    ([b"a-1,"], None),
    ([b"ok-1", b"bad beta"], None),
    ([b"x" * 2000], None),
    ([b""], None),
])
def test_anthropic_beta_passes_through_when_well_formed(given, sent):
    _, headers, _, _ = shaped(headers=[(b"anthropic-beta", v) for v in given])
    assert header(headers, b"anthropic-beta") == ([] if sent is None else [sent])


# ---------------------------------------------------------------- usage

START = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01",'
         b'"type":"message",'
         b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,'
         b'"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":400,'
         b'"cache_read_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":300,'
         b'"ephemeral_1h_input_tokens":100},"output_tokens":1,"service_tier":"standard"}}}')
DELTA = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
         b'"stop_sequence":null},"usage":{"output_tokens":57}}')


def test_usage_merges_message_start_inputs_with_message_delta_output():
    parse = family().usage_parser()
    first, hidden = parse(START)
    assert not hidden
    assert (first.prompt_tokens, first.cached_tokens, first.completion_tokens) == (1425, 1000, 1)
    usage, hidden = parse(DELTA)
    assert not hidden and isinstance(usage, AnthropicUsage)
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            usage.cache_creation_1h_input_tokens, usage.output_tokens) == (25, 1000, 400, 100, 57)
    # the record's counts, with OpenAI's meaning
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (1425, 1000, 57)
    assert parse.usage == usage


def test_message_delta_input_counts_replace_earlier_ones_and_null_keeps_them():
    parse = StreamUsage()
    parse(START)
    usage, _ = parse.usage_event(
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},'
        b'"usage":{"input_tokens":30,"cache_read_input_tokens":null,"output_tokens":9}}')
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (30, 1000, 9)


def test_message_delta_alone_gives_output_without_a_prompt_count():
    usage, _ = StreamUsage()(DELTA)
    assert usage.completion_tokens == 57 and usage.prompt_tokens is None


def test_each_stream_has_its_own_parser():
    f = family()
    a, b = f.usage_parser(), f.usage_parser()
    a(START)
    usage, _ = b(DELTA)
    assert usage.input_tokens is None


@pytest.mark.parametrize("event", [
    b'event: ping\ndata: {"type":"ping"}',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"\\"usage\\":{"}}',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"tool_use","id":"t","name":"n","input":{"usage":{"x":1}}}}',
    b'event: message_start\ndata: {not json',
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":null}}',
    b'event: message_stop\ndata: {"type":"message_stop"}',
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    b"data: [1,2]",
    b": comment only",
])
def test_events_without_message_usage_are_ignored(event):
    parse = StreamUsage()
    assert parse(event) is None and parse.usage is None


def test_crlf_and_multi_line_data_events():
    event = (b'event: message_delta\r\ndata: {"type":"message_delta",\r\n'
             b'data: "usage":{"output_tokens":4}}')
    usage, _ = StreamUsage()(event)
    assert usage.output_tokens == 4


def test_sse_tap_with_a_mock_stream_keeps_bytes_and_finds_the_merged_usage():
    plan = MessagePlan("claude-x", True, ("hmm",), ("a", "b"), None, "end_turn", (12, 3, 500, 64))
    stream = b"".join(build_stream(plan))
    tap = SseTap(family().usage_parser(), strip_usage=False)
    out = b"".join(tap.feed(stream[i:i + 7]) for i in range(0, len(stream), 7)) + tap.flush()
    assert out == stream
    usage = tap.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            usage.output_tokens) == (12, 500, 64, 3)


def test_usage_from_body():
    body = json.dumps({"id": "msg_1", "type": "message", "content": [], "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 30,
        "output_tokens": 40}}).encode()
    usage = AnthropicFamily.usage_from_body(body)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (60, 20, 40)
    assert AnthropicFamily.usage_from_body(b"{broken") is None
    assert AnthropicFamily.usage_from_body(b'{"type":"message"}') is None
    assert AnthropicFamily.usage_from_body(b"[]") is None


def test_usage_prices_cache_writes_with_the_anthropic_family():
    parse = StreamUsage()
    parse(START)
    usage, _ = parse(DELTA)
    price = PriceTable.load().lookup("anthropic", "claude-sonnet-4-5")
    # 25 input @3 + 1000 read @0.30 + 300 5m-writes @3.75 + 100 1h-writes @6 + 57 output @15, per M
    assert cost_decimal(price, usage, family="anthropic") == Decimal("0.002955")


# ---------------------------------------------------------------- provider errors


@pytest.mark.parametrize("status, kind, relayed, error_type", [
    (401, UpstreamCredentialsRejected, 502, "upstream_error"),
    (403, UpstreamCredentialsRejected, 502, "upstream_error"),
    (429, UpstreamRateLimited, 429, "upstream_rate_limited"),
    (529, UpstreamOverloaded, 503, "upstream_overloaded"),
    (500, UpstreamFailed, 502, "upstream_error"),
    (502, UpstreamFailed, 502, "upstream_error"),
    (503, UpstreamFailed, 502, "upstream_error"),
    (504, UpstreamTimeout, 504, "upstream_timeout"),
    (400, UpstreamStatus, 400, "upstream_status"),
    (404, UpstreamStatus, 404, "upstream_status"),
    (413, UpstreamStatus, 413, "upstream_status"),
    (422, UpstreamStatus, 422, "upstream_status"),
])
def test_error_mapping(status, kind, relayed, error_type):
    body = b'{"type":"error","error":{"type":"x","message":"m"}}'
    err = family().map_error(status, body)
    assert type(err) is kind and err.status == relayed and err.error_type == error_type
    if issubclass(kind, UpstreamError):  # every one falls back; none shows the provider's body
        assert "claude" in err.message and KEY not in err.message


def test_relayed_4xx_body_is_scrubbed():
    body = json.dumps({"type": "error", "error": {
        "type": "invalid_request_error",
        "message": f"bad key {KEY} and sk-ant-api03-OTHERkey_- and {CLIENT_KEY}"}}).encode()
    err = family().map_error(400, body)
    assert KEY.encode() not in err.body and b"sk-ant-api03-OTHER" not in err.body
    assert CLIENT_KEY.encode() not in err.body
    assert json.loads(err.body)["error"]["type"] == "invalid_request_error"
    assert error_body_for(err) == err.body  # already Anthropic-shaped: relayed as it is


def test_credentials_error_hides_the_provider_body():
    err = family().map_error(401, b'{"type":"error","error":{"type":"authentication_error",'
                                  b'"message":"invalid x-api-key"}}')
    assert "x-api-key" not in err.message
    assert json.loads(error_body_for(err))["error"]["type"] == "api_error"


# ---------------------------------------------------------------- Kraken errors, Anthropic shape


@pytest.mark.parametrize("exc, status, kind", [
    (BadRequest("bad"), 400, "invalid_request_error"),
    (Unauthorized("no key"), 401, "authentication_error"),
    (NotFound("nope"), 404, "not_found_error"),
    (PayloadTooLarge("big"), 413, "request_too_large"),
    (RateLimited("slow down"), 429, "rate_limit_error"),
    (KrakenError("internal"), 500, "api_error"),
    (UpstreamError("provider down"), 502, "api_error"),
    (Overloaded("busy"), 503, "overloaded_error"),
    (UpstreamTimeout("slow provider"), 504, "timeout_error"),
    (UpstreamStatus(409, b""), 409, "invalid_request_error"),
    (UpstreamStatus(400, b"<html>not json</html>"), 400, "invalid_request_error"),
])
def test_error_body_for_is_anthropic_shaped(exc, status, kind):
    assert exc.status == status
    body = json.loads(error_body_for(exc))
    assert body == {"type": "error", "error": {"type": kind, "message": exc.message}}


def test_error_body_carries_the_request_id_when_given():
    body = json.loads(AnthropicFamily.error_body_for(BadRequest("bad"), request_id="req_abc"))
    assert body["request_id"] == "req_abc" and body["type"] == "error"


def test_sse_error_event_is_anthropics_shape():
    raw = AnthropicFamily.sse_error_event(UpstreamError("provider connection failed"))
    assert raw == ANTHROPIC.sse_event(UpstreamError("provider connection failed"))
    assert raw.startswith(b"event: error\ndata: ") and raw.endswith(b"\n\n") and raw.count(b"\n") == 3
    assert json.loads(raw[len(b"event: error\ndata: "):]) == {
        "type": "error", "error": {"type": "api_error", "message": "provider connection failed"}}
