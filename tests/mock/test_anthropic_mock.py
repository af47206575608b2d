"""The Anthropic mock speaks the Messages API wire format: checked with the real ``anthropic``
client and with raw bytes."""
from __future__ import annotations

import asyncio
import json
import time

import anthropic
import pytest
from mock_wire import raw_exchange, read_response

from kraken.mock.anthropic_mock import MockAnthropic, signature

pytestmark = pytest.mark.anyio

KEY = "test-provider-key"
MESSAGES = [{"role": "user", "content": "secret prompt text"}]
TOKENS20 = " ".join(f"tok{i}" for i in range(20))
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                      "days": {"type": "integer"}},
                     "required": ["city"]},
}
CLOCK = {"name": "get_time", "description": "Time", "input_schema": {
    "type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}}}


@pytest.fixture
async def mock():
    m = MockAnthropic(api_key=KEY)
    await m.start()
    yield m
    await m.close()


@pytest.fixture
async def client(mock):
    c = anthropic.AsyncAnthropic(base_url=mock.sdk_url, api_key=KEY, max_retries=0)
    yield c
    await c.close()


def sse(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each event of a de-chunked stream body, checking the framing."""
    assert body.endswith(b"\n\n")
    out = []
    for ev in body[:-2].split(b"\n\n"):
        name, data = ev.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        out.append((name[7:].decode(), payload))
    return out


async def create(client, **kw):
    kw.setdefault("model", "claude-mock")
    kw.setdefault("max_tokens", 1024)
    kw.setdefault("messages", MESSAGES)
    return await client.messages.create(**kw)


# ---------------------------------------------------------------- messages


async def test_non_stream_is_a_message(client, mock):
    r = await create(client)
    assert r.type == "message" and r.role == "assistant" and r.model == "claude-mock"
    assert r.id.startswith("msg_") and len(r.id) == len("msg_01XFDUDYJgAACzvnptvVoYEL")
    assert [b.type for b in r.content] == ["text"] and r.content[0].text == TOKENS20
    assert r.stop_reason == "end_turn" and r.stop_sequence is None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (12, 20)
    assert (r.usage.cache_read_input_tokens, r.usage.cache_creation_input_tokens) == (0, 0)
    assert b"secret prompt" not in mock.responses[-1].body
    req = mock.requests[-1]
    assert req.path == "/v1/messages" and req.method == "POST"
    assert req.header(b"anthropic-version") is not None
    assert req.json()["messages"] == MESSAGES


async def test_non_stream_raw_shape(client, mock):
    await create(client)
    body = json.loads(mock.responses[-1].body)
    assert list(body) == ["id", "type", "role", "model", "content", "stop_reason",
                          "stop_sequence", "usage"]
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                  "cache_creation_input_tokens"}


async def test_each_message_gets_its_own_id(client):
    a, b = await create(client), await create(client)
    assert a.id != b.id and len(a.id) == len(b.id)


async def test_stream_events_in_api_order(client, mock):
    async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                      extra_body={"mock": {"chunks": 3}}) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "tok0 tok1 tok2"
    names = [name for name, _ in sse(mock.responses[-1].body)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]


async def test_stream_text_accumulates_and_final_usage(client, mock):
    async with client.messages.stream(model="claude-mock", max_tokens=1024,
                                      messages=MESSAGES) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 20 and "".join(pieces) == TOKENS20
    assert final.content[0].text == TOKENS20 and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 20)
    events = sse(mock.responses[-1].body)
    start, delta = events[0][1], events[-2][1]
    assert start["message"]["usage"]["output_tokens"] == 1  # as the API: a small first count
    assert start["message"]["content"] == [] and start["message"]["stop_reason"] is None
    assert delta["usage"] == {"output_tokens": 20}
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


async def test_usage_override_with_cache_counts(client, mock):
    over = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 250}
    r = await create(client, extra_body={"mock": {"usage": over}})
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_input_tokens,
            r.usage.cache_creation_input_tokens) == (7, 3, 1000, 250)
    async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                      extra_body={"mock": {"usage": over}}) as stream:
        final = await stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens,
            final.usage.cache_creation_input_tokens) == (7, 3, 1000, 250)
    start = sse(mock.responses[-1].body)[0][1]["message"]["usage"]
    assert (start["cache_read_input_tokens"], start["cache_creation_input_tokens"]) == (1000, 250)


async def test_content_override_is_exact_with_unicode(client, mock):
    text = "Grüße 🌊 世界 — naïve"
    async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                      extra_body={"mock": {"content": text, "chunks": 7}}) as stream:
        got = [t async for t in stream.text_stream]
    assert "".join(got) == text and len(got) == 7


async def test_max_tokens_cuts_with_stop_reason_max_tokens(client):
    r = await create(client, max_tokens=5)
    assert r.content[0].text == "tok0 tok1 tok2 tok3 tok4" and r.stop_reason == "max_tokens"


# ---------------------------------------------------------------- tool use and thinking


async def test_tool_use_non_stream(client):
    r = await create(client, tools=[WEATHER])
    assert r.stop_reason == "tool_use"
    (block,) = r.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input == {"city": "tok0", "days": 1}


async def test_tool_use_streams_input_json_deltas(client, mock):
    async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                      tools=[WEATHER, CLOCK],
                                      tool_choice={"type": "tool", "name": "get_time"}) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].name == "get_time"
    assert final.content[0].input == {"tz": "UTC"}
    events = sse(mock.responses[-1].body)
    assert events[1][1]["content_block"] == {"type": "tool_use", "id": final.content[0].id,
                                             "name": "get_time", "input": {}}
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert len(partial) > 1 and all(d["delta"]["type"] == "input_json_delta"
                                    for n, d in events if n == "content_block_delta")
    assert json.loads("".join(partial)) == {"tz": "UTC"}


async def test_tool_choice_none_and_mock_tools_false_answer_text(client):
    for kw in ({"tool_choice": {"type": "none"}}, {"extra_body": {"mock": {"tools": False}}}):
        r = await create(client, tools=[WEATHER], **kw)
        assert [b.type for b in r.content] == ["text"] and r.stop_reason == "end_turn"


async def test_thinking_blocks_arrive_with_signature_intact(client, mock):
    async with client.messages.stream(
            model="claude-mock", max_tokens=4096, messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = await stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and text.type == "text"
    assert thinking.thinking == "think0 think1 think2 think3 think4"
    events = sse(mock.responses[-1].body)
    assert events[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    sig = [d["delta"]["signature"] for n, d in events
           if n == "content_block_delta" and d["delta"]["type"] == "signature_delta"]
    assert sig == [thinking.signature] and len(thinking.signature) > 100
    assert any(c in thinking.signature for c in "+/=")
    r = await create(client, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1024})
    assert r.content[0].signature == thinking.signature == signature(
        ("think0", " think1", " think2", " think3", " think4"))


async def test_mock_thinking_flag_with_tool_use_and_content(client, mock):
    r = await create(client, tools=[WEATHER], extra_body={"mock": {
        "thinking": True, "thinking_content": "Let me check the weather.", "chunks": 4,
        "content": "Checking."}})
    assert [b.type for b in r.content] == ["thinking", "text", "tool_use"]
    assert r.content[0].thinking == "Let me check the weather." and r.content[1].text == "Checking."
    assert r.stop_reason == "tool_use"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, exc, kind", [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.InternalServerError, "overloaded_error")])
async def test_status_override_returns_anthropic_error(client, mock, status, exc, kind):
    with pytest.raises(exc) as info:
        await create(client, stream=True, extra_body={"mock": {"status": status}})
    assert info.value.status_code == status
    body = json.loads(mock.responses[-1].body)
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str)


async def test_api_key_is_enforced(mock):
    async with anthropic.AsyncAnthropic(base_url=mock.sdk_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await create(c)
    assert info.value.body["error"]["type"] == "authentication_error"
    # x-api-key (what Kraken sends) is accepted as well as the SDK's Bearer header
    status, _, body = await raw_exchange(mock.port, post(body_json(), x_api_key=KEY))
    assert status == 200 and json.loads(body)["type"] == "message"


async def test_missing_version_header_and_max_tokens_are_400(mock):
    status, _, body = await raw_exchange(mock.port, post(body_json(), version=None))
    assert status == 400 and "anthropic-version" in json.loads(body)["error"]["message"]
    raw = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    status, _, body = await raw_exchange(mock.port, post(raw))
    assert status == 400 and json.loads(body)["error"]["message"] == "max_tokens: Field required"


async def test_unknown_path_and_bad_json(mock):
    status, _, body = await raw_exchange(mock.port, post(b"{}", path="/v1/nope"))
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"
    status, _, body = await raw_exchange(mock.port, post(b"{not json"))
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"


async def test_error_after_chunks_is_an_sse_error_event(client, mock):
    got = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                          extra_body={"mock": {"error_after_chunks": 5}}) as stream:
            async for event in stream:
                got.append(event.type)
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"}}
    events = sse(mock.responses[-1].body)
    assert len(events) == 6 and events[-1][0] == "error"


# ---------------------------------------------------------------- failure modes


async def test_drop_after_chunks_breaks_the_stream(client, mock):
    with pytest.raises(Exception) as info:  # the SDK lets the transport's error through mid-stream
        async with client.messages.stream(model="claude-mock", max_tokens=1024, messages=MESSAGES,
                                          extra_body={"mock": {"drop_after_chunks": 4}}) as stream:
            async for _ in stream:
                pass
    assert "incomplete chunked read" in str(info.value)
    assert len(sse(mock.responses[-1].body)) == 4


async def test_close_before_response(client):
    with pytest.raises(anthropic.APIConnectionError):
        await create(client, extra_body={"mock": {"close_before_response": True}})


async def test_delays_are_applied(client):
    t0 = time.perf_counter()
    times = []
    async with client.messages.stream(
            model="claude-mock", max_tokens=1024, messages=MESSAGES,
            extra_body={"mock": {"first_byte_delay_ms": 100, "chunk_delay_ms": 10, "chunks": 5}}) as s:
        async for event in s:
            if event.type == "content_block_delta":
                times.append(time.perf_counter() - t0)
    assert times[0] >= 0.105  # first byte delay, then one chunk delay before the first delta
    assert times[-1] - times[0] >= 0.035


async def test_chunked_framing_one_event_per_chunk_and_keep_alive(mock):
    reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
    try:
        writer.write(post(body_json(stream=True, mock={"chunks": 3})))
        status, headers, body, sizes = await read_response(reader)
        assert status == 200 and headers[b"content-type"].startswith(b"text/event-stream")
        assert sizes[-1] == 0 and len(sizes) == 9 + 1
        assert body == mock.responses[-1].body
        writer.write(post(body_json()))
        status, _, body, _ = await read_response(reader)
        assert status == 200 and json.loads(body)["type"] == "message"
    finally:
        writer.close()


async def test_count_tokens(client):
    r = await client.messages.count_tokens(model="claude-mock", messages=MESSAGES)
    assert r.input_tokens == 12


# ---------------------------------------------------------------- raw HTTP/1.1


def body_json(stream: bool = False, **extra) -> bytes:
    return json.dumps({"model": "claude-mock", "max_tokens": 64, "messages": MESSAGES,
                       "stream": stream, **extra}).encode()


def post(body: bytes, *, path: str = "/v1/messages", x_api_key: str | None = KEY,
         version: str | None = "2023-06-01") -> bytes:
    extra = b""
    if x_api_key is not None:
        extra += b"x-api-key: %s\r\n" % x_api_key.encode()
    if version is not None:
        extra += b"anthropic-version: %s\r\n" % version.encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body))
