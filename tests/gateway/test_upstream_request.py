"""The upstream request is rebuilt from scratch: no client framing or hop-by-hop headers,
the provider key replaces the client's, and a client can never choose the upstream."""
from __future__ import annotations

import json

import pytest

from harness import PROVIDER_KEY, TEST_KEY, auth_headers, http, kraken_mapping, running_kraken, running_mock

pytestmark = pytest.mark.anyio

BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}).encode()


async def test_client_headers_are_not_forwarded(stack):
    mock, k = stack
    headers = {**auth_headers(), "Cookie": "session=abc", "X-Forwarded-Host": "evil.example",
               "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic Zm9v", "TE": "trailers",
               "Upgrade": "h2c", "X-Custom": "1"}
    r = await http(k.port, "POST", "/v1/chat/completions", BODY, headers)
    assert r.status == 200
    upstream = dict(mock.requests[-1].headers)
    assert set(upstream) == {b"host", b"content-type", b"accept", b"user-agent",
                             b"authorization", b"content-length"}
    assert upstream[b"authorization"] == b"Bearer " + PROVIDER_KEY.encode()
    assert upstream[b"host"] == f"127.0.0.1:{mock.port}".encode()
    assert TEST_KEY.encode() not in mock.requests[-1].body


async def test_absolute_form_target_cannot_pick_the_upstream(stack):
    mock, k = stack
    r = await http(k.port, "POST", "http://169.254.169.254/v1/chat/completions", BODY, auth_headers())
    assert r.status == 404
    assert len(mock.requests) == 0


async def test_body_fields_cannot_pick_the_upstream(stack):
    mock, k = stack
    body = json.dumps({"model": "http://127.0.0.1:1/x", "base_url": "http://127.0.0.1:1",
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found"
    assert len(mock.requests) == 0


async def test_upstream_model_name_is_rewritten_from_the_route(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port)
        doc["models"] = {"fast": ["mockai/mock-gpt"]}
        async with running_kraken(doc) as k:
            body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "x"}]}).encode()
            r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
            assert r.status == 200
            assert mock.requests[-1].json()["model"] == "mock-gpt"
