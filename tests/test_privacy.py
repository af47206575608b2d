"""Kraken's privacy policy (shared/seeds/000), promise by promise, against a real process.

Promises proven elsewhere: request metadata fields and no content in SQLite or the journal
(tests/gateway/test_chat_completions.py::test_records_hold_no_content), IP-free records,
bcrypt-only key storage (tests/gateway/test_auth.py), TLS (tests/test_app_tls.py),
metrics without content (tests/test_metrics.py).
"""
from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
from pathlib import Path

import anyio
import pytest
import trustme

import logkit
from adminkit import ADMIN_TOKEN, Admin, admin_doc
from harness import (PROMPT_CANARY, PROVIDER_KEY, TEST_KEY, KrakenProcess, auth_headers, db_rows,
                     free_port, http, kraken_mapping, running_mock, write_toml)
from upstream.h2_server import H2Provider

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


# ---- nothing secret in any log at DEBUG, on every transport ---------------------------------
H2_PROVIDER_KEY = "sk-h2provider-secret-9876543210zyxwvuts"
H2_ANTHROPIC_KEY = "sk-ant-h2provider-secret-5432109876fedcba"
"""Sent as ``x-api-key``, which h2 does not mark sensitive (``authorization`` it does)."""
HEADER_CANARY = "HEADER-CANARY-41d9e0-never-logged"
RESPONSE_CANARY = "RESPONSE-CANARY-c07e55"
"""The TLS h2 provider echoes the request's ``mock.tag`` in the response id."""


def _kraken_cert(ca: trustme.CA, tmp: Path) -> dict[str, str]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(tmp / "kraken.crt")
    leaf.private_key_pem.write_to_path(tmp / "kraken.key")
    return {"cert": str(tmp / "kraken.crt"), "key": str(tmp / "kraken.key")}


