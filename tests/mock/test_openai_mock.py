"""The mock provider speaks OpenAI's wire format: checked with the real ``openai`` client and raw bytes."""
from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest
from mock_wire import raw_exchange, read_response

from kraken.mock import MockOpenAI
from kraken.mock.http1 import ParseError, RequestParser

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "secret prompt text"}]
TOKENS20 = " ".join(f"tok{i}" for i in range(20))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def mock():
    m = MockOpenAI()
    await m.start()
    yield m
    await m.close()


@pytest.fixture
async def client(mock):
    c = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{mock.port}/v1", api_key="x", max_retries=0)
    yield c
    await c.close()


def events(body: bytes) -> list[bytes]:
    """SSE payloads of a de-chunked stream body."""
    assert body.endswith(b"\n\n")
    out = []
    for ev in body[:-2].split(b"\n\n"):
        assert ev.startswith(b"data: ")
        out.append(ev[6:])
    return out


# ---------------------------------------------------------------- chat completions


async def test_non_stream_is_a_chat_completion(client, mock):
    r = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "mock-gpt"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == TOKENS20
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (12, 20, 32)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert b"secret prompt" not in mock.responses[-1].body
    assert mock.requests[-1].path == "/v1/chat/completions"
    assert mock.requests[-1].header(b"authorization") == b"Bearer x"
    assert mock.requests[-1].json()["messages"] == MESSAGES


async def test_each_completion_gets_its_own_id(client):
    a = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    b = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    assert a.id != b.id and len(a.id) == len(b.id)


async def test_stream_without_usage(client, mock):
    stream = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TOKENS20
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
    raw = events(mock.responses[-1].body)
    assert raw[-1] == b"[DONE]"
    assert all(b'"usage"' not in e for e in raw)
    assert len(raw) == 1 + 20 + 1 + 1  # role, content, finish, [DONE]


async def test_stream_with_include_usage(client, mock):
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 32
    assert all(c.usage is None for c in chunks[:-1])
    raw = events(mock.responses[-1].body)
    assert all(e.endswith(b',"usage":null}') for e in raw[:-2])
    usage = json.loads(raw[-2])["usage"]
    assert usage == {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32,
                     "prompt_tokens_details": {"cached_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0}}


async def test_n2_non_stream_and_interleaved_stream(client, mock):
    r = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 40
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, n=2, stream=True, extra_body={"mock": {"chunks": 3}})
    chunks = [c async for c in stream]
    order = [c.choices[0].index for c in chunks]
    assert order == [0, 1] * 5  # role, 3 content rounds, finish
    for i in (0, 1):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i)
        assert text == "tok0 tok1 tok2"


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"]}}}


async def test_tools_non_stream(client):
    r = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


async def test_tools_stream_arguments_are_streamed_json(client):
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather"
    parts = [c.choices[0].delta.tool_calls[0].function.arguments
             for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(parts) > 2
    assert isinstance(json.loads("".join(parts))["city"], str)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_response_format_gives_valid_json(client):
    r = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "tags": {"type": "array", "items": {"type": "string"}}}}
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    value = json.loads(text)
    assert isinstance(value["name"], str) and isinstance(value["tags"], list)


async def test_content_override_is_byte_exact_with_unicode(client, mock):
    content = "héllo 🐙 wörld — 日本語"
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, extra_body={"mock": {"content": content}})
    pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert "".join(pieces) == content and len(pieces) > 1


async def test_usage_override(client):
    r = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES,
        extra_body={"mock": {"usage": {"cached_tokens": 7, "reasoning_tokens": 3, "prompt_tokens": 100}}})
    assert r.usage.prompt_tokens == 100 and r.usage.total_tokens == 120
    assert r.usage.prompt_tokens_details.cached_tokens == 7
    assert r.usage.completion_tokens_details.reasoning_tokens == 3


async def test_max_tokens_cuts_with_finish_length(client):
    r = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    assert r.choices[0].message.content == "tok0 tok1 tok2"
    assert r.choices[0].finish_reason == "length"


# ---------------------------------------------------------------- other endpoints, errors


async def test_models_list(client):
    models = [m.id async for m in client.models.list()]
    assert "mock-gpt" in models
    assert (await client.models.retrieve("mock-gpt")).id == "mock-gpt"


async def test_embeddings_float_and_base64(client):
    r = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 8
    f = await client.embeddings.create(model="text-embedding-3-small", input="a",
                                       encoding_format="float", dimensions=4)
    assert len(f.data[0].embedding) == 4
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding[:4], abs=1e-6)


@pytest.mark.parametrize("status, exc", [
    (400, openai.BadRequestError), (429, openai.RateLimitError), (500, openai.InternalServerError)])
async def test_status_override_returns_openai_error(client, mock, status, exc):
    with pytest.raises(exc) as info:
        await client.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, stream=True, extra_body={"mock": {"status": status}})
    assert info.value.status_code == status
    body = json.loads(mock.responses[-1].body)
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_api_key_is_enforced():
    async with MockOpenAI(api_key="sk-right") as m:
        for key, ok in (("sk-wrong", False), ("sk-right", True)):
            async with openai.AsyncOpenAI(base_url=m.url, api_key=key, max_retries=0) as c:
                if ok:
                    await c.chat.completions.create(model="mock-gpt", messages=MESSAGES)
                else:
                    with pytest.raises(openai.AuthenticationError) as info:
                        await c.chat.completions.create(model="mock-gpt", messages=MESSAGES)
                    assert info.value.code == "invalid_api_key"


