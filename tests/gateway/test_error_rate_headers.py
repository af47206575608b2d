"""An error answer carries the call's ``x-ratelimit-*`` headers, as a success does, in every
wire format (OpenAI's, Anthropic's, Google's); a 429 from Kraken's own limiter carries its
limits and ``Retry-After`` in each. Through the real ``openai`` and ``anthropic`` SDKs and a
real Kraken in front of the mock providers."""
from __future__ import annotations

import contextlib
import json

import anthropic
import openai
import pytest
from harness import (PROVIDER_KEY, TEST_KEY, http, kraken_mapping, openai_client, running_kraken,
                     running_mock)

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]
RPM = 3


@pytest.fixture
async def kraken(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        mock = await stack.enter_async_context(running_mock())
        claude = await stack.enter_async_context(MockAnthropic(api_key=PROVIDER_KEY))
        doc = kraken_mapping(tmp_path, mock.port, limits={"rpm": RPM})
        doc["providers"]["claude"] = {"kind": "anthropic", "base_url": claude.url,
                                      "api_key": PROVIDER_KEY, "models": ["claude-test"]}
        yield await stack.enter_async_context(running_kraken(doc))


def claude_sdk(k) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=k.base_url, api_key=TEST_KEY, max_retries=0)


async def openai_refusal(k) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        await openai_client(k).chat.completions.create(model="nowhere", messages=HI)
    return refused.value


async def anthropic_refusal(k) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as refused:
        await claude_sdk(k).messages.create(model="nowhere", max_tokens=8, messages=HI)
    return refused.value


async def google_refusal(k):
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    return await http(k.port, "POST", "/v1beta/models/nowhere:generateContent", body,
                      {"x-goog-api-key": TEST_KEY, "content-type": "application/json"})


def limits(headers) -> tuple:
    return (headers.get("x-ratelimit-limit-requests"),
            headers.get("x-ratelimit-remaining-requests"),
            (headers.get("x-ratelimit-reset-requests") or "").endswith("s"))


async def test_every_format_s_error_carries_the_calls_rate_limit_headers(kraken):
    refused = await openai_refusal(kraken)
    assert (refused.status_code, refused.code) == (404, "model_not_found")
    assert limits(refused.response.headers) == (str(RPM), str(RPM - 1), True)

    refused = await anthropic_refusal(kraken)
    assert refused.status_code == 404 and refused.body["type"] == "error"
    assert limits(refused.response.headers) == (str(RPM), str(RPM - 2), True)

    reply = await google_refusal(kraken)
    assert (reply.status, reply.json()["error"]["status"]) == (404, "NOT_FOUND")
    assert limits(reply.headers) == (str(RPM), "0", True)


async def test_a_429_from_the_limiter_says_its_limits_and_when_in_every_format(kraken):
    for _ in range(RPM):
        await openai_refusal(kraken)
    openai_429 = await openai_refusal(kraken)
    anthropic_429 = await anthropic_refusal(kraken)
    google_429 = await google_refusal(kraken)
    assert openai_429.status_code == anthropic_429.status_code == google_429.status == 429
    assert openai_429.body["type"] == "rate_limit_exceeded"
    assert anthropic_429.body["error"]["type"] == "rate_limit_error"
    assert google_429.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    for headers in (openai_429.response.headers, anthropic_429.response.headers,
                    google_429.headers):
        assert limits(headers) == (str(RPM), "0", True)
        assert 1 <= int(headers["retry-after"]) <= 60
