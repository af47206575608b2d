"""A burst of wrong keys from one address against a real ``kraken serve`` process: bcrypt runs at
most ``[limits] ip_auth_failures`` times (attempts in flight count, not only finished failures),
the rest get 429 with Retry-After, and a client at another address (the socket bound to
127.0.0.2; Linux routes all of 127/8 to loopback) still authenticates a valid, uncached
database key meanwhile. With the in-memory limiter and with Redis (a real redis-server)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest

from authkit import chat_from, metric
from harness import kraken_process, running_mock
from kraken.accounts import service
from kraken.accounts.keys import generate_key, hash_key
from kraken.store.sqlite import SqliteStore
from redis_server import redis_server

pytestmark = pytest.mark.anyio

LIMIT = 3
FLOOD = 150
SLOW_KEY = generate_key("floodkey", env="test")
SLOW_HASH = hash_key(SLOW_KEY)
"""Default cost 12 (~0.25 s a run, as in production): a flood outlasts the first failures."""
SALT = "a-test-salt-of-32-bytes-exactly!"
NEIGHBOUR_TIMEOUT_S = 20.0
"""Generous for three queued cost-12 runs; an overrun pool queues 64 of them (~16 s) or 503s."""


def wrong_secret(n: int) -> str:
    """A well-formed key for the configured id, each with its own wrong secret (no shared run)."""
    prefix, _, secret = SLOW_KEY.rpartition("_")
    return f"{prefix}_{'x' * (len(secret) - 8)}{n:08d}"


async def db_key(db: Path) -> str:
    store = await SqliteStore.open(str(db))
    try:
        cus = await service.create_customer(store, "neighbour@example.com", "Neighbour")
        return (await service.create_key(store, cus.id)).plaintext  # cost 12, never used yet
    finally:
        await store.close()


def flood_target(tmp: Path, mock_port: int, **limits: Any):
    """Kraken with one bcrypt thread, ``LIMIT`` auth failures per address, and a slow key."""
    return kraken_process(tmp, mock_port, ({"id": "floodkey", "hash": SLOW_HASH,
                                            "customer_id": "cust_flood"},),
                          auth={"bcrypt_threads": 1},
                          limits={"ip_auth_failures": LIMIT, **limits})


async def flood_with_a_neighbour(port: int, neighbour_key: str) -> None:
    runs_before = await metric(port, "kraken_bcrypt_runs_total")
    miss_before = await metric(port, "kraken_auth_cache_total", {"outcome": "miss"})
    failures_before = await metric(port, "kraken_auth_failures_total")
    flood = [asyncio.create_task(chat_from(port, wrong_secret(n))) for n in range(FLOOD)]
    # The neighbour asks while the flood is being served: once 64 flood keys (a full bcrypt
    # queue for one thread) reached the verifier, or the whole flood was answered.
    with anyio.fail_after(60):
        while not all(t.done() for t in flood):
            miss = await metric(port, "kraken_auth_cache_total", {"outcome": "miss"})
            if miss - miss_before >= 64:
                break
            await asyncio.sleep(0.02)
    neighbour = await chat_from(port, neighbour_key, source="127.0.0.2",
                                timeout=NEIGHBOUR_TIMEOUT_S)
    replies = await asyncio.gather(*flood)

    assert neighbour.status == 200, neighbour.body
    statuses = [r.status for r in replies]
    assert statuses.count(401) <= LIMIT, sorted(set(statuses))
    assert statuses.count(401) + statuses.count(429) == FLOOD, sorted(set(statuses))
    assert all(r.headers["retry-after"].isdigit() for r in replies if r.status == 429)
    runs = await metric(port, "kraken_bcrypt_runs_total") - runs_before
    assert 1 <= runs <= LIMIT + 1  # the flood's, at most the limit, and the neighbour's one
    failures = await metric(port, "kraken_auth_failures_total") - failures_before
    assert failures == statuses.count(401)


async def test_a_burst_of_wrong_keys_runs_bcrypt_at_most_the_limit_memory(tmp_path):
    neighbour_key = await db_key(tmp_path / "kraken.db")
    async with running_mock() as mock, flood_target(tmp_path, mock.port) as kp:
        await flood_with_a_neighbour(kp.port, neighbour_key)


async def test_a_burst_of_wrong_keys_runs_bcrypt_at_most_the_limit_redis(tmp_path):
    neighbour_key = await db_key(tmp_path / "kraken.db")
    with redis_server(tmp_path / "redis") as redis:
        async with running_mock() as mock, flood_target(
                tmp_path, mock.port, backend="redis", redis_url=redis.url, ip_salt=SALT,
                redis_timeout_s=5.0) as kp:  # a loaded machine must not fail open
            await flood_with_a_neighbour(kp.port, neighbour_key)
