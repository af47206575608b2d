"""POST /v1/messages: the real ``anthropic`` SDK, unmodified, through Kraken in front of the
local Anthropic mock; the provider's bytes reach the client unchanged."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anthropic
import pytest
from harness import (
    PROMPT_CANARY,
    PROVIDER_KEY,
    TEST_KEY,
    free_port,
    http,
    kraken_mapping,
    running_kraken,
    wait_rows,
)

from kraken.mock.anthropic_mock import MockAnthropic, signature

pytestmark = pytest.mark.anyio

PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
WEATHER = {"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TOKENS20 = " ".join(f"tok{i}" for i in range(20))


def claude_config(tmp: Path, mock: MockAnthropic, openai_port: int = 9,
                  kind: str = "anthropic") -> dict:
    """Kraken with an Anthropic provider (the mock) and an OpenAI-compatible one.

    ``kind = "mock_anthropic"`` is the same family; Kraken then also forwards the mock's
    ``mock`` steering field on the translated (OpenAI-format) path.
    """
    doc = kraken_mapping(tmp, openai_port)
    doc["providers"]["claude"] = {
        "kind": kind, "base_url": mock.url, "api_key": PROVIDER_KEY,
        "models": ["claude-test"], "read_timeout_s": 5.0, "connect_timeout_s": 2.0}
    doc["prices"] = {kind: {"claude-test": PRICE}}
    return doc


@contextlib.asynccontextmanager
async def claude_stack(tmp: Path, kind: str = "anthropic", **mock_kwargs):
    async with contextlib.AsyncExitStack() as stack:
        mock = await stack.enter_async_context(MockAnthropic(api_key=PROVIDER_KEY, **mock_kwargs))
        k = await stack.enter_async_context(running_kraken(claude_config(tmp, mock, kind=kind)))
        yield mock, k


@pytest.fixture
async def stack(tmp_path):
    async with claude_stack(tmp_path) as pair:
        yield pair


def sdk(k, key: str = TEST_KEY, **kw) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=k.base_url, api_key=key, max_retries=0, **kw)


def body(**kw) -> bytes:
    doc = {"model": "claude-test", "max_tokens": 256,
           "messages": [{"role": "user", "content": "hi"}], **kw}
    return json.dumps(doc).encode()


HEADERS = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01",
           "content-type": "application/json"}


# ---------------------------------------------------------------- relayed as sent


async def test_sdk_non_streaming_message_and_its_record(stack):
    mock, k = stack
    raw = await sdk(k).messages.with_raw_response.create(
        model="claude-test", max_tokens=256,
        messages=[{"role": "user", "content": PROMPT_CANARY}])
    message = await raw.parse()
    assert message.content[0].text == TOKENS20 and message.stop_reason == "end_turn"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    upstream = mock.requests[-1]
    assert upstream.path == "/v1/messages"
    assert upstream.header(b"x-api-key") == PROVIDER_KEY.encode(), "the operator's key, not the client's"
    assert TEST_KEY.encode() not in b"".join(v for _, v in upstream.headers)
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["request_id"] == raw.headers["x-request-id"]
    assert (row["provider"], row["model_requested"], row["model_dispatched"]) == (
        "claude", "claude-test", "claude-test")
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (12, 20, 200)
    assert row["error_type"] is None and row["ttfb_ms"] > 0


async def test_non_stream_body_is_the_providers_bytes(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/messages", body(), HEADERS)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.body == mock.responses[-1].body


async def test_stream_with_thinking_and_tool_use_is_byte_identical(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/messages", body(
        stream=True, max_tokens=4096, tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024}), HEADERS)
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    sent = mock.responses[-1].body
    assert b"signature_delta" in sent and b"input_json_delta" in sent
    assert r.body == sent


async def test_request_body_reaches_provider_unchanged_but_the_model(tmp_path):
    async with MockAnthropic(api_key=PROVIDER_KEY) as mock:
        doc = claude_config(tmp_path, mock)
        doc["models"] = {"best": ["claude/claude-test"]}
        async with running_kraken(doc) as k:
            sent = {"model": "best", "max_tokens": 99, "temperature": 0.5,
                    "system": [{"type": "text", "text": "be brief",
                                "cache_control": {"type": "ephemeral"}}],
                    "messages": [{"role": "user", "content": "Grüße 🌊"}]}
            r = await http(k.port, "POST", "/v1/messages", json.dumps(sent).encode(), HEADERS)
            assert r.status == 200
            assert mock.requests[-1].json() == {**sent, "model": "claude-test"}


async def test_sdk_stream_keeps_thinking_signature_and_tool_input(stack):
    _, k = stack
    async with sdk(k).messages.stream(
            model="claude-test", max_tokens=4096, tools=[WEATHER],
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = await stream.get_final_message()
    thinking, tool = final.content
    assert thinking.type == "thinking"
    assert thinking.signature == signature(tuple(f"{' ' if i else ''}think{i}" for i in range(5)))
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"city": "tok0"}
    assert final.stop_reason == "tool_use"


async def test_version_and_beta_headers_pass_through(stack):
    mock, k = stack
    await sdk(k).beta.messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}],
        betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
    upstream = mock.requests[-1]
    assert upstream.header(b"anthropic-beta") == b"interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    assert upstream.header(b"anthropic-version") is not None
    for sent, expected in (("2023-06-01", b"2023-06-01"), ("2099-01-01", b"2099-01-01"),
                           (None, b"2023-06-01"), ("latest", b"2023-06-01"), ("2023-06-01x", b"2023-06-01")):
        headers = {**HEADERS, "anthropic-version": sent} if sent else {
            k_: v for k_, v in HEADERS.items() if k_ != "anthropic-version"}
        r = await http(k.port, "POST", "/v1/messages", body(), headers)
        assert r.status == 200
        assert mock.requests[-1].header(b"anthropic-version") == expected
        assert mock.requests[-1].header(b"anthropic-beta") is None


async def test_stream_usage_with_prompt_caching_is_recorded_and_priced(stack):
    _, k = stack
    usage = {"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 200}
    async with sdk(k).messages.stream(model="claude-test", max_tokens=256,
                                      messages=[{"role": "user", "content": "hi"}],
                                      extra_body={"mock": {"usage": usage}}) as stream:
        final = await stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 1000
    row = (await wait_rows(k.db_path, 1))[0]
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (1300, 1000, 50)
    # by hand: 100 × $3 + 1000 × $0.30 + 200 × $3.75 + 50 × $15, per million tokens
    assert row["cost_usd"] == pytest.approx((300 + 300 + 750 + 750) / 1e6, abs=1e-12)


# ---------------------------------------------------------------- errors, Anthropic's shape


async def test_bad_kraken_key_is_an_anthropic_authentication_error(stack):
    mock, k = stack
    before = len(mock.requests)
    with pytest.raises(anthropic.AuthenticationError) as info:
        await sdk(k, key="kr_test_nosuchkey_" + "x" * 30).messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "authentication_error"
    assert len(mock.requests) == before


@pytest.mark.parametrize("doc, status, kind, field", [
    (b"{not json", 400, "invalid_request_error", "JSON"),
    (body(max_tokens=None), 400, "invalid_request_error", "max_tokens"),
    (body(messages=[]), 400, "invalid_request_error", "messages"),
    (body(stream="yes"), 400, "invalid_request_error", "stream"),
    (body(model="no-such-model"), 404, "not_found_error", "no-such-model"),
    (body(model="mock-gpt"), 404, "not_found_error", "Anthropic"),
])
async def test_bad_requests_get_anthropic_errors(stack, doc, status, kind, field):
    _, k = stack
    r = await http(k.port, "POST", "/v1/messages", doc, HEADERS)
    assert r.status == status
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == kind and field in err["error"]["message"]
    assert r.headers["request-id"].startswith("req_")


async def test_wrong_method_is_anthropic_405(stack):
    _, k = stack
    r = await http(k.port, "GET", "/v1/messages", b"", HEADERS)
    assert r.status == 405 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("provider_status, status, sdk_error, kind", [
    (400, 400, anthropic.BadRequestError, "invalid_request_error"),
    (429, 429, anthropic.RateLimitError, "rate_limit_error"),
    (529, 503, anthropic.InternalServerError, "overloaded_error"),
    (500, 502, anthropic.InternalServerError, "api_error"),
])
async def test_provider_errors_before_first_byte(stack, provider_status, status, sdk_error, kind):
    _, k = stack
    with pytest.raises(sdk_error) as info:
        await sdk(k).messages.create(model="claude-test", max_tokens=16,
                                     messages=[{"role": "user", "content": "hi"}],
                                     extra_body={"mock": {"status": provider_status}})
    assert info.value.status_code == status
    assert info.value.body["error"]["type"] == kind
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["status"] == status and row["error_type"] is not None


async def test_provider_drop_mid_stream_is_an_anthropic_error_event(stack):
    _, k = stack
    with pytest.raises(anthropic.APIStatusError) as info:
        async with sdk(k).messages.stream(
                model="claude-test", max_tokens=256, messages=[{"role": "user", "content": "hi"}],
                extra_body={"mock": {"drop_after_chunks": 5}}) as stream:
            async for _ in stream:
                pass
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "api_error"
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["status"] == 200 and row["error_type"] == "upstream_error"


async def test_providers_own_error_event_is_relayed_unchanged(stack):
    mock, k = stack
    r = await http(k.port, "POST", "/v1/messages",
                   body(stream=True, mock={"error_after_chunks": 4}), HEADERS)
    assert r.body == mock.responses[-1].body
    assert r.body.endswith(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                           b'"message":"Overloaded"}}\n\n')


async def test_falls_back_to_the_next_anthropic_candidate_before_the_first_byte(tmp_path):
    async with MockAnthropic(api_key=PROVIDER_KEY) as mock:
        doc = claude_config(tmp_path, mock)
        doc["providers"]["dead"] = {**doc["providers"]["claude"], "models": [],
                                    "base_url": f"http://127.0.0.1:{free_port()}/v1"}
        doc["models"] = {"best": ["dead/claude-test", "mockai/mock-gpt", "claude/claude-test"]}
        async with running_kraken(doc) as k:
            message = await sdk(k).messages.create(
                model="best", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
            assert message.content[0].text.startswith("tok0")
            row = (await wait_rows(k.db_path, 1))[0]
            assert (row["provider"], row["fallback_used"], row["status"]) == ("claude", 1, 200)
            assert mock.requests[-1].json()["model"] == "claude-test"
