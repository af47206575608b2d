"""A body check's 400 names the field at fault in OpenAI's ``error.param`` (the SDKs'
``exc.param``), as api.openai.com does, not only in the message: through the real ``openai``
SDK and a real Kraken in front of the mock providers."""
from __future__ import annotations

import contextlib

import openai
import pytest
from harness import PROVIDER_KEY, kraken_mapping, openai_client, running_kraken, running_mock

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def client(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        mock = await stack.enter_async_context(running_mock())
        claude = await stack.enter_async_context(MockAnthropic(api_key=PROVIDER_KEY))
        doc = kraken_mapping(tmp_path, mock.port)
        doc["providers"]["claude"] = {"kind": "anthropic", "base_url": claude.url,
                                      "api_key": PROVIDER_KEY, "models": ["claude-test"]}
        k = await stack.enter_async_context(running_kraken(doc))
        yield openai_client(k)


CASES = {
    "messages": lambda c: c.chat.completions.create(model="mock-gpt", messages=[]),
    "model": lambda c: c.chat.completions.create(model="", messages=HI),
    "stream": lambda c: c.chat.completions.create(model="mock-gpt", messages=HI,
                                                  extra_body={"stream": "yes"}),
    "stream_options": lambda c: c.chat.completions.create(model="mock-gpt", messages=HI,
                                                          stream=True, stream_options=5),
    "temperature": lambda c: c.chat.completions.create(model="claude-test", messages=HI,
                                                       temperature="hot"),
    "input": lambda c: c.embeddings.create(model="mock-gpt", input=[]),
    "prompt": lambda c: c.completions.create(model="mock-gpt", prompt=[]),
}


@pytest.mark.parametrize("param", list(CASES))
async def test_a_body_check_names_its_field_in_param(client, param):
    with pytest.raises(openai.BadRequestError) as refused:
        await CASES[param](client)
    assert refused.value.param == param
    assert refused.value.body["param"] == param
    assert param in refused.value.message


@pytest.mark.parametrize("call, param", [
    (lambda c: c.moderations.create(input=[]), "input"),
    (lambda c: c.images.generate(prompt=""), "prompt"),
    (lambda c: c.responses.create(model="mock-gpt", input=5), "input"),
])
async def test_other_endpoints_name_the_field_too(client, call, param):
    with pytest.raises(openai.BadRequestError) as refused:
        await call(client)
    assert refused.value.param == param


async def test_a_body_that_is_not_json_names_no_field(client):
    with pytest.raises(openai.BadRequestError) as refused:
        await client.post("/chat/completions", content=b"{not json", cast_to=object,
                          options={"headers": {"content-type": "application/json"}})
    assert refused.value.code == "invalid_json" and refused.value.param is None
