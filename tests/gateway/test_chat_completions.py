"""The OpenAI SDK, unmodified, through Kraken in front of a local mock provider."""
from __future__ import annotations

import json

import openai
import pytest

from harness import (
    PROMPT_CANARY, PROVIDER_KEY, TEST_KEY, auth_headers, http, kraken_mapping, running_kraken,
    wait_rows,
)
from rawprovider import scripted_provider

pytestmark = pytest.mark.anyio


def client(k, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=TEST_KEY, max_retries=0, **kw)


async def test_non_streaming_completion_and_its_record(stack):
    mock, k = stack
    raw = await client(k).chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": PROMPT_CANARY}])
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("tok0")
    assert completion.usage.prompt_tokens == 12
    request_id = raw.headers["x-request-id"]
    assert float(raw.headers["x-kraken-overhead-ms"]) >= 0
    # the provider got the operator's key, never the client's
    upstream = mock.requests[-1]
    assert upstream.header(b"authorization") == b"Bearer " + PROVIDER_KEY.encode()
    rows = await wait_rows(k.db_path, 1)
    row = rows[0]
    assert row["request_id"] == request_id
    assert row["customer_id"] == "cust_1"
    assert row["model_requested"] == "mock-gpt" and row["model_dispatched"] == "mock-gpt"
    assert row["provider"] == "mockai"
    assert row["prompt_tokens"] == 12 and row["completion_tokens"] == 20
    assert row["status"] == 200 and row["error_type"] is None
    assert row["fallback_used"] == 0
    assert row["latency_ms"] > 0 and row["ttfb_ms"] > 0
    assert row["task_type"] == "chat"


async def test_streaming_with_sdk_hides_forced_usage(stack):
    mock, k = stack
    stream = await client(k).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("tok0 tok1")
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach this client"
    sent = json.loads(mock.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}, "Kraken asks for usage anyway"
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["completion_tokens"] == 20 and row["prompt_tokens"] == 12


async def test_streaming_with_include_usage_reaches_client(stack):
    mock, k = stack
    stream = await client(k).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20


async def test_tool_calls_n_and_response_format(stack):
    _, k = stack
    c = client(k)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    done = await c.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    call = done.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    stream = await c.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True)
    names = [tc.function.name async for ch in stream if ch.choices
             for tc in (ch.choices[0].delta.tool_calls or []) if tc.function and tc.function.name]
    assert names == ["get_weather"]
    two = await c.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}], n=2)
    assert sorted(ch.index for ch in two.choices) == [0, 1]
    js = await c.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"})
    assert isinstance(json.loads(js.choices[0].message.content), dict)


async def test_models_list(stack):
    _, k = stack
    models = await client(k).models.list()
    assert [m.id for m in models.data] == ["mock-gpt"]


async def test_bad_keys_get_one_uniform_401(stack):
    mock, k = stack
    bodies = set()
    for key in ["", "nonsense", TEST_KEY[:-1] + ("A" if TEST_KEY[-1] != "A" else "B"),
                "kr_live_unknownid_" + "a" * 32]:
        c = openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            await c.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
        body = err.value.response.content
        assert key.encode() not in body or not key
        bodies.add(body)
    assert len(bodies) == 1
    assert mock.requests == type(mock.requests)(maxlen=mock.requests.maxlen), "nothing went upstream"


async def test_unknown_model_is_404_in_openai_format(stack):
    _, k = stack
    with pytest.raises(openai.NotFoundError) as err:
        await client(k).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


async def test_invalid_json_is_400(stack):
    _, k = stack
    r = await http(k.port, "POST", "/v1/chat/completions", b"{not json", auth_headers())
    assert r.status == 400
    assert r.json()["error"]["code"] == "invalid_json"
    assert "x-request-id" in r.headers


async def test_records_hold_no_content(stack, tmp_path):
    mock, k = stack
    await client(k).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": PROMPT_CANARY}])
    stream = await client(k).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": PROMPT_CANARY}], stream=True)
    [c async for c in stream]
    await wait_rows(k.db_path, 2)
    response_text = json.loads(mock.responses[0].body)["choices"][0]["message"]["content"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PROMPT_CANARY.encode() not in data, path
            assert response_text.encode() not in data, path
            assert TEST_KEY.encode() not in data and PROVIDER_KEY.encode() not in data, path


GEMINI_LIST = (b'[{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name '
               b'\\"web_search_options\\"","status":"INVALID_ARGUMENT"}}]')
OPENAI_SHAPED = b'{"error":{"message":"bad temperature","type":"invalid_request_error",' \
                b'"param":"temperature","code":null}}'


@pytest.mark.parametrize("status, ctype, body, message", [
    (b"404 Not Found", b"text/html", b"<html><body>404 Not Found</body></html>",
     "provider returned 404"),
    (b"400 Bad Request", b"application/json", GEMINI_LIST,
     'Invalid JSON payload received. Unknown name "web_search_options"'),
    (b"400 Bad Request", b"application/json", OPENAI_SHAPED, "bad temperature"),
])
async def test_a_providers_4xx_reaches_the_client_as_an_openai_error(tmp_path, status, ctype,
                                                                     body, message):
    """Relayed with its status; a body that is not an OpenAI error object (a proxy's HTML page,
    Gemini's list) is put in OpenAI's envelope, which the SDKs and clients read."""
    answer = (b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
              % (status, ctype, len(body), body))
    server, port = await scripted_provider([[answer], [answer]], 0)  # raw, then the SDK
    try:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", json.dumps(
                {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                auth_headers())
            with pytest.raises(openai.APIStatusError) as caught:
                await client(k).chat.completions.create(
                    model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
    finally:
        server.close()
    assert r.status == int(status[:3]) and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["message"] == message
    if body == OPENAI_SHAPED:
        assert r.body == body, "a provider's own OpenAI error is relayed byte for byte"
    assert caught.value.status_code == int(status[:3])
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == message
