"""Kraken's privacy policy (shared/seeds/000), promise by promise, against a real process.

Promises proven elsewhere: request metadata fields and no content in SQLite or the journal
(tests/gateway/test_chat_completions.py::test_records_hold_no_content), IP-free records,
bcrypt-only key storage (tests/gateway/test_auth.py), TLS (tests/test_app_tls.py),
metrics without content (tests/test_metrics.py).
"""
from __future__ import annotations

import json
import re
import signal

import anyio
import pytest

from harness import (PROMPT_CANARY, PROVIDER_KEY, TEST_KEY, KrakenProcess, auth_headers, db_rows,
                     free_port, http, kraken_mapping, running_mock, write_toml)

pytestmark = pytest.mark.anyio

KEY_SHAPES = re.compile(rb"(sk-[A-Za-z0-9_-]{10,}|kr_(live|test)_[a-z0-9]+_[A-Za-z0-9]{8,}|\$2[aby]\$\d\d\$)")


async def test_no_content_keys_or_hashes_in_logs_db_or_responses_even_at_debug(tmp_path):
    """'We do NOT log, store, or read the content of your prompts or model responses';
    'Kraken API keys are stored as bcrypt hashes — never in plaintext'; 'We do not use cookies'."""
    async with running_mock() as mock:
        port = free_port()
        write_toml(tmp_path / "k.toml", kraken_mapping(tmp_path, mock.port, server={"port": port}))
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log",
                           args=["--log-level", "DEBUG"])
        await anyio.to_thread.run_sync(kp.start)
        replies = []
        try:
            msgs = [{"role": "user", "content": PROMPT_CANARY}]
            for body in (
                {"model": "mock-gpt", "messages": msgs},
                {"model": "mock-gpt", "messages": msgs, "stream": True},
                {"model": "mock-gpt", "messages": msgs, "mock": {"status": 500}},
                {"model": "mock-gpt", "messages": msgs, "stream": True, "mock": {"drop_after_chunks": 2}},
                {"model": PROMPT_CANARY, "messages": msgs},
            ):
                replies.append(await http(port, "POST", "/v1/chat/completions",
                                          json.dumps(body).encode(), auth_headers()))
            replies.append(await http(port, "POST", "/v1/chat/completions",
                                      b'{"model": "' + PROMPT_CANARY.encode() + b'", broken', auth_headers()))
            replies.append(await http(port, "POST", "/v1/chat/completions", b"{}",
                                      {"Authorization": "Bearer " + TEST_KEY[:-2] + "zz"}))
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
        responses = [json.loads(r.body)["choices"][0]["message"]["content"]
                     for r in [mock.responses[0]] if r.status == 200]
    log = (tmp_path / "kraken.log").read_bytes()
    assert b"DEBUG" in log or b"INFO" in log  # the log was written at all
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".toml")
    for blob, where in ((log, "log"), (stored, "database files")):
        assert PROMPT_CANARY.encode() not in blob, where
        for text in responses:
            assert text.encode() not in blob, where
        assert PROVIDER_KEY.encode() not in blob, where
        assert not KEY_SHAPES.search(blob), (where, KEY_SHAPES.search(blob))
    for reply in replies:
        assert "set-cookie" not in reply.headers
        assert TEST_KEY.encode() not in reply.body and PROVIDER_KEY.encode() not in reply.body
    rows = db_rows(tmp_path / "kraken.db")
    assert len(rows) == 6  # every authenticated request, once; the bad key is not a customer's
    assert all(r["model_requested"] in ("mock-gpt", None) for r in rows)
    assert set(rows[0]) == {"ts", "request_id", "customer_id", "model_requested", "model_dispatched",
                            "provider", "prompt_tokens", "completion_tokens", "cached_tokens",
                            "reasoning_tokens", "latency_ms", "ttfb_ms", "task_type", "cost_usd",
                            "kraken_fee_usd", "fallback_used", "error_type", "status",
                            "byok",  # issue 3: the record says whether the customer's key was used
                            "key_id"}  # issue 3: usage per key (the public id only)
