"""The call's cost in the answer: ``x-kraken-cost-usd`` on non-streamed answers, and
``usage.cost_usd`` spliced into the body only when the client asks (``x-kraken-include-cost``).
The real OpenAI SDK through a real Kraken in front of the mock provider."""
from __future__ import annotations

import json

import pytest
from harness import (
    auth_headers,
    http,
    kraken_mapping,
    openai_client,
    running_kraken,
    running_mock,
    wait_rows,
)

from kraken.gateway.cost_header import MAX_HELD, format_cost, splice_cost

pytestmark = pytest.mark.anyio

PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens
MODELS = ["mock-gpt", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]
OPT_IN = {"x-kraken-include-cost": "true"}


def doc(tmp_path, mock, priced=True):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"]["models"] = MODELS
    if priced:
        d["prices"] = {"openai_compatible": {m: PRICE for m in MODELS}}
    return d


def expected_cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * PRICE["input"]
            + usage.get("completion_tokens", 0) * PRICE["output"]) / 1e6


def calls(client):
    """chat, embeddings and legacy completions, each as a with_raw_response call."""
    return {
        "chat": lambda **kw: client.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}], **kw),
        "embeddings": lambda **kw: client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["one", "two"], dimensions=4, **kw),
        "completions": lambda **kw: client.completions.with_raw_response.create(
            model="gpt-3.5-turbo-instruct", prompt="hi", **kw),
    }


@pytest.mark.parametrize("endpoint", ["chat", "embeddings", "completions"])
async def test_header_carries_the_recorded_cost_and_the_body_stays_byte_exact(tmp_path, endpoint):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await calls(openai_client(k))[endpoint]()
        assert raw.content == mock.responses[-1].body, "no opt-in: the provider's bytes"
        usage = json.loads(raw.content)["usage"]
        header = raw.headers["x-kraken-cost-usd"]
        assert float(header) == pytest.approx(expected_cost(usage))
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert header == format_cost(row["cost_usd"]).decode(), "the record's figure"
        assert "e" not in header, "a plain decimal"


@pytest.mark.parametrize("endpoint", ["chat", "embeddings", "completions"])
async def test_opt_in_splices_cost_into_usage_and_changes_nothing_else(tmp_path, endpoint):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await calls(openai_client(k))[endpoint](extra_headers=OPT_IN)
        parsed = raw.parse()
        assert parsed.usage.prompt_tokens > 0, "the SDK still reads the answer"
        sent = mock.responses[-1].body
        header = raw.headers["x-kraken-cost-usd"]
        body = json.loads(raw.content)
        assert body["usage"]["cost_usd"] == float(header)
        assert raw.content == splice_cost(sent, header.encode())
        assert raw.content.replace(b',"cost_usd":' + header.encode(), b"") == sent, \
            "only the inserted member differs from the provider's bytes"
        assert int(raw.headers["content-length"]) == len(raw.content)


async def test_unknown_price_no_header_and_null_when_asked(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, priced=False)) as k:
        client = openai_client(k)
        raw = await calls(client)["chat"]()
        assert "x-kraken-cost-usd" not in raw.headers
        assert raw.content == mock.responses[-1].body
        raw = await calls(client)["chat"](extra_headers=OPT_IN)
        assert "x-kraken-cost-usd" not in raw.headers
        assert json.loads(raw.content)["usage"]["cost_usd"] is None


async def test_error_answers_carry_no_cost(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                "mock": {"status": 400}}
        reply = await http(k.port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                           {**auth_headers(), "content-type": "application/json", **OPT_IN})
        assert reply.status == 400
        assert "x-kraken-cost-usd" not in {name.lower() for name in reply.headers}
        assert b"cost_usd" not in reply.body


async def test_streams_carry_no_cost_header_and_no_cost_without_usage(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        async with openai_client(k).chat.completions.with_streaming_response.create(
                model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_headers=OPT_IN) as response:
            assert "x-kraken-cost-usd" not in response.headers
            text = b"".join([chunk async for chunk in response.iter_bytes()])
        assert b"cost_usd" not in text, "no usage chunk asked for: nothing to add the cost to"


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}),
])
async def test_opted_in_stream_gets_cost_in_its_final_usage_chunk(tmp_path, route, body):
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        headers = {**auth_headers(), "content-type": "application/json"}
        plain = await http(k.port, "POST", route, json.dumps(body).encode(), headers)
        assert plain.body == mock.responses[-1].body, "not opted in: byte for byte"
        reply = await http(k.port, "POST", route, json.dumps(body).encode(), {**headers, **OPT_IN})
        sent = mock.responses[-1].body
        events = [json.loads(line[6:]) for line in reply.body.decode().splitlines()
                  if line.startswith("data: {")]
        usage = events[-1]["usage"]
        assert events[-1]["choices"] == [] and reply.body.endswith(b"data: [DONE]\n\n")
        row = next(r for r in await wait_rows(k.db_path, 2) if r["request_id"] == reply.headers["x-request-id"])
        assert usage["cost_usd"] == float(format_cost(row["cost_usd"]))
        assert usage["cost_usd"] == pytest.approx(expected_cost(usage))
        figure = format_cost(row["cost_usd"])
        assert reply.body.replace(b',"cost_usd":' + figure, b"") == sent, "only that member added"


async def test_opted_in_stream_unknown_price_is_null(tmp_path):
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, priced=False)) as k:
        reply = await http(k.port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                           {**auth_headers(), "content-type": "application/json", **OPT_IN})
        last = [line for line in reply.body.decode().splitlines() if line.startswith("data: {")][-1]
        assert json.loads(last[6:])["usage"]["cost_usd"] is None


async def test_answer_larger_than_the_hold_goes_out_as_received(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await openai_client(k).embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["x"] * 80, dimensions=3072,
            encoding_format="float")
        assert len(raw.content) > MAX_HELD
        assert raw.content == mock.responses[-1].body
        assert "x-kraken-cost-usd" not in raw.headers, "not held, so not priced in the head"


def test_splice_targets_the_top_level_usage_only():
    body = b'{"a":{"usage":{"x":1}},"usage":{"prompt_tokens":3}\n}'
    assert splice_cost(body, b"0.5") == b'{"a":{"usage":{"x":1}},"usage":{"prompt_tokens":3,"cost_usd":0.5}\n}'
    assert splice_cost(b'{"usage":{ }}', b"null") == b'{"usage":{ "cost_usd":null}}'
    assert splice_cost(b'{"data":[]}', b"1") is None


def test_format_cost_is_plain_decimal():
    assert format_cost(0.0000015) == b"0.0000015"
    assert format_cost(0.0) == b"0"
    assert format_cost(12.5) == b"12.5"
