"""POST /v1/responses through Kraken: the real openai SDK, streaming and not, bytes unchanged."""
from __future__ import annotations

import json

import openai
import pytest
from harness import (
    openai_client,
    PROMPT_CANARY,
    PROVIDER_KEY,
    auth_headers,
    http,
    kraken_mapping,
    running_kraken,
    running_mock,
    wait_rows,
)

pytestmark = pytest.mark.anyio


client = openai_client


def doc(tmp_path, mock, **provider):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"].update({"kind": "openai", **provider})
    return d


async def test_sdk_response_relayed_and_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await client(k).responses.with_raw_response.create(
            model="mock-gpt", input=PROMPT_CANARY,
            extra_body={"mock": {"usage": {"input_tokens": 30, "cached_tokens": 10,
                                           "output_tokens": 9, "reasoning_tokens": 4}}})
        response = raw.parse()
        assert response.output_text.startswith("tok0 tok1")
        assert response.usage.input_tokens == 30
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        upstream = mock.requests[-1]
        assert upstream.path == "/v1/responses"
        assert upstream.header(b"authorization") == b"Bearer " + PROVIDER_KEY.encode()
        assert json.loads(upstream.body)["input"] == PROMPT_CANARY
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"],
                row["reasoning_tokens"]) == (30, 9, 10, 4)
        assert row["status"] == 200 and row["provider"] == "mockai"
        assert row["model_requested"] == "mock-gpt" and row["task_type"]


async def test_sdk_stream_is_byte_identical_and_usage_from_completed(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        stream = await client(k).responses.create(model="mock-gpt", input="hi", stream=True)
        kinds, text = [], ""
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert text.startswith("tok0 tok1")
        sent = json.loads(mock.requests[-1].body)
        assert "stream_options" not in sent, "nothing is forced on the Responses API"
        # the same stream read raw: exactly the provider's bytes
        reply = await http(k.port, "POST", "/v1/responses", json.dumps(
            {"model": "mock-gpt", "input": "hi", "stream": True}).encode(), auth_headers())
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
        assert reply.body == mock.responses[-1].body
        rows = await wait_rows(k.db_path, 2)
        assert all(r["prompt_tokens"] == 12 and r["completion_tokens"] == 20 for r in rows)


async def test_task_type_from_input_items(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        await client(k).responses.create(model="mock-gpt", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Write a Python function that parses ISO dates."}]}])
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["task_type"] == "code_gen"


async def test_provider_without_responses_api_is_refused(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, kind="deepseek")) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).responses.create(model="mock-gpt", input="hi")
        assert "Responses API" in err.value.message
        assert not mock.requests


async def test_operator_can_enable_responses_for_a_self_hosted_server(tmp_path):
    d = None
    async with running_mock() as mock:
        d = doc(tmp_path, mock, kind="openai_compatible", responses=True)
        async with running_kraken(d) as k:
            response = await client(k).responses.create(model="mock-gpt", input="hi")
            assert response.status == "completed"


@pytest.mark.parametrize("body,field", [
    (b'{"input":"x"}', "model"),
    (b'{"model":"mock-gpt","input":5}', "input"),
    (b'{"model":"mock-gpt","input":"x","stream":"yes"}', "stream"),
])
async def test_bad_input_is_400_naming_the_field(tmp_path, body, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/responses", body, auth_headers())
        assert reply.status == 400 and field in reply.json()["error"]["message"]
        assert not mock.requests


async def test_provider_error_relayed_with_status(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        with pytest.raises(openai.BadRequestError):
            await client(k).responses.create(model="mock-gpt", input="hi",
                                             extra_body={"mock": {"status": 400}})
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 400 and row["error_type"] == "upstream_status"


async def test_stream_cut_by_provider_ends_with_error_event(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/responses", json.dumps(
            {"model": "mock-gpt", "input": "hi", "stream": True,
             "mock": {"drop_after_chunks": 5}}).encode(), auth_headers())
        sent = mock.responses[-1].body
        assert reply.body.startswith(sent) and sent.count(b"\n\n") == 5
        tail = reply.body[len(sent):]
        assert tail.startswith(b"event: error\ndata: ")
        assert json.loads(tail.split(b"data: ", 1)[1])["type"] == "error"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["error_type"] and row["prompt_tokens"] is None
