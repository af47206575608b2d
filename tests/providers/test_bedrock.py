"""kind = "bedrock" end to end: the real openai SDK -> a real Kraken -> Kraken's Bedrock mock,
which speaks Converse / ConverseStream (JSON, binary event-stream frames with CRCs) and checks
every request's SigV4 signature against the test key pair."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import orjson
import openai
import pytest
from bedrock_kit import CLAUDE, CREDS, ENV, NOVA, bedrock_kraken
from harness import (
    PROMPT_CANARY, auth_headers, free_port, http, openai_client, wait_rows, write_toml,
)

from kraken.providers.sigv4 import Credentials

pytestmark = pytest.mark.anyio

HI = [{"role": "system", "content": "Answer briefly."},
      {"role": "user", "content": PROMPT_CANARY}]
# Claude 3.5 Sonnet on Bedrock: 12 input tokens at $3/M + 5 output at $15/M
COST = float((12 * Decimal("3") + 5 * Decimal("15")) / 1_000_000)
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


async def test_chat_completion_is_a_signed_converse_call_metered_and_priced(tmp_path):
    async with bedrock_kraken(tmp_path) as (mock, k):
        client = openai_client(k)
        answer = await client.chat.completions.create(
            model=CLAUDE, messages=HI, max_tokens=64, temperature=0.2, top_p=0.9, stop=["END"])
        (row,) = await wait_rows(k.db_path, 1)
    seen = mock.requests[-1]
    assert seen.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert seen.header(b"x-amz-security-token") == CREDS.session_token.encode()
    assert seen.header(b"authorization").startswith(
        b"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert seen.json() == {
        "messages": [{"role": "user", "content": [{"text": PROMPT_CANARY}]}],
        "system": [{"text": "Answer briefly."}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9,
                            "stopSequences": ["END"]}}
    assert answer.choices[0].message.content == "word0 word1 word2 word3 word4 "
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == CLAUDE and answer.id.startswith("chatcmpl-")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 5)
    assert row["status"] == 200 and row["provider"] == "aws"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["cost_usd"] == pytest.approx(COST, abs=1e-12)
    assert PROMPT_CANARY.encode() not in (tmp_path / "kraken.db").read_bytes()


async def test_max_tokens_reached_is_finish_reason_length(tmp_path):
    async with bedrock_kraken(tmp_path) as (mock, k):
        answer = await openai_client(k).chat.completions.create(
            model=NOVA, messages=HI, max_completion_tokens=3)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "word0 word1 word2 "


async def test_stream_is_translated_from_event_stream_frames_with_usage(tmp_path):
    async with bedrock_kraken(tmp_path) as (mock, k):
        stream = await openai_client(k).chat.completions.create(
            model=CLAUDE, messages=HI, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        (row,) = await wait_rows(k.db_path, 1)
    assert mock.requests[-1].path.endswith("%3A0/converse-stream")
    assert mock.requests[-1].header(b"accept") == b"application/vnd.amazon.eventstream"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "word0 word1 word2 word3 word4 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["cost_usd"] == pytest.approx(COST, abs=1e-12)


async def test_stream_without_include_usage_has_no_usage_chunk_but_is_metered(tmp_path):
    async with bedrock_kraken(tmp_path) as (mock, k):
        raw = await http(k.port, "POST", "/v1/chat/completions", orjson.dumps({
            "model": CLAUDE, "messages": HI, "stream": True}), auth_headers())
        (row,) = await wait_rows(k.db_path, 1)
    events = [e for e in raw.body.decode().split("\n\n") if e]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and '"usage"' not in raw.body.decode()
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["cost_usd"] == pytest.approx(COST, abs=1e-12)


async def test_tools_round_trip_as_tool_use_and_tool_result(tmp_path):
    history = [*HI, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "And Bergen?"}]
    async with bedrock_kraken(tmp_path) as (mock, k):
        client = openai_client(k)
        answer = await client.chat.completions.create(
            model=CLAUDE, messages=history, tools=WEATHER,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        sent = mock.requests[-1].json()
        stream = await client.chat.completions.create(
            model=CLAUDE, messages=HI, tools=WEATHER, tool_choice="required", stream=True)
        chunks = [c async for c in stream]
        rows = await wait_rows(k.db_path, 2)
    assert sent["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_weather", "description": "Weather in a city",
        "inputSchema": {"json": WEATHER[0]["function"]["parameters"]}}}],
        "toolChoice": {"tool": {"name": "get_weather"}}}
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [{"toolUse": {
        "toolUseId": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}}]
    assert sent["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
        {"text": "And Bergen?"}]
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, call.function.arguments) == (
        "tooluse_mock0000000001", "get_weather", '{"city":"mock"}')
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks
              if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id == "tooluse_mock0000000001" and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments for d in deltas) == '{"city":"mock"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert all(r["completion_tokens"] == 9 and r["cost_usd"] > 0 for r in rows)


@pytest.mark.parametrize(("status", "message", "sdk_error", "seen_status"), [
    (429, "Too many requests, please wait before trying again.", openai.RateLimitError, 429),
    (400, "The provided model identifier is invalid.", openai.BadRequestError, 400),
    (403, "You don't have access to the model with the specified model ID.",
     openai.InternalServerError, 502),
    (408, "Model has timed out in processing the request.", openai.APIStatusError, 504),
    (503, "Service unavailable.", openai.APIStatusError, 503),
    (424, "Received error from the model.", openai.InternalServerError, 502),
])
async def test_bedrock_errors_map_to_openai_errors(tmp_path, status, message, sdk_error,
                                                   seen_status):
    async with bedrock_kraken(tmp_path) as (mock, k):
        mock.fail[NOVA] = (status, message)
        with pytest.raises(sdk_error) as caught:
            await openai_client(k).chat.completions.create(model=NOVA, messages=HI)
        (row,) = await wait_rows(k.db_path, 1)
    assert caught.value.status_code == seen_status == row["status"]
    if status == 400:  # Bedrock's own message, in OpenAI's envelope
        assert caught.value.body == {"message": message, "type": "invalid_request_error",
                                     "param": None, "code": "ValidationException"}
    else:
        assert message not in str(caught.value.body)


async def test_a_wrong_secret_key_fails_the_mocks_signature_check(tmp_path):
    wrong = Credentials(CREDS.access_key_id, "x" * 40, CREDS.session_token)
    async with bedrock_kraken(tmp_path, mock_creds=wrong) as (mock, k):
        with pytest.raises(openai.InternalServerError) as caught:
            await openai_client(k).chat.completions.create(model=NOVA, messages=HI)
    assert caught.value.status_code == 502
    assert "rejected the gateway's credentials" in caught.value.message
    assert mock.responses[-1].status == 403 and b"signature we calculated" in \
        mock.responses[-1].body


async def test_exception_mid_stream_is_an_sse_error_event(tmp_path):
    async with bedrock_kraken(tmp_path) as (mock, k):
        mock.break_stream[CLAUDE] = (3, "throttlingException", "Too many tokens, please wait.")
        raw = await http(k.port, "POST", "/v1/chat/completions", orjson.dumps({
            "model": CLAUDE, "messages": HI, "stream": True}), auth_headers())
    events = [e for e in raw.body.decode().split("\n\n") if e]
    assert raw.status == 200
    assert [e.startswith("data: ") for e in events[:-1]] == [True] * (len(events) - 1)
    assert '"content":"word1 "' in events[-2]
    assert events[-1] == ('event: error\ndata: {"error":{"message":"Too many tokens, please '
                          'wait.","type":"rate_limit_exceeded","param":null,'
                          '"code":"throttlingException"}}')
    assert "[DONE]" not in raw.body.decode()


@pytest.mark.parametrize(("failure", "client_error", "recorded"), [
    ({"break_stream": (3, "throttlingException", "Too many tokens, please wait.")},
     "rate_limit_exceeded", "upstream_rate_limited"),
    ({"break_stream": (3, "serviceUnavailableException", "Service unavailable.")},
     "server_error", "upstream_overloaded"),
    ({"break_stream": (3, "modelStreamErrorException", "The model failed.")},
     "upstream_error", "upstream_error"),
    ({"corrupt_stream": 3}, "upstream_error", "upstream_error"),  # a wrong message CRC
    ({"cut_stream": 4}, "upstream_error", "upstream_error"),  # body ends before messageStop
    ({"drop_stream": 4}, "upstream_error", "upstream_error"),  # connection closed mid-body
    ({"cut_stream": 8}, None, None),  # after messageStop, only metadata missing: complete
    ({}, None, None),
])
async def test_a_stream_failing_after_its_first_byte_is_recorded_as_failed(
        tmp_path, failure, client_error, recorded):
    """As for an OpenAI stream cut mid-way: the status stays the 200 the client saw, the
    record's error_type says what failed, and the client's last event says the same."""
    async with bedrock_kraken(tmp_path) as (mock, k):
        for knob, value in failure.items():
            getattr(mock, knob)[CLAUDE] = value
        raw = await http(k.port, "POST", "/v1/chat/completions", orjson.dumps({
            "model": CLAUDE, "messages": HI, "stream": True}), auth_headers())
        (row,) = await wait_rows(k.db_path, 1)
    last = [e for e in raw.body.decode().split("\n\n") if e][-1]
    assert raw.status == 200 and row["status"] == 200
    assert row["error_type"] == recorded
    if client_error is None:
        assert last == "data: [DONE]"
    else:
        assert last.startswith("event: error\ndata: ")
        assert orjson.loads(last.split("data: ", 1)[1])["error"]["type"] == client_error


async def test_missing_credentials_answer_503_naming_the_cause(tmp_path):
    async with bedrock_kraken(tmp_path, env={"AWS_ACCESS_KEY_ID": CREDS.access_key_id}) \
            as (mock, k):
        with pytest.raises(openai.APIStatusError) as caught:
            await openai_client(k).chat.completions.create(model=NOVA, messages=HI)
    assert caught.value.status_code == 503
    assert caught.value.code == "provider_credentials_missing"
    assert "has no AWS credentials" in caught.value.message
    assert len(mock.requests) == 0


def test_missing_credentials_are_named_at_startup(tmp_path):
    port = free_port()
    config = tmp_path / "kraken.toml"
    write_toml(config, {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(tmp_path / "kraken.db")},
        "providers": {
            "aws": {"kind": "bedrock", "region": "us-east-1", "models": [NOVA]},
            "named": {"kind": "bedrock", "region": "eu-west-1", "models": [CLAUDE],
                      "access_key_id_env": "TEAM_AWS_KEY_ID",
                      "secret_access_key_env": "TEAM_AWS_SECRET"}},
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "AWS_", "TEAM_"))}
    env["TEAM_AWS_KEY_ID"] = "AKIDTEAM"
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
    warnings = [line for line in err_path.read_text().splitlines() if "is not set" in line]
    assert len(warnings) == 2, warnings
    assert "provider aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is not set" in warnings[0]
    assert "provider named: TEAM_AWS_SECRET is not set" in warnings[1]
    assert "AKIDTEAM" not in err_path.read_text()


@pytest.mark.parametrize("model", ["..", "."])
async def test_a_dot_segment_model_id_is_refused_before_any_signed_request(tmp_path, model):
    """``aws/..`` passes the router's name check and ``quote`` leaves dots alone: the signed
    request would go to ``/model/../converse``, which a server resolves to ``/converse``, a path
    Kraken never meant to send (and sign) its AWS credentials for. No model id is a dot segment."""
    async with bedrock_kraken(tmp_path) as (mock, k):
        raw = await http(k.port, "POST", "/v1/chat/completions", orjson.dumps({
            "model": "aws/" + model, "messages": HI}), auth_headers())
    assert [r.path for r in mock.requests] == []
    assert raw.status == 400 and raw.json()["error"]["param"] == "model"
