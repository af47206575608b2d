"""Non-streamed answers of any size are billed: a real Kraken process relays 6 MB non-ASCII and
10 MB ASCII answers (OpenAI chat, Anthropic messages) byte for byte and records their tokens
and cost, reading usage from bounded windows of the body (never the whole body)."""
from __future__ import annotations

import contextlib
import json
import signal
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from harness import (PROVIDER_KEY, TEST_KEY, KrakenProcess, auth_headers, db_rows, free_port, http,
                     kraken_mapping, running_mock, wait_for, write_toml)
from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

NON_ASCII = "Grüße 🌊 世界 — naïve café ✓ "
SIX_MB_NON_ASCII = NON_ASCII * (6_000_000 // len(NON_ASCII.encode()))
TEN_MB_ASCII = "tok " * 2_500_000
ANSWERS = [("6 MB non-ASCII", SIX_MB_NON_ASCII), ("10 MB ASCII", TEN_MB_ASCII)]
OPENAI_PRICE = {"input": 1.0, "output": 2.0}
CLAUDE_PRICE = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}


@contextlib.asynccontextmanager
async def kraken_process(tmp: Path, doc: dict):
    port = free_port()
    doc["server"] = {**doc["server"], "port": port, "max_body_bytes": 24 * 1024 * 1024}
    write_toml(tmp / "k.toml", doc)
    kp = KrakenProcess(tmp / "k.toml", port, tmp / "kraken.log")
    await anyio.to_thread.run_sync(kp.start)
    try:
        yield port
        kp.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(kp.wait) == 0
    finally:
        kp.kill()


def cost(price: dict, prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal(str(price["input"])) + completion * Decimal(str(price["output"]))) / 10**6


async def test_large_openai_answers_are_relayed_exactly_and_billed(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port)
        doc["prices"] = {"openai_compatible": {"mock-gpt": OPENAI_PRICE}}
        async with kraken_process(tmp_path, doc) as port:
            for i, (_, text) in enumerate(ANSWERS):
                usage = {"prompt_tokens": 1000 + i, "completion_tokens": 700_000 + i}
                body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                        "mock": {"content": text, "usage": usage}}
                r = await http(port, "POST", "/v1/chat/completions",
                               json.dumps(body, ensure_ascii=False).encode(), auth_headers(),
                               timeout=60)
                assert r.status == 200
                assert r.body == mock.responses[-1].body  # byte-exact, not re-encoded
            rows = await wait_for(lambda: rows if len(rows := db_rows(tmp_path / "kraken.db")) >= 2
                                  else None)
    for i, ((what, _), row) in enumerate(zip(ANSWERS, rows)):
        assert (row["prompt_tokens"], row["completion_tokens"]) == (1000 + i, 700_000 + i), what
        assert Decimal(str(row["cost_usd"])) == pytest.approx(
            cost(OPENAI_PRICE, 1000 + i, 700_000 + i)), what


async def test_large_anthropic_messages_are_relayed_exactly_and_billed(tmp_path):
    async with MockAnthropic(api_key=PROVIDER_KEY) as mock:
        doc = kraken_mapping(tmp_path, 9)
        doc["providers"]["claude"] = {
            "kind": "anthropic", "base_url": mock.url, "api_key": PROVIDER_KEY,
            "models": ["claude-test"], "read_timeout_s": 5.0, "connect_timeout_s": 2.0}
        doc["prices"] = {"anthropic": {"claude-test": CLAUDE_PRICE}}
        async with kraken_process(tmp_path, doc) as port:
            for i, (_, text) in enumerate(ANSWERS):
                usage = {"input_tokens": 1000 + i, "output_tokens": 700_000 + i}
                body = {"model": "claude-test", "max_tokens": 1_000_000,
                        "messages": [{"role": "user", "content": "hi"}],
                        "mock": {"content": text, "usage": usage}}
                r = await http(port, "POST", "/v1/messages",
                               json.dumps(body, ensure_ascii=False).encode(),
                               {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
                               timeout=60)
                assert r.status == 200
                assert r.body == mock.responses[-1].body
            rows = await wait_for(lambda: rows if len(rows := db_rows(tmp_path / "kraken.db")) >= 2
                                  else None)
    for i, ((what, _), row) in enumerate(zip(ANSWERS, rows)):
        assert (row["prompt_tokens"], row["completion_tokens"]) == (1000 + i, 700_000 + i), what
        assert Decimal(str(row["cost_usd"])) == pytest.approx(
            cost(CLAUDE_PRICE, 1000 + i, 700_000 + i)), what