async def test_unknown_path_and_bad_json(mock):
    status, _, body = await raw_exchange(mock.port, post("/v1/nope", b"{}"))
    assert status == 404 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = await raw_exchange(mock.port, post("/v1/chat/completions", b"{not json"))
    assert status == 400 and "JSON" in json.loads(body)["error"]["message"]


# ---------------------------------------------------------------- failure modes


async def test_drop_after_chunks_breaks_the_stream(client, mock):
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, extra_body={"mock": {"drop_after_chunks": 4}})
    got = []
    with pytest.raises(Exception):
        async for c in stream:
            got.append(c)
    assert len(got) == 4
    assert len(events(mock.responses[-1].body)) == 4


async def test_close_before_response(client):
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, extra_body={"mock": {"close_before_response": True}})


async def test_close_ends_hung_streams():
    m = MockOpenAI()
    await m.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", m.port)
    try:
        writer.write(post("/v1/chat/completions", body_json(stream=True, mock={"hang_after_chunks": 1})))
        await asyncio.wait_for(reader.readuntil(b"data: "), 2)
        await asyncio.wait_for(m.close(), 2)
        await asyncio.wait_for(reader.read(), 2)  # EOF (or reset) instead of hanging forever
    except ConnectionResetError:
        pass
    finally:
        writer.close()


async def test_delays_are_applied(client):
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True,
        extra_body={"mock": {"first_byte_delay_ms": 100, "chunk_delay_ms": 10, "chunks": 5}})
    times = [time.perf_counter() - t0 async for _ in stream]
    assert times[0] >= 0.095
    assert times[-1] - times[0] >= 0.045


# ---------------------------------------------------------------- raw HTTP/1.1


def body_json(stream: bool = False, **extra) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": MESSAGES, "stream": stream, **extra}).encode()


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body))


async def test_chunked_stream_framing_and_keep_alive(mock):
    reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
    try:
        writer.write(post("/v1/chat/completions", body_json(stream=True, mock={"chunks": 3})))
        status, headers, body, sizes = await read_response(reader)
        assert status == 200
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert sizes[-1] == 0 and len(sizes) == 1 + 3 + 1 + 1 + 1  # one SSE event per HTTP chunk
        assert body == mock.responses[-1].body
        assert events(body)[-1] == b"[DONE]"
        # the same connection carries the next request (and a chunked request body)
        payload = body_json()
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            10, payload[:10], len(payload) - 10, payload[10:])
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        status, headers, body, _ = await read_response(reader)
        assert status == 200 and json.loads(body)["object"] == "chat.completion"
        assert mock.requests[-1].body == payload
        assert len(mock.requests) == 2
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(mock):
    reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
    try:
        slow = body_json(mock={"first_byte_delay_ms": 50, "content": "first"})
        fast = body_json(mock={"content": "second"})
        writer.write(post("/v1/chat/completions", slow) + post("/v1/chat/completions", fast))
        one = (await read_response(reader))[2]
        two = (await read_response(reader))[2]
        assert json.loads(one)["choices"][0]["message"]["content"] == "first"
        assert json.loads(two)["choices"][0]["message"]["content"] == "second"
    finally:
        writer.close()


async def test_connection_close_is_honoured(mock):
    reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
    try:
        writer.write(post("/v1/models", b"", b"Connection: close\r\n").replace(b"POST", b"GET"))
        status, headers, _, _ = await read_response(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 2) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST / HTTP/2.0\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nBad header\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
])
def test_parser_rejects_malformed_requests(raw, status):
    p = RequestParser()
    p.feed(raw)
    with pytest.raises(ParseError) as info:
        p.next()
    assert info.value.status == status


def test_parser_handles_split_input():
    raw = post("/v1/chat/completions", b'{"a":1}') * 2
    p = RequestParser()
    got = []
    for i in range(len(raw)):
        p.feed(raw[i:i + 1])
        r = p.next()
        if r is not None:
            got.append(r)
    assert [r.body for r in got] == [b'{"a":1}', b'{"a":1}']
    assert got[0].keep_alive and got[0].method == "POST"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("delay_ms", [0, 5])
async def test_close_after_response_answers_whole_then_closes(mock, stream, delay_ms):
    """A provider that does not keep connections alive: the whole answer, announced with
    ``connection: close``, then EOF; without the knob the same connection is kept."""
    knobs = {"chunks": 2, "chunk_delay_ms": delay_ms}
    for close_after in (False, True):
        reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
        try:
            body = body_json(stream=stream, mock={**knobs, "close_after_response": close_after})
            writer.write(post("/v1/chat/completions", body))
            status, headers, answer, _ = await read_response(reader)
            assert status == 200
            if stream:
                assert answer.endswith(b"data: [DONE]\n\n")
            else:
                assert json.loads(answer)["object"] == "chat.completion"
            if close_after:
                assert headers[b"connection"] == b"close"
                assert await asyncio.wait_for(reader.read(), 5) == b""  # the mock's FIN
            else:
                assert headers.get(b"connection") != b"close"
                writer.write(post("/v1/chat/completions", body_json(mock=knobs)))
                assert (await read_response(reader))[0] == 200  # kept alive
        finally:
            writer.close()
