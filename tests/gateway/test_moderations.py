"""POST /v1/moderations through Kraken: the real openai SDK, the mock in OpenAI's wire format,
one record per call with null usage (the API reports none)."""
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
DEFAULT = "omni-moderation-latest"


client = openai_client


def doc(tmp_path, mock, models=(DEFAULT, "text-moderation-stable"), **provider):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"].update({"models": list(models), "moderations": True, **provider})
    return d


async def test_sdk_moderation_relayed_byte_for_byte_with_null_usage(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await client(k).moderations.with_raw_response.create(
            model="text-moderation-stable", input=[PROMPT_CANARY, "two"])
        result = raw.parse()
        assert len(result.results) == 2 and result.results[0].flagged is False
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        upstream = mock.requests[-1]
        assert upstream.path == "/v1/moderations"
        assert json.loads(upstream.body)["model"] == "text-moderation-stable"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert row["status"] == 200 and row["task_type"] == "other"
        assert row["prompt_tokens"] is None and row["completion_tokens"] is None
        assert row["cost_usd"] is None


async def test_model_omitted_defaults_to_omni_moderation_latest(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        result = await client(k).moderations.create(input="hello")
        assert result.model == DEFAULT
        assert json.loads(mock.requests[-1].body)["model"] == DEFAULT
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["model_requested"] == DEFAULT and row["status"] == 200


async def test_provider_without_moderations_is_404_in_openai_shape(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, moderations=False)) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).moderations.create(input="hello")
        assert err.value.body["code"] == "model_not_found"
        assert "moderations" in err.value.body["message"]
        assert not mock.requests
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 404


async def test_default_model_not_configured_is_404(tmp_path):
    async with running_mock() as mock, \
            running_kraken(doc(tmp_path, mock, models=("mock-gpt",))) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).moderations.create(input="hello")
        assert DEFAULT in err.value.body["message"]
        assert not mock.requests


@pytest.mark.parametrize("body,field", [
    (b'{"model":"omni-moderation-latest"}', "input"),
    (b'{"input":[]}', "input"),
    (b'{"input":["a",{"type":"text","text":"b"}]}', "input"),
    (b'{"model":5,"input":"x"}', "model"),
])
async def test_bad_body_is_400_naming_the_field(tmp_path, body, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/moderations", body, auth_headers())
        assert reply.status == 400 and field in reply.json()["error"]["message"]
        assert not mock.requests
