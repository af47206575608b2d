"""Structured request logs (kraken/logs.py) from a real Kraken process.

One JSON line per admitted request on stdout with metadata only; sampling drops successes,
never failures; nothing in any log line holds prompt or response content, a Kraken key, a
provider key or a bcrypt hash, even at DEBUG.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from harness import (PROMPT_CANARY, PROVIDER_KEY, TEST_KEY, TEST_KEY_HASH, auth_headers, free_port,
                     http, kraken_mapping, running_mock, wait_for, write_toml)
from kraken.gateway.keys import generate_key, hash_key
from kraken.logs import REQUEST_FIELDS


async def raw_connect(port: int):
    import asyncio

    return await asyncio.open_connection("127.0.0.1", port)

pytestmark = pytest.mark.anyio

KEY_SHAPES = re.compile(rb"(kr_(live|test)_[a-z0-9]+_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{10,}"
                        rb"|\$2[aby]\$\d\d\$)")
LIMITED_KEY = generate_key("limited", env="test")
LIMITED_HASH = hash_key(LIMITED_KEY, rounds=4)


@contextlib.asynccontextmanager
async def kraken_process(tmp: Path, doc: dict, args: tuple[str, ...] = ()):
    """``python -m kraken serve`` with stdout and stderr captured apart; SIGTERM on exit."""
    write_toml(tmp / "k.toml", doc)
    out, err = open(tmp / "stdout.log", "wb"), open(tmp / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kraken", *args, "serve", "--config",
                             str(tmp / "k.toml")], stdout=out, stderr=err,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out.close()
    err.close()
    port = doc["server"]["port"]

    async def ready() -> bool:
        assert proc.poll() is None, (tmp / "stderr.log").read_text()
        with contextlib.suppress(OSError):
            return (await http(port, "GET", "/readyz")).status == 200
        return False

    try:
        with anyio.fail_after(20):
            while not await ready():
                await anyio.sleep(0.05)
        yield port
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def request_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict) and line.get("msg") == "request":
                lines.append(line)
    return lines


def chat(model: str = "mock-gpt", **extra) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT_CANARY}],
                       **extra}).encode()


async def test_one_metadata_line_per_request_and_no_secrets_anywhere_at_debug(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port})
        doc["keys"].append({"id": "limited", "hash": LIMITED_HASH, "customer_id": "cust_2", "rpm": 1})
        sent: list[tuple[int, dict]] = []
        async with kraken_process(tmp_path, doc, ("--log-level", "DEBUG")) as port:
            for body, key, want in (
                (chat(), TEST_KEY, 200),
                (chat(stream=True, mock={"chunks": 300}), TEST_KEY, 200),
                (chat(mock={"status": 500}), TEST_KEY, 502),
                (chat(stream=True, mock={"drop_after_chunks": 2}), TEST_KEY, 200),
                (chat(model=PROMPT_CANARY), TEST_KEY, 404),
                (b'{"model": "' + PROMPT_CANARY.encode() + b'", broken', TEST_KEY, 400),
                (chat(), LIMITED_KEY, 200),
                (chat(), LIMITED_KEY, 429),
            ):
                reply = await http(port, "POST", "/v1/chat/completions", body, auth_headers(key))
                assert reply.status == want, reply.body
                sent.append((want, reply.headers))
            bad = await http(port, "POST", "/v1/chat/completions", chat(),
                             auth_headers(TEST_KEY[:-2] + "zz"))
            assert bad.status == 401
            # A malformed request head is logged at DEBUG (with the peer, never the bytes).
            reader, writer = await raw_connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: k\r\nBad Header: " + PROMPT_CANARY.encode()
                         + b"\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
            writer.close()
            # Lines are written when the record is pushed, after the response ended.
            await wait_for(lambda: len(request_lines(tmp_path / "stdout.log")) >= len(sent))
        responses = [json.loads(r.body)["choices"][0]["message"]["content"]
                     for r in list(mock.responses)[:1] if r.status == 200]
    lines = request_lines(tmp_path / "stdout.log")
    assert request_lines(tmp_path / "stderr.log") == []  # request lines go to stdout only
    assert len(lines) == len(sent)  # admitted requests only; the unknown key has no customer
    by_id = {line["request_id"]: line for line in lines}
    for status, headers in sent:
        line = by_id[headers["x-request-id"]]
        assert set(line) == set(REQUEST_FIELDS)
        assert line["status"] == status
        assert line["level"] == ("INFO" if status == 200 and not line["error_type"] else "WARNING")
    ok = by_id[sent[0][1]["x-request-id"]]
    assert ok["customer_id"] == "cust_1" and ok["provider"] == "mockai" and ok["model"] == "mock-gpt"
    assert ok["latency_ms"] >= ok["ttfb_ms"] > 0 and ok["error_type"] is None
    assert by_id[sent[2][1]["x-request-id"]]["error_type"] is not None
    assert by_id[sent[7][1]["x-request-id"]]["customer_id"] == "cust_2"
    everything = b"".join(p.read_bytes() for p in (tmp_path / "stdout.log", tmp_path / "stderr.log"))
    assert b'"level":"DEBUG"' in everything  # the process logged at DEBUG
    stream_id = sent[1][1]["x-request-id"].encode()
    ours = [line for line in everything.splitlines()
            if stream_id in line and b'"logger":"aiosqlite"' not in line]  # aiosqlite: the batch INSERT
    assert len(ours) == 1  # 300 chunks, one line: nothing per chunk
    assert PROMPT_CANARY.encode() not in everything
    assert responses and all(text.encode() not in everything for text in responses)
    assert PROVIDER_KEY.encode() not in everything and TEST_KEY_HASH.encode() not in everything
    assert not KEY_SHAPES.search(everything), KEY_SHAPES.search(everything)


async def test_sampling_drops_successes_but_keeps_every_failure(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port},
                             logging={"sampling": 0.0})
        async with kraken_process(tmp_path, doc) as port:
            for _ in range(5):
                assert (await http(port, "POST", "/v1/chat/completions", chat(),
                                   auth_headers())).status == 200
            failed = await http(port, "POST", "/v1/chat/completions", chat(mock={"status": 503}),
                                auth_headers())
            assert failed.status == 502
            await wait_for(lambda: request_lines(tmp_path / "stdout.log"))
        process_log = (tmp_path / "stderr.log").read_text().splitlines()
    lines = request_lines(tmp_path / "stdout.log")
    assert [line["request_id"] for line in lines] == [failed.headers["x-request-id"]]
    assert lines[0]["level"] == "WARNING" and lines[0]["status"] == 502
    # format = "json" (the default) makes the process's own messages JSON lines too.
    assert process_log and all(json.loads(line)["logger"].startswith("kraken") for line in process_log)


async def test_level_warning_logs_only_failures_and_text_format_is_key_value(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port},
                             logging={"level": "warning", "format": "text"})
        async with kraken_process(tmp_path, doc) as port:
            ok = await http(port, "POST", "/v1/chat/completions", chat(), auth_headers())
            failed = await http(port, "POST", "/v1/chat/completions", chat(mock={"status": 500}),
                                auth_headers())
            await wait_for(lambda: b"request_id=" in (tmp_path / "stdout.log").read_bytes())
    out = (tmp_path / "stdout.log").read_text().splitlines()
    assert ok.headers["x-request-id"] not in "".join(out)
    assert len(out) == 1 and f"request_id={failed.headers['x-request-id']}" in out[0]
    assert "level=WARNING" in out[0] and "status=502" in out[0] and "customer_id=cust_1" in out[0]
