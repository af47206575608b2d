"""Revocation within 1 s across processes: two real ``kraken serve`` processes share one SQLite
file (as hosts share a database); a key cached by both is revoked with the ``kraken`` CLI and
both refuse it within a second - through the key_events poll, and through Redis pub/sub when
Redis is configured."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import pytest

from harness import running_mock
from keyproc import chat, cli, kraken_process, metric
from kraken.accounts.revocation import CHANNEL
from redis_server import redis_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.anyio

SALT = "revocation-test-salt-0123456789"


async def _both_refuse_within(ports: list[int], key: str, seconds: float = 1.0) -> None:
    """Deadline from the moment the CLI returned (the revocation is committed)."""
    with anyio.fail_after(seconds):
        pending = set(ports)
        while pending:
            for port in list(pending):
                if (await chat(port, key)).status == 401:
                    pending.discard(port)
            if pending:
                await anyio.sleep(0.02)


async def _revoke_across_two_processes(tmp_path: Path, heard: int, redis: str | None = None,
                                       **sections) -> None:
    db = tmp_path / "shared.db"
    async with running_mock() as mock, contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(
            kraken_process(tmp_path, mock.port, name, db=db, **sections)) for name in ("a", "b")]
        cfg = procs[0].config_path
        made = await cli(cfg, "customers", "create", "--email", "ops@example.com", "--json")
        assert made.returncode == 0, made.stderr
        customer = json.loads(made.stdout)[0]["id"]
        created = await cli(cfg, "keys", "create", "--customer", customer, "--rounds", "4",
                            "--json")
        assert created.returncode == 0, created.stderr
        out = json.loads(created.stdout)
        key, key_id = out["secret"], out["key"]["id"]
        for kp in procs * 2:  # verified and cached by both
            reply = await chat(kp.port, key)
            assert reply.status == 200, reply.body
        for kp in procs:
            assert await metric(kp.port, "kraken_auth_cache_total", {"outcome": "hit"}) >= 1
        if redis:  # both subscribed before the revocation, so both must hear it
            from redis.asyncio import Redis

            client = Redis.from_url(redis)
            try:
                with anyio.fail_after(10):
                    while (await client.pubsub_numsub(CHANNEL))[0][1] < 2:
                        await anyio.sleep(0.02)
            finally:
                await client.aclose()
        revoked = await cli(procs[1].config_path, "keys", "revoke", key_id, "--json")
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)[0]["status"] == "revoked"
        await _both_refuse_within([kp.port for kp in procs], key)
        listed = await cli(cfg, "keys", "list", "--json")
        assert "hash" not in listed.stdout and key not in listed.stdout
        with anyio.fail_after(5):
            while [await metric(kp.port, "kraken_key_evictions_total", {"source": "redis"})
                   for kp in procs] != [heard, heard]:
                await anyio.sleep(0.02)


async def test_revoked_by_cli_both_processes_refuse_within_a_second(tmp_path):
    await _revoke_across_two_processes(tmp_path, heard=0)  # no Redis: the key_events poll


async def test_with_redis_the_revocation_is_also_broadcast(tmp_path, redis_url):  # noqa: F811
    await _revoke_across_two_processes(  # each process hears the key id on the channel
        tmp_path, heard=1, redis=redis_url,
        limits={"backend": "redis", "redis_url": redis_url, "ip_salt": SALT})
