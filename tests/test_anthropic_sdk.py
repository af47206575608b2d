"""The README's promise, end to end: a real ``kraken serve --demo`` process, and the real
``anthropic`` and ``openai`` SDKs (synchronous clients, unmodified, only ``base_url`` changed)
talking to Claude through it. The demo's Anthropic provider is Kraken's built-in local mock."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import anthropic
import openai
import pytest
from harness import free_port, write_toml

from kraken.config import DEMO_KEY


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``python -m kraken serve --config X --demo`` on a free loopback port, until ready."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    path = tmp / "kraken.toml"
    write_toml(path, {"server": {"host": "127.0.0.1", "port": port},
                      "store": {"path": str(tmp / "kraken.db")},
                      "meter": {"flush_interval_ms": 20}})
    with open(tmp / "kraken.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kraken", "serve", "--config", str(path), "--demo"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while not _ready(port):
            assert proc.poll() is None, (tmp / "kraken.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "kraken did not become ready"
            time.sleep(0.05)
        yield port, tmp / "kraken.db"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def claude_rows(db, request_ids: set[str]) -> list[dict]:
    """The records of these requests, waited for (bounded): they are written in batches."""
    deadline = time.monotonic() + 10
    while True:
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        try:
            found = [dict(r) for r in conn.execute("SELECT * FROM requests")
                     if r["request_id"] in request_ids]
        finally:
            conn.close()
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_anthropic_sdk_messages_and_stream(demo):
    port, db = demo
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=DEMO_KEY,
                                 max_retries=0)
    raw = client.messages.with_raw_response.create(model="mock-claude", max_tokens=64,
                                                   messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert message.type == "message" and message.content[0].text.startswith("tok0 tok1")
    with client.messages.stream(model="mock-claude", max_tokens=4096,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("tok0 tok1")
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].signature
    assert final.usage.output_tokens > 0
    (row,) = claude_rows(db, {raw.headers["x-request-id"]})
    assert (row["provider"], row["model_dispatched"], row["status"]) == ("mock-claude", "mock-claude", 200)
    # demo price: $3 input, $15 output per million tokens
    assert row["cost_usd"] == pytest.approx((12 * 3 + 20 * 15) / 1e6)


def test_openai_sdk_reaches_claude_through_translation(demo):
    port, _ = demo
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=DEMO_KEY,
                           max_retries=0)
    done = client.chat.completions.create(model="mock-claude",
                                          messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content.startswith("tok0 tok1")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    stream = client.chat.completions.create(model="mock-claude", stream=True, tools=tools,
                                            messages=[{"role": "user", "content": "find x"}])
    calls = [tc for chunk in stream for tc in (chunk.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "lookup"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"q": "tok0"}
