"""A provider that turns a request away unprocessed over HTTP/2 (RST_STREAM REFUSED_STREAM, or a
GOAWAY whose last stream id is below it: RFC 9113 §8.7, safe to retry) gets the retry on another
connection, and a connection that sent GOAWAY takes no new stream.

End to end: a real Kraken in front of ``h2_server.H2Provider`` over TLS (a trustme CA that
Kraken's default context trusts through SSL_CERT_FILE), as ``test_h2_upstream`` does.
"""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

import orjson
import pytest

from h2_server import H2Provider
from harness import (Reply, Running, auth_headers, http, kraken_mapping, running_kraken,
                     wait_for, wait_rows)
from test_h2_upstream import CA

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def kraken_over_h2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         **provider: object) -> AsyncIterator[tuple[H2Provider, Running]]:
    ca_file = tmp_path / "ca.pem"
    CA.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # default_ssl_context() trusts it
    async with H2Provider(CA) as h2provider:
        doc = kraken_mapping(tmp_path, h2provider.port)
        doc["providers"]["mockai"].update(base_url=h2provider.url, **provider)
        async with running_kraken(doc) as k:
            yield h2provider, k


async def chat(k: Running, tag: str, **mock: object) -> Reply:
    body = orjson.dumps({"model": "mock-gpt", "stream": True,
                         "messages": [{"role": "user", "content": "hi"}],
                         "stream_options": {"include_usage": True},  # relayed byte for byte
                         "mock": {"tag": tag, **mock}})
    return await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())


async def test_a_refused_stream_is_retried_on_another_connection(tmp_path, monkeypatch):
    """RST_STREAM REFUSED_STREAM: the retry goes out on a new connection, not back onto the
    one that refused it (which may refuse again: it is overloaded or at its stream limit)."""
    async with kraken_over_h2(tmp_path, monkeypatch) as (provider, k):
        assert (await chat(k, "warm")).status == 200  # connection 1
        provider.refuse_streams = 1
        reply = await chat(k, "refused")
        assert reply.status == 200 and reply.body == provider.bodies["refused"]
        assert provider.refused == [("refused", 1)]
        assert provider.answered == [("warm", 1), ("refused", 2)]
        rows = await wait_rows(k.db_path, 2)
    assert len(rows) == 2, "one record per request, the retry included"


async def test_a_stream_above_goaway_is_retried_on_a_new_connection_and_the_old_takes_none(
        tmp_path, monkeypatch):
    """GOAWAY whose last stream id is below the request: the request is retried on a new
    connection, and so is every later one while the first finishes the stream below."""
    async with kraken_over_h2(tmp_path, monkeypatch) as (provider, k):
        below = asyncio.ensure_future(chat(k, "below", chunks=100, chunk_delay_ms=20))  # 2 s
        await wait_for(lambda: provider.answered)
        provider.goaway_streams = 1
        turned = await chat(k, "turned")
        later = await chat(k, "later")
        assert not below.done() and len(provider.open) == 2  # the first still draining
        assert turned.status == later.status == 200
        assert turned.body == provider.bodies["turned"]
        assert provider.refused == [("turned", 1)]
        assert provider.answered == [("below", 1), ("turned", 2), ("later", 2)]
        reply = await below  # below the last stream id: it finishes
        assert reply.status == 200 and reply.body == provider.bodies["below"]


async def test_with_no_other_connection_allowed_the_retry_takes_the_refusing_one(
        tmp_path, monkeypatch):
    """``max_connections = 1``: a retry on the connection that refused beats a 503 for a full
    pool (the provider's refusal may have been momentary)."""
    async with kraken_over_h2(tmp_path, monkeypatch, max_connections=1) as (provider, k):
        assert (await chat(k, "warm")).status == 200
        provider.refuse_streams = 1
        reply = await chat(k, "refused")
        assert reply.status == 200 and reply.body == provider.bodies["refused"]
        assert provider.answered == [("warm", 1), ("refused", 1)]
