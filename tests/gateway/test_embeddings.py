"""POST /v1/embeddings through Kraken: the real openai SDK, a local mock provider, the record."""
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
    d["providers"]["mockai"].update({"models": ["mock-gpt", "text-embedding-3-small"], **provider})
    return d


async def test_sdk_embeddings_relayed_and_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await client(k).embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=[PROMPT_CANARY, "two"], dimensions=4)
        result = raw.parse()
        assert [len(d.embedding) for d in result.data] == [4, 4]
        assert result.usage.prompt_tokens == 24
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        upstream = mock.requests[-1]
        assert upstream.path == "/v1/embeddings"
        assert upstream.header(b"authorization") == b"Bearer " + PROVIDER_KEY.encode()
        sent = json.loads(upstream.body)
        assert sent["model"] == "text-embedding-3-small" and sent["input"] == [PROMPT_CANARY, "two"]
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert row["task_type"] == "embedding"
        assert row["prompt_tokens"] == 24 and not row["completion_tokens"]
        assert row["model_requested"] == "text-embedding-3-small" and row["provider"] == "mockai"
        assert row["status"] == 200 and row["error_type"] is None


async def test_base64_encoding_passes_through(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        result = await client(k).embeddings.create(model="text-embedding-3-small", input="hi",
                                                    encoding_format="base64")
        assert isinstance(result.data[0].embedding, str)
        assert json.loads(mock.requests[-1].body)["encoding_format"] == "base64"


@pytest.mark.parametrize("body,field", [
    (b'{"input":"x"}', "model"),
    (b'{"model":"text-embedding-3-small"}', "input"),
    (b'{"model":"text-embedding-3-small","input":[]}', "input"),
    (b'{"model":"text-embedding-3-small","input":[1,"a"]}', "input"),
    (b'[1]', "JSON object"),
    (b'{nope', "JSON"),
])
async def test_bad_input_is_400_naming_the_field(tmp_path, body, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/embeddings", body, auth_headers())
        assert reply.status == 400
        assert field in reply.json()["error"]["message"]
        assert not mock.requests, "nothing reached the provider"


async def test_provider_without_embeddings_is_not_tried(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, embeddings=False)) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).embeddings.create(model="text-embedding-3-small", input="hi")
        assert "embeddings" in err.value.message
        assert not mock.requests
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 404 and row["task_type"] == "embedding"


async def test_unknown_model_and_bad_key(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        with pytest.raises(openai.NotFoundError):
            await client(k).embeddings.create(model="no-such-model", input="hi")
        bad = openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key="kr_test_nobody_" + "x" * 24,
                                 max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.embeddings.create(model="text-embedding-3-small", input="hi")
        assert not mock.requests


async def test_provider_4xx_relayed_and_5xx_falls_back(tmp_path):
    async with running_mock() as broken, running_mock() as good:
        d = doc(tmp_path, broken)
        d["providers"]["second"] = {**d["providers"]["mockai"],
                                    "base_url": f"http://127.0.0.1:{good.port}/v1"}
        d["models"] = {"emb": ["mockai/text-embedding-3-small", "second/text-embedding-3-small"]}
        async with running_kraken(d) as k:
            reply = await http(k.port, "POST", "/v1/embeddings", json.dumps(
                {"model": "emb", "input": "x", "mock": {"status": 503}}).encode(), auth_headers())
            # the mock field reaches both: the second answers 503 too, so the last error stands
            assert reply.status == 502
            reply = await http(k.port, "POST", "/v1/embeddings", json.dumps(
                {"model": "emb", "input": "x", "mock": {"status": 422}}).encode(), auth_headers())
            assert reply.status == 422 and len(good.requests) == 1, "4xx is not retried elsewhere"
            rows = await wait_rows(k.db_path, 2)
            assert rows[0]["fallback_used"] == 1 and rows[0]["provider"] == "second"


async def test_embedding_models_listed(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        ids = [m.id async for m in client(k).models.list()]
        assert "text-embedding-3-small" in ids
