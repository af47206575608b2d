"""POST /v1/images/generations through Kraken: the real openai SDK, the mock in OpenAI's wire
format; gpt-image usage (input/output tokens) recorded, DALL-E's absent usage left null."""
from __future__ import annotations

import json

import openai
import pytest
from harness import (
    openai_client,
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
    d["providers"]["mockai"].update({"models": ["gpt-image-1", "dall-e-2"], "images": True,
                                     **provider})
    return d


async def test_sdk_gpt_image_relayed_byte_for_byte_and_tokens_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await client(k).images.with_raw_response.generate(
            model="gpt-image-1", prompt="a red kraken", n=2)
        result = raw.parse()
        assert len(result.data) == 2 and result.data[0].b64_json
        assert result.usage.input_tokens == 12 and result.usage.output_tokens == 544
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        assert mock.requests[-1].path == "/v1/images/generations"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert row["status"] == 200 and row["task_type"] == "other"
        assert row["prompt_tokens"] == 12 and row["completion_tokens"] == 544


async def test_large_image_body_usage_read_from_its_tail(tmp_path):
    """A 1.5 MB base64 answer: relayed whole, its usage (written last) still recorded."""
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/images/generations", json.dumps(
            {"model": "gpt-image-1", "prompt": "x",
             "mock": {"image_bytes": 1 << 20, "usage": {"input_tokens": 7, "output_tokens": 4160}}}
        ).encode(), auth_headers())
        assert reply.status == 200 and len(reply.body) > 1 << 20
        assert reply.body == mock.responses[-1].body
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["prompt_tokens"] == 7 and row["completion_tokens"] == 4160


async def test_dall_e_default_model_and_no_usage(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        result = await client(k).images.generate(prompt="a red kraken")
        assert result.data[0].url and result.usage is None
        assert json.loads(mock.requests[-1].body)["model"] == "dall-e-2", "OpenAI's default"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["model_requested"] == "dall-e-2" and row["status"] == 200
        assert row["prompt_tokens"] is None and row["cost_usd"] is None


async def test_provider_without_images_is_404_in_openai_shape(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, images=False)) as k:
        with pytest.raises(openai.NotFoundError) as err:
            await client(k).images.generate(model="gpt-image-1", prompt="x")
        assert err.value.body["code"] == "model_not_found"
        assert "images" in err.value.body["message"]
        assert not mock.requests
        assert (await wait_rows(k.db_path, 1))[0]["status"] == 404


@pytest.mark.parametrize("body,field", [
    (b'{"model":"gpt-image-1"}', "prompt"),
    (b'{"model":"gpt-image-1","prompt":""}', "prompt"),
    (b'{"model":"gpt-image-1","prompt":"x","stream":true}', "stream"),
    (b'{"model":["gpt-image-1"],"prompt":"x"}', "model"),
])
async def test_bad_body_is_400_naming_the_field(tmp_path, body, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/images/generations", body, auth_headers())
        assert reply.status == 400 and field in reply.json()["error"]["message"]
        assert not mock.requests
