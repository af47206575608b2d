"""Kraken's defaults serve a real deployment: hundreds of concurrent streams arriving through
one address (a load balancer, a TLS terminator, a load client).

Each test runs ``kraken serve`` (a subprocess) with the default limits, changing only
``[limits] trusted_proxies``: a trusted proxy peer is not held to ``max_connections_per_ip``
(256) while any other peer still is, and one API key's slow streams are not capped by the
provider pool's defaults (``max_connections``, ``per_key_share``).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import AsyncIterator

import anyio
import pytest
from harness import (PROVIDER_KEY, TEST_KEY, TEST_KEY_HASH, KrakenProcess, free_port,
                     running_mock, write_toml)

from kraken.http.connlimit import ConnectionLimiter

pytestmark = pytest.mark.anyio

OVER_CAP = 300
"""More connections than the default ``max_connections_per_ip`` (256) and, for streams, more
than the old pool defaults allowed one key (100 connections, half each)."""


@contextlib.asynccontextmanager
async def kraken(tmp_path: Path, mock_port: int, trusted: list[str]) -> AsyncIterator[int]:
    """``kraken serve`` with default [server], [limits] (but ``trusted_proxies``) and pool."""
    port = free_port()
    doc = {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(tmp_path / "kraken.db")},
        "limits": {"trusted_proxies": trusted},
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
        "providers": {"mockai": {
            "kind": "openai_compatible", "base_url": f"http://127.0.0.1:{mock_port}/v1",
            "api_key": PROVIDER_KEY, "models": ["mock-gpt"]}},
    }
    path = tmp_path / "kraken.toml"
    write_toml(path, doc)
    proc = KrakenProcess(path, port, tmp_path / "kraken.log")
    await anyio.to_thread.run_sync(proc.start)
    try:
        yield port
    finally:
        proc.signal(2)  # SIGINT: drain and stop
        try:
            await anyio.to_thread.run_sync(proc.wait, 30.0)
        finally:
            proc.kill()


async def held_connections(port: int, n: int, stack: contextlib.AsyncExitStack) -> list[bytes]:
    """Open ``n`` connections, keep them all open, and ask /healthz on each: the heads."""
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stack.callback(writer.close)
        conns.append((reader, writer))

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b"closed"

    with anyio.fail_after(30):
        return await asyncio.gather(*(ask(r, w) for r, w in conns))


def test_a_trusted_proxy_peer_is_not_counted_and_others_still_are():
    limiter = ConnectionLimiter(1, exempt=["10.0.0.0/8", "2001:db8::1"])
    for _ in range(3):
        assert limiter.acquire(limiter.key_of("10.1.2.3"))
        assert limiter.acquire(limiter.key_of("::ffff:10.1.2.3"))  # dual-stack socket
        assert limiter.acquire(limiter.key_of("2001:db8::1"))
    assert limiter.open_from("10.1.2.3") == 0 and len(limiter) == 0
    assert limiter.acquire(limiter.key_of("192.0.2.1"))
    assert not limiter.acquire(limiter.key_of("192.0.2.1"))
    assert limiter.acquire(limiter.key_of("2001:db8::2"))  # same /64, but not the proxy
    assert not limiter.acquire(limiter.key_of("2001:db8::3"))


async def test_a_trusted_proxy_holds_more_connections_than_the_per_address_cap(tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, ["127.0.0.1"]) as port:
        async with contextlib.AsyncExitStack() as stack:
            heads = await held_connections(port, OVER_CAP, stack)
    assert [h.split(b" ", 2)[1] for h in heads] == [b"200"] * OVER_CAP


async def test_an_untrusted_peer_over_the_default_cap_is_refused(tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, ["::1"]) as port:
        async with contextlib.AsyncExitStack() as stack:
            heads = await held_connections(port, OVER_CAP, stack)
    statuses = sorted(h.split(b" ", 2)[1] for h in heads)
    assert statuses == [b"200"] * 256 + [b"503"] * (OVER_CAP - 256)


async def slow_stream(port: int) -> tuple[int, bytes]:
    """One streamed chat request whose provider takes ~1.6 s (longer than ``pool_wait_s``)."""
    body = json.dumps({"model": "mock-gpt", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}],
                       "mock": {"chunks": 2, "chunk_delay_ms": 400}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
                     b"authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
                     b"content-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        raw = await reader.read(-1)
    finally:
        writer.close()
    return int(raw.split(b" ", 2)[1]), raw


async def test_one_key_streams_hundreds_at_once_on_the_default_pool(tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, ["127.0.0.1"]) as port:
        with anyio.fail_after(60):
            results = await asyncio.gather(*(slow_stream(port) for _ in range(OVER_CAP)))
        refused = [raw[-300:] for status, raw in results if status != 200]
        assert refused == [], f"{len(refused)} refused, e.g. {refused[:1]}"
        assert all(b"data: [DONE]" in raw for _, raw in results)
        assert len(mock.requests) >= OVER_CAP


def test_trusted_proxy_networks_match_as_ipaddress_says():
    """The per-connection test is integer arithmetic; it must agree with ``ipaddress``."""
    import ipaddress
    import random

    nets = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/64", "::ffff:172.16.0.0/108", "0.0.0.0/32"]
    limiter = ConnectionLimiter(1, exempt=nets)
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    v4_of_mapped = ipaddress.ip_network("172.16.0.0/12")
    rng = random.Random(7)
    peers = ["10.255.0.1", "11.0.0.1", "192.0.2.1", "192.0.2.2", "::ffff:10.1.2.3", "2001:db8::9",
             "2001:db8:0:1::9", "172.16.5.5", "::ffff:172.31.255.255", "172.32.0.0", "0.0.0.0",
             "fe80::1%eth0"]
    peers += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(300)]
    peers += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(300)]
    for peer in peers:
        ip = ipaddress.ip_address(peer.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        exempt = any(ip in n for n in parsed) or ip in v4_of_mapped
        assert (limiter.key_of(peer) is None) == exempt, peer
