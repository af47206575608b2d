"""/v1/chat/completions answered by a Claude model: the real ``openai`` SDK, unmodified, through
Kraken in front of the local Anthropic mock (request and answer translated)."""
from __future__ import annotations

import json

import openai
import pytest
from harness import openai_client, TEST_KEY, http, wait_rows
from test_messages import claude_stack

pytestmark = pytest.mark.anyio

TOKENS20 = " ".join(f"tok{i}" for i in range(20))
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
async def stack(tmp_path):
    async with claude_stack(tmp_path, kind="mock_anthropic") as pair:
        yield pair


client = openai_client


async def test_non_streaming_completion_translated(stack):
    mock, k = stack
    done = await client(k).chat.completions.create(
        model="claude-test",
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "hi"}])
    assert done.object == "chat.completion" and done.id.startswith("msg_")
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == TOKENS20
    assert choice.finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        12, 20, 32)
    sent = mock.requests[-1].json()
    assert sent == {"model": "claude-test", "max_tokens": 4096,
                    "system": [{"type": "text", "text": "be brief"}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    row = (await wait_rows(k.db_path, 1))[0]
    assert (row["provider"], row["prompt_tokens"], row["completion_tokens"]) == ("claude", 12, 20)
    assert row["status"] == 200 and row["cost_usd"] == pytest.approx((12 * 3 + 20 * 15) / 1e6)


async def test_streaming_completion_translated_incrementally(stack):
    mock, k = stack
    stream = await client(k).chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        max_tokens=100)
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.choices for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(text) == 20 and "".join(text) == TOKENS20, "one chunk per provider delta"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert mock.requests[-1].json()["max_tokens"] == 100
    row = (await wait_rows(k.db_path, 1))[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 20)


async def test_include_usage_adds_the_usage_chunk_with_cache_counts(stack):
    _, k = stack
    usage = {"input_tokens": 5, "output_tokens": 20, "cache_read_input_tokens": 100,
             "cache_creation_input_tokens": 10}
    stream = await client(k).chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"mock": {"usage": usage}})
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (115, 20)
    assert last.usage.prompt_tokens_details.cached_tokens == 100


async def test_raw_stream_is_openai_sse_ending_with_done(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", json.dumps({
        "model": "claude-test", "stream": True, "mock": {"chunks": 2},
        "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"authorization": f"Bearer {TEST_KEY}"})
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = r.body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: {") for e in events[:-2])
    assert b"event:" not in r.body and b"message_start" not in r.body


async def test_tool_calls_both_ways(stack):
    mock, k = stack
    c = client(k)
    done = await c.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "tok0"}
    sent = mock.requests[-1].json()
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}

    stream = await c.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER], stream=True)
    chunks = [ch async for ch in stream]
    deltas = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas) and len(deltas) > 2
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "tok0"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the next turn carries the call and its result back in Anthropic's shape
    await c.chat.completions.create(model="claude-test", tools=[WEATHER], messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call.id, "type": "function",
            "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "-3°C"}])
    turns = mock.requests[-1].json()["messages"]
    assert turns[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "tok0"}}]}
    assert turns[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "-3°C"}]}


async def test_images_become_anthropic_image_blocks(stack):
    mock, k = stack
    await client(k).chat.completions.create(model="claude-test", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}]}])
    blocks = mock.requests[-1].json()["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}}
    assert blocks[2] == {"type": "image", "source": {"type": "url",
                                                     "url": "https://example.com/cat.jpg"}}


async def test_max_tokens_stop_reason_is_length(stack):
    _, k = stack
    done = await client(k).chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=3)
    assert done.choices[0].finish_reason == "length" and done.choices[0].message.content == "tok0 tok1 tok2"


async def test_untranslatable_request_is_a_clear_openai_400(stack):
    mock, k = stack
    before = len(mock.requests)
    with pytest.raises(openai.BadRequestError) as info:
        await client(k).chat.completions.create(
            model="claude-test", n=2, messages=[{"role": "user", "content": "hi"}])
    assert "'n'" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        await client(k).chat.completions.create(model="claude-test", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y"}}]}])
    assert "messages[0].content[0].image_url.url" in info.value.body["message"]
    assert len(mock.requests) == before


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
    ({"temperature": "hot"}, "temperature"),
    ({"stop": 5}, "stop"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "ftp://x/y"}}]}]},
     "messages[0].content[0].image_url.url"),
])
async def test_refused_claude_parameters_name_the_field_in_param(stack, fields, param):
    """The SDK's ``BadRequestError.param`` says which field to fix (README: "a 400 naming
    the field")."""
    _, k = stack
    request = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(openai.BadRequestError) as info:
        await client(k).chat.completions.create(**request)
    assert info.value.param == param, info.value.body


async def test_provider_error_before_first_byte_in_openai_shape(stack):
    _, k = stack
    with pytest.raises(openai.BadRequestError) as info:
        await client(k).chat.completions.create(
            model="claude-test", messages=[{"role": "user", "content": "hi"}],
            extra_body={"mock": {"status": 400}})
    assert info.value.body == {"message": "Mock error 400.", "type": "invalid_request_error",
                               "param": None, "code": None}


@pytest.mark.parametrize("mock_field", [{"drop_after_chunks": 5}, {"error_after_chunks": 5}])
async def test_failure_mid_stream_raises_in_the_openai_sdk(stack, mock_field):
    _, k = stack
    stream = await client(k).chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_body={"mock": mock_field})
    got = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got.append(chunk)
    assert got and got[0].choices[0].delta.role == "assistant"
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["status"] == 200
