"""Refusals tell SDKs whether and when to retry. An answer no retry can fix (a used-up key
budget, a monthly cap, an empty wallet) says ``x-should-retry: false``; one that passes (a
rate limit, an open circuit, a full pool, overload) says ``Retry-After``. Checked against the
real OpenAI and Anthropic SDKs' own retry decision, and end to end through the real ``openai``
SDK (``max_retries=2``) against a real ``kraken serve`` process: a used-up budget is requested
once, and the circuit-open 503 carries the seconds until the next probe.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import AsyncIterator

import anthropic
import anyio
import httpx2
import openai
import pytest
from harness import TEST_KEY, http, kraken_mapping, kraken_process, running_kraken, running_mock
from rawprovider import scripted_provider

from kraken.accounts import service
from kraken.billing.guard import (
    InsufficientBalance, MonthlySpendCapReached, MonthlyTokenCapReached,
)
from kraken.billing.key_budgets import KeySpendBudgetExceeded, KeyTokenBudgetExceeded
from kraken.errors import KrakenError, Overloaded, PoolExhausted, PoolShareExceeded
from kraken.policy.breaker import CircuitOpen
from kraken.policy.ratelimit import refuse
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

NO_RETRY = [
    KeyTokenBudgetExceeded("used up"),
    KeySpendBudgetExceeded("used up"),
    MonthlyTokenCapReached("cap", retry_after_s=86_400),
    MonthlySpendCapReached("cap"),
    InsufficientBalance("empty"),
]
RETRY_LATER = [
    refuse("key_rpm", limit=10, retry_after_s=7, window_s=60),
    refuse("key_concurrency", limit=2, retry_after_s=1, window_s=60),
    PoolShareExceeded("share", limit=5),
    PoolExhausted("busy"),
    CircuitOpen("open", retry_after_s=12),
    Overloaded("queue full"),
]


def sdk_would_retry(exc: KrakenError) -> tuple[bool, bool]:
    """(openai, anthropic): would each SDK retry this answer (its own ``_should_retry``)?"""
    response = httpx2.Response(exc.status, headers=[(k.decode(), v.decode())
                                                    for k, v in exc.headers])
    oa = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    an = anthropic.Anthropic(api_key="x", base_url="http://127.0.0.1:9")
    return oa._should_retry(response), an._should_retry(response)


@pytest.mark.parametrize("exc", NO_RETRY, ids=lambda e: type(e).__name__)
def test_answers_no_retry_can_fix_stop_sdk_retries(exc):
    assert exc.status in (402, 429)
    assert (b"x-should-retry", b"false") in exc.headers
    assert sdk_would_retry(exc) == (False, False)


@pytest.mark.parametrize("exc", RETRY_LATER, ids=lambda e: type(e).__name__ + str(e.status))
def test_answers_that_pass_say_when_to_retry(exc):
    assert exc.status in (429, 503)
    retry_after = dict(exc.headers).get(b"retry-after")
    assert retry_after is not None and int(retry_after) >= 1
    assert sdk_would_retry(exc) == (True, True)


# ---- end to end: the openai SDK against a real kraken serve --------------------------------

@contextlib.asynccontextmanager
async def kraken(tmp_path: Path, mock_port: int, **sections: dict) -> AsyncIterator[int]:
    async with kraken_process(tmp_path, mock_port, **sections) as proc:
        yield proc.port


async def counter(port: int, sample: str) -> float:
    """A counter from Kraken's /metrics, by its exact sample text (0 when absent)."""
    for line in (await http(port, "GET", "/metrics")).body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def chat_body() -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "mock": {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}}).encode()


def sdk(port: int, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=2)


async def test_a_used_up_key_budget_is_requested_once_by_the_sdk(tmp_path):
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    try:
        customer = await service.create_customer(store, "sdk-budget@example.com")
        capped = await service.create_key(store, customer.id, token_budget=1, rounds=4)
    finally:
        await store.close()
    async with running_mock() as mock, kraken(tmp_path, mock.port) as port:
        headers = {"Authorization": f"Bearer {capped.plaintext}"}
        with anyio.fail_after(10):  # the first answer uses the budget up (15 of 1 tokens)
            while (await http(port, "POST", "/v1/chat/completions", chat_body(),
                              headers)).status != 429:
                await anyio.sleep(0.02)
        sample = 'kraken_billing_refusals_total{reason="key_token_budget"}'
        before = await counter(port, sample)
        async with sdk(port, capped.plaintext) as client:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(
                    model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "key_token_budget_exceeded"
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert await counter(port, sample) == before + 1, "the SDK did not retry"


async def test_the_circuit_open_503_says_when_the_probe_goes_and_the_sdk_waits(tmp_path):
    routing = {"breaker_failures": 1, "breaker_cooldown_s": 300}
    async with running_mock() as mock, kraken(tmp_path, mock.port, routing=routing) as port:
        mock.fail_status = 503
        r = await http(port, "POST", "/v1/chat/completions", chat_body(),
                       {"Authorization": "Bearer " + TEST_KEY})
        assert r.status == 502  # the provider's failure opens the circuit
        sample = 'kraken_circuit_skips_total{provider="mockai"}'
        async with sdk(port, TEST_KEY) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(
                    model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 503 and caught.value.code == "circuit_open"
        retry_after = int(caught.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 300
        # Five minutes is beyond what the SDK waits for: one 503, no retry burst meanwhile.
        assert await counter(port, sample) == 1
        assert len(mock.requests) == 1


# ---- a provider's own Retry-After ----------------------------------------------------------

def refusal(status: bytes, retry_after: bytes) -> bytes:
    body = b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}'
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nretry-after: %s\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, retry_after, len(body), body))


@pytest.mark.parametrize("status, retry_after, answered, passed_on", [
    (b"429 Too Many Requests", b"17", 429, "17"),
    (b"503 Service Unavailable", b"30", 502, "30"),
    (b"429 Too Many Requests", b"Wed, 21 Oct 2015 07:28:00 GMT", 429, None),
    (b"429 Too Many Requests", b"99999999999", 429, None),
])
async def test_a_providers_retry_after_reaches_the_client(tmp_path, status, retry_after,
                                                          answered, passed_on):
    """The provider's refusal says how long to wait: the client's SDK is told the same (a
    plausible number of seconds only), not left to retry at once against a limited provider."""
    server, port = await scripted_provider([[refusal(status, retry_after)]], 0)
    try:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat_body(),
                           {"Authorization": "Bearer " + TEST_KEY})
    finally:
        server.close()
    assert r.status == answered
    assert r.headers.get("retry-after") == passed_on
