"""Structured request logs (kraken/logs.py) from a real Kraken process.

One JSON line per admitted request on stdout with metadata only; sampling drops successes,
never failures; nothing in any log line holds prompt or response content, a Kraken key, a
provider key or a bcrypt hash, even at DEBUG.
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from harness import (PROMPT_CANARY, PROVIDER_KEY, TEST_KEY, TEST_KEY_HASH, auth_headers, free_port,
                     http, kraken_mapping, running_mock, wait_for)
from kraken.accounts.keys import generate_key, hash_key
from kraken.gateway.request_log import REQUEST_FIELDS
from logkit import kraken_process


async def raw_connect(port: int):
    import asyncio

    return await asyncio.open_connection("127.0.0.1", port)

pytestmark = pytest.mark.anyio

KEY_SHAPES = re.compile(rb"(kr_(live|test)_[a-z0-9]+_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{10,}"
                        rb"|\$2[aby]\$\d\d\$)")
LIMITED_KEY = generate_key("limited", env="test")
LIMITED_HASH = hash_key(LIMITED_KEY, rounds=4)
STDOUT, STDERR = "k.stdout.log", "k.stderr.log"


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
            await wait_for(lambda: len(request_lines(tmp_path / STDOUT)) >= len(sent))
        responses = [json.loads(r.body)["choices"][0]["message"]["content"]
                     for r in list(mock.responses)[:1] if r.status == 200]
    lines = request_lines(tmp_path / STDOUT)
    assert request_lines(tmp_path / STDERR) == []  # request lines go to stdout only
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
    everything = b"".join(p.read_bytes() for p in (tmp_path / STDOUT, tmp_path / STDERR))
    assert b'"level":"DEBUG"' in everything  # the process logged at DEBUG
    stream_id = sent[1][1]["x-request-id"].encode()
    ours = [line for line in everything.splitlines() if stream_id in line]
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
            await wait_for(lambda: request_lines(tmp_path / STDOUT))
        process_log = (tmp_path / STDERR).read_text().splitlines()
    lines = request_lines(tmp_path / STDOUT)
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
            await wait_for(lambda: b"request_id=" in (tmp_path / STDOUT).read_bytes())
    out = (tmp_path / STDOUT).read_text().splitlines()
    assert ok.headers["x-request-id"] not in "".join(out)
    assert len(out) == 1 and f"request_id={failed.headers['x-request-id']}" in out[0]
    assert "level=WARNING" in out[0] and "status=502" in out[0] and "customer_id=cust_1" in out[0]


FORGED = "2026-01-01 INFO kraken forged status=200 customer_id=victim"
TEXT_PAIR = re.compile(r'([a-z_]+)=("(?:\\.|[^"\\])*"|[^ "]*)')


def text_pairs(line: str) -> list[tuple[str, str]]:
    """The key=value pairs of a text request line; the whole line must be made of them."""
    pairs = [(m.group(1), m.group(2)) for m in TEXT_PAIR.finditer(line)]
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line
    return pairs


async def test_text_format_escapes_client_text_so_no_line_or_pair_can_be_forged(tmp_path):
    """A model name is client text (``provider/<anything>``): in ``format = "text"`` a line
    break, a quote or a control character in it stays inside its one quoted value."""
    models = [f"mockai/x\n{FORGED}", f"mockai/x\r\n{FORGED}", f"mockai/x\u2028{FORGED}\x1b[2K",
              f'mockai/x" status=200 customer_id="victim', f"mockai/x\\\" {FORGED}",
              "mockai/" + "y" * 5000]
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"port": free_port()},
                             logging={"format": "text", "level": "debug"})
        async with kraken_process(tmp_path, doc) as port:
            replies = [await http(port, "POST", "/v1/chat/completions", chat(model=model),
                                  {**auth_headers(), "x-request-id": f"x\t{FORGED}"})
                       for model in models]
            await wait_for(lambda: (tmp_path / STDOUT).read_bytes().count(b"request_id=")
                           >= len(models))
    lines = (tmp_path / STDOUT).read_text().splitlines()  # splits at \r, \u2028, \x1c.. too
    assert len(lines) == len(models)
    keys = [k for k in REQUEST_FIELDS if k not in ("ts", "msg")]
    by_id = {}
    for line in lines:
        pairs = text_pairs(line)
        assert [k for k, _ in pairs] == keys
        by_id[dict(pairs)["request_id"]] = dict(pairs)
        assert len(line) < 600  # the 5000-character model is cut
    for reply in replies:
        fields = by_id[reply.headers["x-request-id"]]
        assert fields["customer_id"] == "cust_1" and fields["status"] == str(reply.status)
    # Such names are refused before routing (400, param model), so none reaches the line at all.
    assert all(reply.status == 400 for reply in replies)
    assert all(by_id[r.headers["x-request-id"]]["model"] == "-" for r in replies)
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
    assert all(stamp.match(line) for line in (tmp_path / STDERR).read_text().splitlines())


def test_text_values_keep_client_text_inside_one_quoted_value():
    """Defence in depth behind the model-name bound: any value a line carries is escaped."""
    from kraken.logs import text_value
    assert text_value(f"mockai/x\n{FORGED}") == '"mockai/x\\n' + FORGED + '"'
    assert "\n" not in text_value("a\nb\r\u2028c") and "\r" not in text_value("a\rb")
    assert text_value("gpt-4o-mini") == "gpt-4o-mini"


async def test_an_unknown_http2_pseudo_header_name_reaches_no_log_line(tmp_path):
    """A malformed HTTP/2 request is reset (RST_STREAM PROTOCOL_ERROR) with its reason kept in
    the h2 event, never logged: a long unknown pseudo-header name (client text) is in no line,
    even at DEBUG, while the DEBUG rejection line of another stream shows the level is on."""
    import asyncio

    import h2.config
    import h2.connection
    import h2.events

    name = b":x-" + PROMPT_CANARY.encode() + b"-" + b"n" * 4000
    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost")]
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"port": free_port()},
                             logging={"format": "text", "level": "debug"})
        async with kraken_process(tmp_path, doc) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding=None, validate_outbound_headers=False,
                normalize_outbound_headers=False))
            conn.initiate_connection()
            conn.send_headers(1, base + [(b":path", b"/v1/models"), (name, b"v")],
                              end_stream=True)
            conn.send_headers(3, base + [(b":path", b"/" + b"p" * 9000)], end_stream=True)
            writer.write(conn.data_to_send())
            ends: dict[int, object] = {}
            async with asyncio.timeout(10):
                while len(ends) < 2:
                    data = await reader.read(65536)
                    assert data, "connection closed"
                    for event in conn.receive_data(data):
                        if isinstance(event, (h2.events.StreamReset, h2.events.ResponseReceived)):
                            ends[event.stream_id] = event
                    writer.write(conn.data_to_send())
            writer.close()
            await wait_for(lambda: b"414" in (tmp_path / STDERR).read_bytes())
    assert isinstance(ends[1], h2.events.StreamReset) and ends[1].error_code == 1
    logs = (tmp_path / STDERR).read_text() + (tmp_path / STDOUT).read_text()
    assert "rejected stream 3" in logs and " DEBUG " in logs
    assert PROMPT_CANARY not in logs and "nnnnnnnn" not in logs


def test_a_client_pseudonym_holds_for_its_hour_and_cannot_be_followed_past_it():
    """``ClientPseudonyms``: one address, one name within a period; a new random key each
    period, so the names of two periods do not match (nor do two addresses' names)."""
    from kraken.logs import ClientPseudonyms

    now = [7200.0]
    tag = ClientPseudonyms(period_s=3600, clock=lambda: now[0])
    first = tag("203.0.113.7")
    assert re.fullmatch(r"client-[0-9a-f]{12}", first) and "203.0.113" not in first
    now[0] += 3599
    assert tag("203.0.113.7") == first
    assert tag("203.0.113.8") != first
    now[0] += 1  # the next hour: a new key
    assert tag("203.0.113.7") != first
