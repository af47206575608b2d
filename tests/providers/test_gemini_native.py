"""Gemini's native API through Kraken, against a local mock that speaks Google's wire format.

The caller's Kraken key may come as ``x-goog-api-key``, ``Authorization: Bearer`` or ``?key=``;
Kraken's provider key travels only in ``x-goog-api-key``: never in a URL the provider sees, and
the caller's ``key=`` is never forwarded or logged.
"""
from __future__ import annotations

import json
import signal

import anyio
import openai
import pytest
from harness import (
    PROMPT_CANARY,
    TEST_KEY,
    KrakenProcess,
    free_port,
    http,
    kraken_mapping,
    running_kraken,
    wait_rows,
    write_toml,
)

from kraken.mock.gemini_mock import MockGemini

pytestmark = pytest.mark.anyio

GEMINI_KEY = "AIzaSyKrakenTestProviderKey0123456789ab"
MODEL = "gemini-2.0-flash"
GEN = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT_CANARY}]}],
                   "generationConfig": {"temperature": 0.2}}, indent=1).encode()


def doc(tmp_path, mock_port: int, openai_port: int | None = None, **server):
    d = kraken_mapping(tmp_path, openai_port or free_port(), **({"server": server} if server else {}))
    d["providers"] = {
        "gem": {"kind": "gemini", "base_url": f"http://127.0.0.1:{mock_port}/v1beta/openai",
                "api_key": GEMINI_KEY, "models": [MODEL], "read_timeout_s": 5.0,
                "connect_timeout_s": 2.0},
        **({"mockai": d["providers"]["mockai"]} if openai_port else {}),
    }
    return d


def body(**mock) -> bytes:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "mock": mock}).encode()


@pytest.fixture
async def gem(tmp_path):
    async with MockGemini(api_key=GEMINI_KEY) as mock, running_kraken(doc(tmp_path, mock.port)) as k:
        yield mock, k


def goog(key: str = TEST_KEY) -> dict[str, str]:
    return {"x-goog-api-key": key, "content-type": "application/json"}


async def test_generate_content_relayed_byte_for_byte_with_usage_metadata(gem):
    mock, k = gem
    sent = json.dumps({"contents": [{"parts": [{"text": PROMPT_CANARY}]}],
                       "mock": {"cached_tokens": 4, "thoughts_tokens": 7}}).encode()
    reply = await http(k.port, "POST", GEN, sent, goog())
    assert reply.status == 200
    assert reply.body == mock.responses[-1][1], "Google's bytes, unchanged"
    assert reply.json()["usageMetadata"]["thoughtsTokenCount"] == 7
    upstream = mock.requests[-1]
    assert upstream.request_line == f"POST {GEN}"
    assert upstream.header(b"x-goog-api-key") == GEMINI_KEY.encode()
    assert upstream.body == sent, "the request body is forwarded untouched"
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["request_id"] == reply.headers["x-request-id"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"],
            row["reasoning_tokens"]) == (12, 5 + 7, 4, 7)
    assert row["provider"] == "gem" and row["model_requested"] == MODEL
    assert row["model_dispatched"] == MODEL and row["status"] == 200
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["task_type"]


