"""A client-chosen model name is bounded before it reaches a route, a record, a log line or
a metric label, in a real ``kraken serve`` process: over 256 characters or outside the
characters real provider model names use, it is a 400 naming ``model`` on every endpoint;
valid names the operator did not configure for the provider share the ``other`` label."""
from __future__ import annotations

import asyncio
import json

import anyio
import pytest
from harness import (
    KrakenProcess,
    auth_headers,
    db_rows,
    free_port,
    http,
    kraken_mapping,
    running_mock,
    write_toml,
)

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

MB_NAME = "mockai/" + "x" * (1024 * 1024)
BAD_NAMES = [MB_NAME, "mockai/x\ny", "mockai/x y", "mockai/x\x00", "mockai/é", "mockai/x{y}",
             "mockai/" + "x" * 250]
GOOD_NAMES = ["mockai/llama3.1:8b", "mockai/meta-llama/Llama-3.1-8B-Instruct",
              "mockai/accounts/fireworks/models/llama-v3p1-8b-instruct",
              "mockai/@cf/meta/llama-3.1-8b-instruct", "mockai/claude-3-5-sonnet-v2@20241022",
              "mockai/ft:gpt-4o-mini-2024-07-18:my-org::abc123",
              "mockai/hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
              "mockai/anthropic.claude-3-5-sonnet-20240620-v1:0", "mockai/" + "x" * 249]
DISTINCT = 2000


def chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


ENDPOINTS = {
    "/v1/chat/completions": chat,
    "/v1/embeddings": lambda m: json.dumps({"model": m, "input": "hi"}).encode(),
    "/v1/responses": lambda m: json.dumps({"model": m, "input": "hi"}).encode(),
}


def series(text: str, metric: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(metric + "{")]


async def test_model_names_are_bounded_and_unknown_ones_share_one_metric_label(tmp_path):
    async with running_mock() as mock, MockAnthropic() as claude:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port})
        doc["providers"]["claude"] = {"kind": "anthropic", "base_url": claude.url,
                                      "models": ["claude-test"]}
        doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            refused = []
            for name in BAD_NAMES:
                for path, body in ENDPOINTS.items():
                    refused.append((path, name, await http(port, "POST", path, body(name),
                                                           auth_headers())))
                refused.append(("/v1/messages", name, await http(
                    port, "POST", "/v1/messages",
                    json.dumps({"model": name, "max_tokens": 5,
                                "messages": [{"role": "user", "content": "hi"}]}).encode(),
                    auth_headers())))
            served = [await http(port, "POST", "/v1/chat/completions", chat(name), auth_headers())
                      for name in GOOD_NAMES]
            before = mock.requests[-1].index
            names = iter(f"mockai/x-{i}" for i in range(DISTINCT))

            async def client() -> None:
                for name in names:
                    reply = await http(port, "POST", "/v1/chat/completions", chat(name),
                                       auth_headers())
                    assert reply.status == 200, reply.body

            with anyio.fail_after(300):
                await asyncio.gather(*(client() for _ in range(8)))
            forwarded = mock.requests[-1].index - before  # (the mock keeps the last 1000)
            for name in ("mock-gpt", "mockai/gpt-4o-mini"):  # priced, not configured: other
                assert (await http(port, "POST", "/v1/chat/completions", chat(name),
                                   auth_headers())).status == 200
            text = (await http(port, "GET", "/metrics")).body.decode()
        finally:
            kp.signal(15)
            await anyio.to_thread.run_sync(kp.wait)
    for path, name, reply in refused:
        where = (path, name[:20], reply.body[:200])
        assert reply.status == 400, where
        error = reply.json()["error"]
        if path == "/v1/messages":  # Anthropic's shape has no param: the message names it
            assert reply.json()["type"] == "error" and error["message"].startswith("model:"), where
        else:
            assert error["param"] == "model", where
        assert len(reply.body) < 1000, where  # the name is not echoed back
    assert [r.status for r in served] == [200] * len(GOOD_NAMES)
    assert forwarded == DISTINCT  # valid names were served, not refused
    requests = series(text, "kraken_requests_total")
    assert len(requests) <= 10, requests[:20]
    labels = "\n".join(requests)
    assert 'model="other"' in labels and "x-17" not in labels
    assert 'model="mock-gpt"' in labels and 'model="gpt-4o-mini"' not in labels
    for metric in ("kraken_tokens_total", "kraken_unpriced_requests_total", "kraken_cost_usd_total"):
        assert len(series(text, metric)) <= 10, series(text, metric)[:20]
    assert "x-17" not in text and "xxxxxxxxxx" not in text
    assert len(text) < 200_000
    rows = db_rows(tmp_path / "kraken.db")
    assert max(len(r["model_requested"] or "") for r in rows) <= 256
