"""Deeply nested JSON bodies are the client's error: a real Kraken process answers 400 in each
endpoint's own error format, and logs no traceback, at every depth (a body Kraken could not
re-encode upstream, or that orjson refuses to parse, used to be a 500 with a traceback)."""
from __future__ import annotations

import contextlib
import json
import signal
import uuid

import anyio
import pytest

from adminkit import ADMIN_TOKEN
from harness import (PROVIDER_KEY, TEST_KEY, KrakenProcess, auth_headers, free_port, http,
                     kraken_mapping, running_mock, write_toml)
from kraken.admin.token import hash_token
from kraken.errors import BadRequest
from kraken.gateway.body import MAX_DEPTH, json_object
from kraken.mock.anthropic_mock import MockAnthropic
from kraken.mock.gemini_mock import MockGemini

DEPTHS = (100, 255, 256, 1023, 5000)
ACCEPTED_DEPTH = 100
GEMINI_KEY = "AIzaSyKrakenTestProviderKey0123456789ab"
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"
CLAUDE_HEADERS = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
ENDPOINTS = {
    # path: (JSON fields besides the nested one, headers, the body's own nesting)
    "/v1/chat/completions": (
        '"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]', auth_headers()),
    "/v1/messages": (
        '"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"hi"}]',
        CLAUDE_HEADERS),
    "/v1/embeddings": ('"model":"text-embedding-3-small","input":"hi"', auth_headers()),
    "/v1/responses": ('"model":"mock-gpt","input":"hi"', auth_headers()),
    GEMINI: ('"contents":[{"role":"user","parts":[{"text":"hi"}]}]', {"x-goog-api-key": TEST_KEY}),
}


def nested(fields: str, depth: int) -> bytes:
    """A JSON object whose ``x`` member makes the whole document ``depth`` levels deep."""
    return b"{" + fields.encode() + b',"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def names_the_body(body: bytes) -> bool:
    """Whether the error (OpenAI's, Anthropic's or Google's shape) is about the request body."""
    message = json.loads(body)["error"]["message"].lower()
    return "body" in message or "payload" in message


@contextlib.asynccontextmanager
async def kraken_process(tmp):
    async with contextlib.AsyncExitStack() as stack:
        oai = await stack.enter_async_context(running_mock())
        claude = await stack.enter_async_context(MockAnthropic(api_key=PROVIDER_KEY))
        gem = await stack.enter_async_context(MockGemini(api_key=GEMINI_KEY))
        port, admin_port = free_port(), free_port()
        doc = kraken_mapping(tmp, oai.port, server={"port": port},
                             admin={"port": admin_port, "token_hash": hash_token(ADMIN_TOKEN)})
        doc["providers"]["mockai"].update(  # kind "openai": it serves the Responses API too
            kind="openai", models=["mock-gpt", "text-embedding-3-small"])
        doc["providers"]["claude"] = {
            "kind": "anthropic", "base_url": claude.url, "api_key": PROVIDER_KEY,
            "models": ["claude-test"], "read_timeout_s": 5.0, "connect_timeout_s": 2.0}
        doc["providers"]["gem"] = {
            "kind": "gemini", "base_url": f"http://127.0.0.1:{gem.port}/v1beta/openai",
            "api_key": GEMINI_KEY, "models": ["gemini-2.0-flash"], "read_timeout_s": 5.0,
            "connect_timeout_s": 2.0}
        write_toml(tmp / "k.toml", doc)
        kp = KrakenProcess(tmp / "k.toml", port, tmp / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            yield port, admin_port
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()


def test_nesting_up_to_the_bound_is_accepted_one_level_more_is_refused():
    assert json_object(nested('"a":1', MAX_DEPTH))["a"] == 1
    with pytest.raises(BadRequest, match="nested too deeply"):
        json_object(nested('"a":1', MAX_DEPTH + 1))


def test_brackets_in_strings_and_side_by_side_are_not_depth():
    text = json.dumps("[{" * 5000)
    siblings = ",".join(["[[[]]]"] * 5000)
    payload = json_object(f'{{"t":{text},"s":[{siblings}]}}'.encode())
    assert len(payload["s"]) == 5000


@pytest.mark.anyio
async def test_deep_json_is_a_400_without_traceback_on_every_endpoint(tmp_path):
    seen: dict[tuple[str, int], int] = {}
    async with kraken_process(tmp_path) as (port, admin_port):
        for path, (fields, headers) in ENDPOINTS.items():
            for depth in DEPTHS:
                r = await http(port, "POST", path, nested(fields, depth),
                               {"content-type": "application/json", **headers})
                seen[path, depth] = r.status
                if depth == ACCEPTED_DEPTH:
                    continue
                assert r.status == 400, (path, depth, r.status, r.body[:300])
                assert names_the_body(r.body), (path, depth, r.body)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
        for depth in DEPTHS:
            fields = f'"email":"deep-{uuid.uuid4().hex[:8]}@example.com"'
            r = await http(admin_port, "POST", "/admin/customers",
                           nested(fields, depth).replace(b'"x":', b'"name":'), admin)
            assert r.status == 400, ("admin", depth, r.status, r.body[:300])
            assert json.loads(r.body)["error"]["param"] in ("body", "name"), r.body
    for path in ENDPOINTS:  # what is not too deep is served as before
        assert seen[path, ACCEPTED_DEPTH] == 200, (path, seen)
    log = (tmp_path / "kraken.log").read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log and '"level": "ERROR"' not in log
