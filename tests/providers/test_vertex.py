"""kind = "vertex" end to end: the real openai and anthropic SDKs -> a real Kraken -> Kraken's
Vertex AI mock (token endpoint verifying the signed JWT, Vertex's URL shapes, publishers' own
wire formats). Gemini and Claude, streamed and not; usage and cost recorded; one token
exchange for many requests; a failing token endpoint and missing credentials as clear errors."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import anthropic
import openai
import pytest
from harness import (
    PROMPT_CANARY,
    TEST_KEY,
    auth_headers,
    free_port,
    http,
    openai_client,
    running_kraken,
    wait_rows,
    write_toml,
)
from vertex_kit import PREFIX, PRIVATE_KEY_BODY, mock_vertex, vertex_doc, vertex_kraken

pytestmark = pytest.mark.anyio

GEMINI, CLAUDE = "gemini-2.5-flash", "claude-sonnet-4-5@20250929"
HI = [{"role": "user", "content": PROMPT_CANARY}]
# The mock's usage: 12 prompt tokens, 5 generated (chunks=5). Prices: the [vertex] table.
GEMINI_COST = float((12 * Decimal("0.30") + 5 * Decimal("2.50")) / 1_000_000)
CLAUDE_COST = float((12 * Decimal("3.00") + 5 * Decimal("15.00")) / 1_000_000)


def bearer_of(request) -> bytes:
    value = request.header(b"authorization")
    assert value is not None and value.startswith(b"Bearer ya29.mock-")
    return value


def anthropic_sdk(k) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=k.base_url, api_key=TEST_KEY, max_retries=0)


async def exchanges_counted(k, outcome: str) -> float:
    """``kraken_provider_token_exchanges_total`` for the provider and outcome (process-wide)."""
    text = (await http(k.port, "GET", "/metrics")).body.decode()
    series = f'kraken_provider_token_exchanges_total{{outcome="{outcome}",provider="vertex"}} '
    return sum(float(line[len(series):]) for line in text.splitlines() if line.startswith(series))


def assert_clean(text: str) -> None:
    """No prompt, key, assertion or token where Kraken writes."""
    assert PROMPT_CANARY not in text and PRIVATE_KEY_BODY not in text
    assert "ya29." not in text and "eyJ" not in text


async def test_gemini_chat_through_vertex_openai_endpoint_relayed_and_priced(tmp_path):
    async with vertex_kraken(tmp_path) as (mock, k):
        raw = await openai_client(k).chat.completions.with_raw_response.create(
            model=GEMINI, messages=HI)
        answer = raw.parse()
        upstream = mock.requests[-1]
        assert upstream.path == PREFIX + "/endpoints/openapi/chat/completions"
        bearer_of(upstream)
        sent = json.loads(upstream.body)
        assert sent["model"] == "google/" + GEMINI and sent["messages"] == HI
        assert raw.http_response.content == mock.responses[-1].body  # bytes relayed as sent
        assert answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 5
        [row] = await wait_rows(k.db_path, 1)
        assert (row["provider"], row["model_dispatched"], row["status"]) == ("vertex", GEMINI, 200)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
        assert row["cost_usd"] == pytest.approx(GEMINI_COST, abs=1e-12)


async def test_gemini_chat_stream_has_usage_forced_and_hidden(tmp_path):
    async with vertex_kraken(tmp_path) as (mock, k):
        stream = await openai_client(k).chat.completions.create(
            model=GEMINI, messages=HI, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "tok0 tok1 tok2 tok3 tok4"
        assert all(c.usage is None for c in chunks)  # not asked: Kraken's usage chunk hidden
        assert json.loads(mock.requests[-1].body)["stream_options"] == {"include_usage": True}
        [row] = await wait_rows(k.db_path, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
        assert row["cost_usd"] == pytest.approx(GEMINI_COST, abs=1e-12)


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_api_clients_reach_generate_content_bytes_unchanged(tmp_path, stream):
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT_CANARY}]}]})
    async with vertex_kraken(tmp_path) as (mock, k):
        reply = await http(k.port, "POST", f"/v1beta/models/{GEMINI}:{method}", body.encode(),
                           {**auth_headers(), "content-type": "application/json"})
        assert reply.status == 200
        upstream = mock.requests[-1]
        assert upstream.path == f"{PREFIX}/publishers/google/models/{GEMINI}:{method}"
        assert upstream.body == body.encode()
        assert upstream.header(b"x-goog-api-key") is None
        bearer_of(upstream)
        assert reply.body == mock.responses[-1].body
        [row] = await wait_rows(k.db_path, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
        assert row["cost_usd"] == pytest.approx(GEMINI_COST, abs=1e-12)


@pytest.mark.parametrize("stream", [False, True])
async def test_claude_for_openai_clients_goes_to_raw_predict_translated(tmp_path, stream):
    async with vertex_kraken(tmp_path) as (mock, k):
        client = openai_client(k)
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                model=CLAUDE, messages=HI, stream=True, max_tokens=64)]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            answer = await client.chat.completions.create(model=CLAUDE, messages=HI,
                                                          max_tokens=64)
            text = answer.choices[0].message.content
            assert answer.object == "chat.completion"
            assert answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 5
        assert text == "tok0 tok1 tok2 tok3 tok4"
        upstream = mock.requests[-1]
        method = "streamRawPredict" if stream else "rawPredict"
        assert upstream.path == f"{PREFIX}/publishers/anthropic/models/{CLAUDE}:{method}"
        sent = json.loads(upstream.body)
        assert "model" not in sent and sent["anthropic_version"] == "vertex-2023-10-16"
        assert upstream.header(b"x-api-key") is None and upstream.header(b"anthropic-version") is None
        bearer_of(upstream)
        [row] = await wait_rows(k.db_path, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
        assert row["cost_usd"] == pytest.approx(CLAUDE_COST, abs=1e-12)


@pytest.mark.parametrize("stream", [False, True])
async def test_claude_messages_relayed_byte_for_byte_with_the_anthropic_sdk(tmp_path, stream):
    async with vertex_kraken(tmp_path) as (mock, k):
        client = anthropic_sdk(k)
        if stream:
            async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HI,
                                              extra_headers={"anthropic-beta": "x-2025-01-01"}
                                              ) as events:
                message = await events.get_final_message()
            # the stream's events are the mock's, unchanged (the SDK parsed the same bytes)
        else:
            raw = await client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64,
                                                                 messages=HI)
            message = await raw.parse()
            assert raw.http_response.content == mock.responses[-1].body
        assert message.content[0].text == "tok0 tok1 tok2 tok3 tok4"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 5)
        upstream = mock.requests[-1]
        method = "streamRawPredict" if stream else "rawPredict"
        assert upstream.path == f"{PREFIX}/publishers/anthropic/models/{CLAUDE}:{method}"
        sent = json.loads(upstream.body)
        assert "model" not in sent and sent["anthropic_version"] == "vertex-2023-10-16"
        assert sent["messages"] == HI
        if stream:
            assert upstream.header(b"anthropic-beta") == b"x-2025-01-01"
        [row] = await wait_rows(k.db_path, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
        assert row["cost_usd"] == pytest.approx(CLAUDE_COST, abs=1e-12)


async def test_claude_stream_bytes_reach_the_client_unchanged(tmp_path):
    body = json.dumps({"model": CLAUDE, "max_tokens": 64, "messages": HI, "stream": True})
    async with vertex_kraken(tmp_path) as (mock, k):
        reply = await http(k.port, "POST", "/v1/messages", body.encode(),
                           {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01",
                            "content-type": "application/json"})
        assert reply.status == 200
        assert reply.body == mock.responses[-1].body
        assert b"event: message_start" in reply.body


async def test_many_concurrent_requests_cost_one_token_exchange(tmp_path):
    async with vertex_kraken(tmp_path) as (mock, k):
        client = openai_client(k)
        before = await exchanges_counted(k, "ok")
        answers = await asyncio.gather(*(
            client.chat.completions.create(model=model, messages=HI, max_tokens=16)
            for model in [GEMINI, CLAUDE] * 10))
        assert len(answers) == 20 and mock.exchanges == 1
        assert await exchanges_counted(k, "ok") - before == 1
        assert len({bearer_of(r) for r in mock.requests if r.path != "/token"}) == 1


async def test_a_token_vertex_refuses_is_replaced_on_the_next_request(tmp_path):
    async with vertex_kraken(tmp_path) as (mock, k):
        client = openai_client(k)
        await client.chat.completions.create(model=GEMINI, messages=HI)
        mock.expire_tokens()  # Vertex now answers 401 to the cached token
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model=GEMINI, messages=HI)
        assert refused.value.status_code == 502
        await client.chat.completions.create(model=GEMINI, messages=HI)
        assert mock.exchanges == 2


@pytest.mark.parametrize("status, answer, code", [
    (400, 502, "provider_token_refused"),
    (503, 503, "provider_token_unavailable"),
])
async def test_token_endpoint_failure_is_a_clear_openai_error(tmp_path, caplog, status, answer,
                                                               code):
    outcome = "refused" if answer == 502 else "unavailable"
    async with vertex_kraken(tmp_path) as (mock, k):
        before = await exchanges_counted(k, outcome)
        mock.token_status = status
        with pytest.raises(openai.APIStatusError) as caught:
            await openai_client(k).chat.completions.create(model=GEMINI, messages=HI)
        assert caught.value.status_code == answer
        assert caught.value.body["code"] == code
        assert "token endpoint" in caught.value.body["message"]
        assert_clean(caught.value.response.text)
        with pytest.raises(anthropic.APIStatusError) as claude:
            await anthropic_sdk(k).messages.create(model=CLAUDE, max_tokens=8, messages=HI)
        assert claude.value.status_code == answer
        assert claude.value.body["error"]["type"] in ("api_error", "overloaded_error")
        assert not [r for r in mock.requests if r.path.startswith("/v1/")]  # nothing sent
        assert await exchanges_counted(k, outcome) - before == 2
        rows = await wait_rows(k.db_path, 2)
        assert {r["status"] for r in rows} == {answer}
        assert_clean(caplog.text + json.dumps(rows))


async def test_missing_credentials_warn_at_startup_and_answer_503(tmp_path, caplog):
    async with mock_vertex() as mock:
        doc = vertex_doc(tmp_path, mock, credentials_file="")
        async with running_kraken(doc) as k:
            with pytest.raises(openai.APIStatusError) as caught:
                await openai_client(k).chat.completions.create(model=GEMINI, messages=HI)
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "provider_credentials_missing"
        assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.body["message"]
        assert mock.exchanges == 0 and not mock.requests


def test_kraken_serve_names_the_missing_key_file_at_startup(tmp_path):
    port = free_port()
    config = tmp_path / "kraken.toml"
    absent = tmp_path / "no-such-key.json"
    write_toml(config, {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(tmp_path / "kraken.db")},
        "providers": {"unset": {"kind": "vertex", "project": "kraken-test",
                                "region": "europe-west4", "models": [GEMINI]},
                      "absent": {"kind": "vertex", "project": "kraken-test", "region": "global",
                                 "credentials_file": str(absent), "models": [CLAUDE]}},
    })
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KRAKEN_", "GOOGLE_")) and not k.endswith("_API_KEY")}
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kraken", "serve", "--config", str(config)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "kraken listening" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    warnings = [line for line in err_path.read_text().splitlines() if "requests routed" in line]
    assert len(warnings) == 2, warnings
    assert "provider unset: no service-account key: GOOGLE_APPLICATION_CREDENTIALS" in warnings[0]
    assert f"provider absent: credentials file '{absent}' cannot be read" in warnings[1]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_claude_model_with_a_slash_is_refused_before_a_token_is_sent(tmp_path, path):
    """``_MODEL`` allows one ``/`` for a publisher named in Vertex's OpenAI body (``meta/x``);
    a Claude model goes in the rawPredict path, where that ``/`` is one more segment the client
    would choose, sent with the service account's token. No Claude model id has one."""
    async with vertex_kraken(tmp_path) as (mock, k):
        raw = await http(k.port, "POST", path, json.dumps({
            "model": "vertex/claude-sonnet-4-5/operations", "max_tokens": 8,
            "messages": HI}).encode(), auth_headers())
    assert [r.path for r in mock.requests if "/publishers/" in r.path] == []
    assert raw.status == 400
    error = raw.json()["error"]
    assert error.get("param") == "model" or error["message"].startswith("model")