def _client_tls(ca: trustme.CA, alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols([alpn])
    return ctx


async def _chat_everywhere(port: int, keys: list[str], tls: dict[str, ssl.SSLContext] | None):
    """Both providers (HTTP/1.1 cleartext, HTTP/2 over TLS), streamed and not, with each key,
    over inbound HTTP/1.1 and HTTP/2 (prior knowledge without ``tls``, ALPN with it)."""
    msgs = [{"role": "user", "content": PROMPT_CANARY}]
    chat = "/v1/chat/completions"
    tls = tls or {}
    for key in keys:
        headers = {"authorization": f"Bearer {key}", "x-canary": HEADER_CANARY}
        for send, ctx in ((logkit.h1_request, tls.get("http/1.1")),
                          (logkit.h2_request, tls.get("h2"))):
            for path, model, stream in ((chat, "mock-gpt", False), (chat, "mock-gpt", True),
                                        (chat, "h2-gpt", False), (chat, "h2-gpt", True),
                                        ("/v1/messages", "h2-claude", False)):
                body = {"model": model, "messages": msgs, "stream": stream, "max_tokens": 16,
                        "mock": {"tag": RESPONSE_CANARY}}
                reply = await send(port, "POST", path, json.dumps(body).encode(), headers, tls=ctx)
                assert reply.status == 200, reply.body
                assert model == "mock-gpt" or RESPONSE_CANARY.encode() in reply.body


async def _malformed(port: int, key: str) -> None:
    """Requests Kraken rejects and logs at DEBUG (the reason, never the bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: k\r\nBad Header: " + HEADER_CANARY.encode()
                 + b"\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    for name, value in (("authorization", f" Bearer {key} "), ("x-canary", f"{HEADER_CANARY}\x00"),
                        ("te", HEADER_CANARY), ("X-Canary", HEADER_CANARY)):
        reply = await logkit.h2_request(port, "POST", "/v1/chat/completions", b"{}",
                                        {name: value}, validate=False)
        assert reply.status in (0, 400), reply


async def test_no_key_header_or_content_in_any_log_at_debug_on_every_transport(tmp_path):
    """At ``[logging] level = "debug"`` the process log holds no Kraken key (config or
    database), admin token, provider key, client header value, prompt or response, whichever
    path carried it: inbound HTTP/1.1, h2c, h2 and HTTP/1.1 over TLS, outbound HTTP/1.1 and
    HTTP/2 over TLS, and the admin API. (hpack logs whole header blocks at DEBUG.)"""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    env = {"SSL_CERT_FILE": str(tmp_path / "ca.pem")}  # Kraken trusts the provider's CA
    async with running_mock() as mock, H2Provider(ca) as h2p:
        port, admin_port = free_port(), free_port()
        doc = admin_doc(tmp_path, mock.port, admin_port, server={"port": port},
                        logging={"level": "debug"})
        doc["providers"]["h2ai"] = {"kind": "openai_compatible", "base_url": h2p.url,
                                    "api_key": H2_PROVIDER_KEY, "models": ["h2-gpt"],
                                    "read_timeout_s": 5.0, "connect_timeout_s": 2.0}
        doc["providers"]["h2claude"] = {**doc["providers"]["h2ai"], "kind": "anthropic",
                                        "api_key": H2_ANTHROPIC_KEY, "models": ["h2-claude"]}
        async with logkit.kraken_process(tmp_path, doc, name="clear", env=env):
            admin = Admin(admin_port, tmp_path / "kraken.db")
            customer = await admin.customer()
            created = await admin.ok("POST", "/admin/keys", {"customer_id": customer["id"]}, 201)
            db_key = created["secret"]
            await _chat_everywhere(port, [TEST_KEY, db_key], None)
            await _malformed(port, db_key)
        doc["tls"] = _kraken_cert(ca, tmp_path)
        tls = {alpn: _client_tls(ca, alpn) for alpn in ("h2", "http/1.1")}
        async with logkit.kraken_process(tmp_path, doc, name="tls", env=env, tls=tls["http/1.1"]):
            await _chat_everywhere(port, [TEST_KEY, db_key], tls)
        responses = [json.loads(r.body)["choices"][0]["message"]["content"]
                     for r in [mock.responses[0]] if r.status == 200]
    assert set(h2p.protocols) == {"h2"}  # outbound went over HTTP/2
    assert dict(h2p.requests[0][1])[b"authorization"] == f"Bearer {H2_PROVIDER_KEY}".encode()
    logs = b"".join(p.read_bytes() for p in tmp_path.glob("*.log"))
    assert b'"level":"DEBUG"' in logs  # Kraken's own DEBUG lines are still written
    assert (b"x-api-key", H2_ANTHROPIC_KEY.encode()) in h2p.requests[-1][1]
    secrets = [TEST_KEY, db_key, PROVIDER_KEY, H2_PROVIDER_KEY, H2_ANTHROPIC_KEY, ADMIN_TOKEN,
               HEADER_CANARY, PROMPT_CANARY, RESPONSE_CANARY, *responses]
    assert responses and [s for s in secrets if s.encode() in logs] == []
    assert not KEY_SHAPES.search(logs), KEY_SHAPES.search(logs)


# ---- client addresses: for rate limiting only, gone within the hour --------------------------
async def test_log_lines_name_a_client_by_an_hourly_pseudonym_not_its_address(tmp_path):
    """'IP addresses stored temporarily in Redis for rate limiting; automatically expires after
    1 hour': the process log, kept as long as the journal keeps it, holds no client address.
    A line that names a client (a rejected request at DEBUG, a refused connection) names it by
    a pseudonym, the same for every line of the hour."""
    source = "127.0.0.9"
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port, "max_connections_per_ip": 2},
                             logging={"level": "debug"})
        async with logkit.kraken_process(tmp_path, doc, name="ips"):
            first = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            first[1].write(b"GET / HTTP/1.1\r\nHost: k\r\nBad Header: x\r\n\r\n")
            assert (await first[0].read()).startswith(b"HTTP/1.1 400 ")  # logged at DEBUG
            first[1].close()
            held = [await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                    for _ in range(2)]
            refused = await http(port, "GET", "/readyz", source=source)
            assert refused.status == 503  # the third connection: over max_connections_per_ip
            for _, writer in held:
                writer.close()
    log = b"".join(p.read_bytes() for p in tmp_path.glob("ips.*.log"))
    lines = [line for line in log.splitlines() if b"client-" in line]
    assert any(b"rejected request" in line for line in lines), log[-2000:]
    assert any(b"max_connections_per_ip" in line for line in lines), log[-2000:]
    assert source.encode() not in log
    tags = {re.search(rb"client-[0-9a-f]{12}", line).group() for line in lines}
    assert len(tags) == 1  # one client, one name within the hour