async def test_sse_stream_is_byte_identical_and_key_query_not_forwarded(gem):
    mock, k = gem
    reply = await http(k.port, "POST", f"{STREAM}?alt=sse&key={TEST_KEY}", BODY,
                       {"content-type": "application/json"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    assert reply.body == mock.responses[-1][1]
    assert reply.body.count(b"\r\n\r\n") == 5 and reply.body.startswith(b"data: {")
    upstream = mock.requests[-1]
    assert upstream.request_line == f"POST {STREAM}?alt=sse", "only alt=sse; the client's key= stays"
    assert upstream.header(b"x-goog-api-key") == GEMINI_KEY.encode()
    row = (await wait_rows(k.db_path, 1))[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["ttfb_ms"] is not None and row["status"] == 200


async def test_stream_without_alt_sse_is_a_json_array_relayed_as_is(gem):
    mock, k = gem
    reply = await http(k.port, "POST", STREAM, body(chunks=3, thoughts_tokens=2), goog())
    assert reply.status == 200 and reply.body == mock.responses[-1][1]
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in reply.json()] == [1, 2, 3]
    assert mock.requests[-1].request_line == f"POST {STREAM}"
    row = (await wait_rows(k.db_path, 1))[0]
    assert (row["completion_tokens"], row["reasoning_tokens"]) == (3 + 2, 2)


async def test_task_type_from_the_last_user_parts(gem):
    _, k = gem
    ask = {"contents": [{"role": "user", "parts": [{"text": "Bonjour"}]},
                        {"role": "model", "parts": [{"text": "Hello"}]},
                        {"role": "user", "parts": [{"text": "Translate into French: good morning"}]}]}
    assert (await http(k.port, "POST", GEN, json.dumps(ask).encode(), goog())).status == 200
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["task_type"] == "translation"


async def test_bearer_is_accepted_as_the_kraken_key(gem):
    mock, k = gem
    reply = await http(k.port, "POST", GEN, BODY, {"authorization": f"Bearer {TEST_KEY}"})
    assert reply.status == 200
    assert mock.requests[-1].header(b"authorization") is None


@pytest.mark.parametrize("headers,target", [
    ({}, GEN),
    ({"x-goog-api-key": TEST_KEY[:-3] + "zzz"}, GEN),
    ({}, GEN + "?key=" + TEST_KEY[:-3] + "zzz"),
    ({"x-goog-api-key": GEMINI_KEY}, GEN),
    ({}, GEN + "?" + "&".join(f"f{i}=1" for i in range(30)) + "&key=" + TEST_KEY),
])
async def test_bad_or_missing_key_is_401_in_googles_format(gem, headers, target):
    mock, k = gem
    reply = await http(k.port, "POST", target, BODY, headers)
    assert reply.status == 401
    error = reply.json()["error"]
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED" and error["message"]
    assert not mock.requests


@pytest.mark.parametrize("method,target,data,status,code,word", [
    ("POST", f"/v1beta/models/{MODEL}:countTokens", BODY, 404, "NOT_FOUND", "countTokens"),
    ("POST", "/v1beta/models/bad%model:generateContent", BODY, 404, "NOT_FOUND", "model"),
    ("GET", GEN, b"", 405, "INVALID_ARGUMENT", "POST"),
    ("POST", GEN, b'{"contents": []}', 400, "INVALID_ARGUMENT", "contents"),
    ("POST", GEN, b"{not json", 400, "INVALID_ARGUMENT", "JSON"),
    ("POST", "/v1beta/models/gpt-4o:generateContent", BODY, 404, "NOT_FOUND", "gpt-4o"),
])
async def test_errors_name_the_problem_in_googles_format(gem, method, target, data, status, code, word):
    mock, k = gem
    reply = await http(k.port, method, target, data, goog())
    assert reply.status == status
    error = reply.json()["error"]
    assert (error["code"], error["status"]) == (status, code) and word in error["message"]
    assert not mock.requests


async def test_provider_errors_keep_googles_shape(gem):
    mock, k = gem
    reply = await http(k.port, "POST", GEN, body(status=400), goog())
    assert reply.status == 400 and reply.body == mock.responses[-1][1], "Google's own 4xx body"
    reply = await http(k.port, "POST", GEN, body(status=429), goog())
    assert reply.status == 429 and reply.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    reply = await http(k.port, "POST", GEN, body(status=500), goog())
    assert reply.status == 502 and reply.json()["error"]["status"] == "UNAVAILABLE"
    assert GEMINI_KEY.encode() not in reply.body
    rows = await wait_rows(k.db_path, 3)
    assert [r["status"] for r in rows] == [400, 429, 502]


async def test_wrong_provider_key_is_a_gateway_error_not_the_clients(tmp_path):
    async with MockGemini(api_key="AIzaSyDifferentKeyThanConfigured000000000") as mock:
        async with running_kraken(doc(tmp_path, mock.port)) as k:
            reply = await http(k.port, "POST", GEN, BODY, goog())
            assert reply.status == 502 and reply.json()["error"]["status"] == "UNAVAILABLE"
            assert b"API key not valid" not in reply.body


async def test_alias_falls_back_to_the_next_gemini_provider_before_the_first_byte(tmp_path):
    async with MockGemini(api_key="AIzaSyRevokedKey000000000000000000000000") as bad, \
            MockGemini(api_key=GEMINI_KEY) as good:
        d = doc(tmp_path, bad.port)
        d["providers"]["gem2"] = {**d["providers"]["gem"],
                                  "base_url": f"http://127.0.0.1:{good.port}/v1beta/openai"}
        d["models"] = {"gem-fast": ["gem/" + MODEL, "gem2/" + MODEL]}
        async with running_kraken(d) as k:
            target = "/v1beta/models/gem-fast:streamGenerateContent?alt=sse"
            reply = await http(k.port, "POST", target, BODY, goog())
            assert reply.status == 200 and reply.body == good.responses[-1][1]
            assert len(bad.requests) == 1 and good.requests[-1].request_line == f"POST {STREAM}?alt=sse"
            row = (await wait_rows(k.db_path, 1))[0]
            assert row["model_requested"] == "gem-fast" and row["provider"] == "gem2"
            assert row["fallback_used"] == 1 and row["error_type"] == "upstream_error"
            assert row["completion_tokens"] == 5


async def test_stream_cut_after_first_byte_ends_with_a_google_error_event(gem):
    mock, k = gem
    reply = await http(k.port, "POST", STREAM + "?alt=sse", body(chunks=4, drop_after_chunks=2), goog())
    sent = mock.responses[-1][1]
    assert reply.status == 200 and reply.body.startswith(sent) and sent.count(b"\r\n\r\n") == 2
    tail = reply.body[len(sent):]
    assert tail.startswith(b"data: ") and json.loads(tail[6:])["error"]["code"] == 502
    row = (await wait_rows(k.db_path, 1))[0]
    assert row["error_type"] is not None


async def test_gemini_models_listed_beside_others(tmp_path):
    from harness import running_mock

    async with MockGemini(api_key=GEMINI_KEY) as mock, running_mock() as oai:
        async with running_kraken(doc(tmp_path, mock.port, oai.port)) as k:
            client = openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=TEST_KEY, max_retries=0)
            ids = {m.id: m.owned_by async for m in client.models.list()}
            assert ids[MODEL] == "gem" and ids["mock-gpt"] == "mockai"
            # an OpenAI-family model is not reachable through the Gemini API
            reply = await http(k.port, "POST", "/v1beta/models/mock-gpt:generateContent", BODY, goog())
            assert reply.status == 404 and not mock.requests and not oai.requests


async def test_keys_never_in_a_url_or_the_log_of_a_real_process(tmp_path):
    async with MockGemini(api_key=GEMINI_KEY) as mock:
        port = free_port()
        write_toml(tmp_path / "k.toml", doc(tmp_path, mock.port, port=port))
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log",
                           args=["--log-level", "DEBUG"])
        await anyio.to_thread.run_sync(kp.start)
        try:
            for target in (f"{GEN}?key={TEST_KEY}", f"{STREAM}?alt=sse&key={TEST_KEY}",
                           f"{STREAM}?key={TEST_KEY}&alt=sse", f"{GEN}?key={TEST_KEY[:-2]}zz"):
                await http(port, "POST", target, BODY, {"content-type": "application/json"})
            await http(port, "POST", GEN, body(status=500), goog())
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
    assert len(mock.requests) == 4
    for req in mock.requests:
        assert "key=" not in req.request_line and GEMINI_KEY not in req.request_line
        assert TEST_KEY.encode() not in req.body and req.header(b"x-goog-api-key") == GEMINI_KEY.encode()
    log = (tmp_path / "kraken.log").read_bytes()
    assert log, "the process logged something"
    for secret in (TEST_KEY, TEST_KEY[:-2], GEMINI_KEY, PROMPT_CANARY):
        assert secret.encode() not in log
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".toml")
    assert GEMINI_KEY.encode() not in stored and TEST_KEY.encode() not in stored
