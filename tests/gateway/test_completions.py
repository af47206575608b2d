"""POST /v1/completions (legacy text completions) through Kraken: the real openai SDK, the mock
provider in OpenAI's legacy wire format, one record per call."""
from __future__ import annotations

import json

import openai
import pytest
from harness import (
    openai_client,
    PROMPT_CANARY,
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
    d["providers"]["mockai"].update({"models": ["gpt-3.5-turbo-instruct"], **provider})
    return d


async def test_sdk_completion_relayed_byte_for_byte_and_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await client(k).completions.with_raw_response.create(
            model="gpt-3.5-turbo-instruct", prompt=PROMPT_CANARY, max_tokens=30)
        result = raw.parse()
        assert result.object == "text_completion" and result.choices[0].text.startswith("tok0")
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        upstream = mock.requests[-1]
        assert upstream.path == "/v1/completions"
        assert json.loads(upstream.body)["prompt"] == PROMPT_CANARY
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert row["status"] == 200 and row["error_type"] is None
        assert row["prompt_tokens"] == 12 and row["completion_tokens"] == 20
        assert row["model_requested"] == "gpt-3.5-turbo-instruct" and row["provider"] == "mockai"


async def test_prompt_array_gives_a_choice_per_prompt_and_is_classified(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        result = await client(k).completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt=["Write a Python function that parses ISO dates.", "two", "three"])
        assert sorted(c.index for c in result.choices) == [0, 1, 2]
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["prompt_tokens"] == 36 and row["completion_tokens"] == 60
        assert row["task_type"] == "code_gen", "classified by its first prompt"


async def test_stream_forces_usage_and_hides_it_when_not_asked(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        stream = await client(k).completions.create(model="gpt-3.5-turbo-instruct", prompt="hi",
                                                    stream=True)
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices).startswith("tok0 tok1")
        assert all(c.usage is None for c in chunks), "the client did not ask for usage"
        sent = json.loads(mock.requests[-1].body)
        assert sent["stream_options"] == {"include_usage": True}, "Kraken asks for usage anyway"
        # raw: the provider's bytes without (only) its usage event
        reply = await http(k.port, "POST", "/v1/completions", json.dumps(
            {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "stream": True}).encode(),
            auth_headers())
        provider = mock.responses[-1].body
        events = provider.split(b"\n\n")
        usage_event = next(e for e in events if b'"choices":[]' in e)
        assert reply.body == provider.replace(usage_event + b"\n\n", b"")
        assert reply.body.endswith(b"data: [DONE]\n\n")
        rows = await wait_rows(k.db_path, 2)
        assert all(r["prompt_tokens"] == 12 and r["completion_tokens"] == 20 for r in rows)


async def test_stream_with_include_usage_is_byte_identical(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        stream = await client(k).completions.create(
            model="gpt-3.5-turbo-instruct", prompt="hi", stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].usage.completion_tokens == 20 and chunks[-1].choices == []
        reply = await http(k.port, "POST", "/v1/completions", json.dumps(
            {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "stream": True,
             "stream_options": {"include_usage": True}}).encode(), auth_headers())
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.body == mock.responses[-1].body
        rows = await wait_rows(k.db_path, 2)
        assert [r["completion_tokens"] for r in rows] == [20, 20]


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
async def test_preset_serves_completions(tmp_path, kind):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, kind=kind)) as k:
        result = await client(k).completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
        assert result.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("provider", [{"kind": "groq"}, {"kind": "anthropic"},
                                      {"kind": "openai_compatible", "completions": False}])
async def test_provider_without_completions_is_404_in_openai_shape(tmp_path, provider):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, **provider)) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
        body = err.value.body
        assert body["code"] == "model_not_found" and "completions" in body["message"]
        assert not mock.requests
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 404 and row["model_requested"] == "gpt-3.5-turbo-instruct"


async def test_unknown_model_is_404(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/completions",
                           b'{"model":"no-such-model","prompt":"x"}', auth_headers())
        assert reply.status == 404 and reply.json()["error"]["code"] == "model_not_found"
        assert not mock.requests


@pytest.mark.parametrize("body,field", [
    (b'{"prompt":"x"}', "model"),
    (b'{"model":"gpt-3.5-turbo-instruct"}', "prompt"),
    (b'{"model":"gpt-3.5-turbo-instruct","prompt":[]}', "prompt"),
    (b'{"model":"gpt-3.5-turbo-instruct","prompt":["a",1]}', "prompt"),
    (b'{"model":"gpt-3.5-turbo-instruct","prompt":"x","stream":"yes"}', "stream"),
])
async def test_bad_body_is_400_naming_the_field(tmp_path, body, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/completions", body, auth_headers())
        assert reply.status == 400 and field in reply.json()["error"]["message"]
        assert not mock.requests
