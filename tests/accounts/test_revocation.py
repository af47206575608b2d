"""Revocation within 1 s across processes: two real ``kraken serve`` processes share one SQLite
file (as hosts share a database); a key cached by both is revoked with the ``kraken`` CLI and
both refuse it within a second - through the key_events poll, and through Redis pub/sub when
Redis is configured. The poll itself is also proven store to store, once per backend (SQLite
and PostgreSQL): what one host changes, another host's key cache drops within a second."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import pytest

from backends import backend, pg_server, store  # noqa: F401  (fixtures: once per backend)
from harness import running_mock
from keyproc import chat, cli, kraken_process, metric
from kraken.accounts import service
from kraken.accounts.keystore import DbKeySource
from kraken.accounts.revocation import CHANNEL, RevocationWatcher
from kraken.config import AuthConfig
from kraken.errors import Unauthorized
from kraken.policy.auth import KeyVerifier
from postgres_server import StoreBackend
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


async def _refused_within(verifier, key: bytes, seconds: float = 1.0) -> None:
    with anyio.fail_after(seconds):
        while True:
            try:
                await verifier.verify(key)
            except Unauthorized:
                return
            await anyio.sleep(0.02)


async def test_a_change_on_one_host_reaches_the_other_hosts_cache_within_a_second(store, backend):
    """Host A writes through its store; host B polls key_events on its own store and evicts."""
    cus = await service.create_customer(store, "hosts@example.com", plan="gold")
    created = await service.create_key(store, cus.id, rounds=4)
    key = created.plaintext.encode()
    host_b = await backend.open()
    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(host_b))
    watcher = RevocationWatcher(host_b, verifier)
    try:
        await watcher.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            assert (await verifier.verify(key)).plan == "gold"
            await service.update_customer(store, cus.id, plan="basic", opted_out=True)
            with anyio.fail_after(1):
                while verifier.lookup_cached(key) is not None:
                    await anyio.sleep(0.02)
            principal = await verifier.verify(key)
            assert (principal.plan, principal.opted_out) == ("basic", True)
            await service.revoke_key(store, created.key.id)
            await _refused_within(verifier, key)
            tg.cancel_scope.cancel()
    finally:
        verifier.close()
        await host_b.close()



async def test_an_event_committed_after_a_later_one_still_evicts(pg_server):  # noqa: F811
    """PostgreSQL numbers a key event when its row is written, not when its transaction
    commits: an erasure's events, committed after a quick revocation the poll has already
    passed, must still evict the erased customer's key (not after the 300 s cache TTL)."""
    target = StoreBackend("postgres", pg_server.create_database())
    eraser, other_host, host_b = [await target.open() for _ in range(3)]
    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(host_b))
    try:
        victim = await service.create_customer(eraser, "victim@example.com")
        bystander = await service.create_customer(eraser, "bystander@example.com")
        erased = await service.create_key(eraser, victim.id, rounds=4)
        revoked = await service.create_key(eraser, bystander.id, rounds=4)
        watcher = RevocationWatcher(host_b, verifier)
        await watcher.start()
        token = erased.plaintext.encode()
        assert (await verifier.verify(token)).customer_id == victim.id  # cached on host B
        async with eraser.transaction() as tx:  # the erasure, still running
            assert await service.delete_customer_in(tx, victim.id)
            await service.revoke_key(other_host, revoked.key.id)  # committed first
            assert await watcher.poll_once() == 1  # the later event, seen first
        await watcher.poll_once()  # the erasure has committed now
        assert verifier.lookup_cached(token) is None
        with pytest.raises(Unauthorized):
            await verifier.verify(token)
    finally:
        verifier.close()
        for store in (eraser, other_host, host_b):
            await store.close()


async def test_a_revocation_in_flight_while_a_host_starts_still_evicts(pg_server):  # noqa: F811
    """PostgreSQL hands out an event's number when its row is written: a host starting while a
    revocation's transaction is still open (a rolling restart during an incident) must not
    take that number as already seen, or the key it caches meanwhile is served for the cache
    TTL (300 s) instead of 1 s."""
    import time

    target = StoreBackend("postgres", pg_server.create_database())
    admin, host_b = [await target.open() for _ in range(2)]
    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(host_b))
    try:
        cus = await service.create_customer(admin, "leaked@example.com")
        await service.create_key(admin, cus.id, rounds=4)  # an older event below the new one
        leaked = await service.create_key(admin, cus.id, rounds=4)
        await service.update_key(admin, leaked.key.id, name="leaked")
        token = leaked.plaintext.encode()
        watcher = RevocationWatcher(host_b, verifier)
        async with admin.transaction() as tx:  # the revocation, not committed yet
            await tx.accounts.revoke_key(tx, leaked.key.id, time.time())
            await watcher.start()  # host B starts meanwhile
            assert (await verifier.verify(token)).customer_id == cus.id  # and caches the key
        await watcher.poll_once()  # the revocation has committed now
        assert verifier.lookup_cached(token) is None
        with pytest.raises(Unauthorized):
            await verifier.verify(token)
    finally:
        verifier.close()
        for store in (admin, host_b):
            await store.close()
