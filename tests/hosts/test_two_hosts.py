"""Two Kraken hosts on one PostgreSQL and one Redis behave as one gateway: keys, BYOK, limits,
the audit chain and GDPR rights hold across them. Each host is a real ``kraken serve`` process
with its own journal; the test reads the shared database only to observe."""
from __future__ import annotations

import json
import signal
import subprocess

import anyio
import pytest

from harness import PROVIDER_KEY, running_mock
from hostkit import Host, chat, cli, fetch as rows, hosts, new_key, status_within
from kraken.accounts import masterkey
from postgres_server import bin_dir, pg_server  # noqa: F401  (fixture)
from redis_server import redis_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.anyio
BYOK_SECRET = "sk-customer-own-openai-key-0123456789"


async def test_a_key_made_or_revoked_on_one_host_holds_on_the_other_within_a_second(
        tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        customer = await a.admin.customer()
        secret, key_id = await new_key(a, customer["id"])
        await status_within(b, secret, 200)
        assert (await chat(a, secret)).status == 200  # both have it cached now
        await a.admin.ok("POST", f"/admin/keys/{key_id}/revoke", {})
        await status_within(b, secret, 401)
        await status_within(a, secret, 401)
        secret2, key2 = await new_key(b, customer["id"])
        await status_within(a, secret2, 200)
        await b.admin.ok("DELETE", f"/admin/keys/{key2}")
        await status_within(a, secret2, 401)


async def test_byok_set_on_one_host_is_used_on_the_other_through_a_master_key_rotation(
        tmp_path, dsn, redis_url):  # noqa: F811
    ring = tmp_path / "master.keys"
    ring.write_text(masterkey.new_entry(1) + "\n")
    ring.chmod(0o600)
    byok = {"master_key_file": str(ring), "poll_interval_s": 0.25}
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port,
                                             byok=byok) as (a, b):
        mock.accept_key(BYOK_SECRET)
        customer = await a.admin.customer()
        secret, _ = await new_key(a, customer["id"])
        assert (await chat(b, secret)).status == 200
        assert mock.requests[-1].header(b"authorization") == f"Bearer {PROVIDER_KEY}".encode()
        await a.admin.ok("PUT", f"/admin/customers/{customer['id']}/byok/openai",
                         {"api_key": BYOK_SECRET})
        await _uses_byok_within(b, mock, secret)

        # Rotation: every host gets version 2, then one operator re-encrypts under it.
        ring.write_text(ring.read_text() + masterkey.new_entry(2) + "\n")
        for host in (a, b):
            host.process.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(host.process.wait) == 0
            await anyio.to_thread.run_sync(host.process.start, 60.0)
        rotated = await cli(a, "byok", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stderr
        listed = await b.admin.ok("GET", f"/admin/customers/{customer['id']}/byok")
        assert [e["key_version"] for e in listed["data"]] == [2]
        for host in (b, a):
            await _uses_byok_within(host, mock, secret)
        assert BYOK_SECRET.encode() not in (await cli(b, "byok", "list", "--json")).stdout.encode()


async def _uses_byok_within(host: Host, mock, secret: str, seconds: float = 1.0) -> None:
    with anyio.fail_after(seconds):
        while True:
            reply = await chat(host, secret)
            used = mock.requests[-1].header(b"authorization")
            if reply.status == 200 and used == f"Bearer {BYOK_SECRET}".encode():
                return
            await anyio.sleep(0.02)


async def test_rate_limits_and_concurrency_caps_are_exact_across_hosts(
        tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        customer = await a.admin.customer()
        limited, _ = await new_key(a, customer["id"], rpm=10)
        statuses = [(await chat((a, b)[i % 2], limited)).status for i in range(20)]
        assert statuses.count(200) == 10 and statuses.count(429) == 10, statuses

        capped, _ = await new_key(b, customer["id"], max_concurrent=2)
        slow = {"mock": {"first_byte_delay_ms": 3000}}
        results: list[int] = []

        async def one(host: Host) -> None:
            results.append((await chat(host, capped, **slow)).status)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, (a, b)[i % 2])
        assert sorted(results) == [200, 200, 429, 429, 429, 429], results


async def test_the_audit_chain_stays_one_valid_chain_when_both_hosts_write_at_once(
        tmp_path, dsn, redis_url):  # noqa: F811
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon((a, b)[i % 2].admin.customer)
        for host in (a, b):
            verdict = await host.admin.ok("GET", "/admin/audit/verify")
            assert verdict["ok"] is True and verdict["checked"] >= 30, verdict
        checked = await cli(b, "audit", "verify")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        seqs = [r["seq"] for r in await rows(dsn, "SELECT seq FROM audit_log ORDER BY seq")]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no fork


async def test_export_from_either_host_is_complete_and_erasure_leaves_no_trace_in_pg_dump(
        tmp_path, dsn, redis_url, pg_server):  # noqa: F811
    email = "erase-me-across-hosts@example.com"
    async with running_mock() as mock, hosts(tmp_path, dsn, redis_url, mock.port) as (a, b):
        customer = await a.admin.ok("POST", "/admin/customers",
                                    {"email": email, "name": "Eve Erasable"}, 201)
        cid = customer["id"]
        secret, _ = await new_key(b, cid)
        for i in range(6):
            assert (await chat((a, b)[i % 2], secret)).status == 200
        with anyio.fail_after(10):
            while len(await rows(dsn, "SELECT 1 FROM requests WHERE customer_id = $1", cid)) < 6:
                await anyio.sleep(0.05)
        stored = {r["request_id"] for r in await rows(
            dsn, "SELECT request_id FROM requests WHERE customer_id = $1", cid)}
        for host in (a, b):
            reply = await host.admin.call("GET", f"/admin/customers/{cid}/export")
            assert reply.status == 200
            lines = [json.loads(line) for line in reply.body.decode().splitlines() if line]
            exported = {x["request_id"] for x in lines if "request_id" in x}
            assert exported == stored and len(stored) == 6
            assert email in reply.body.decode()
        await b.admin.ok("DELETE", f"/admin/customers/{cid}")
        for host in (a, b):
            await status_within(host, secret, 401)
    dump = subprocess.run([str(bin_dir() / "pg_dump"), "-h", "127.0.0.1", "-p",
                           str(pg_server.port), "-U", "postgres", dsn.rsplit("/", 1)[1]],
                          capture_output=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert b"CREATE TABLE" in dump.stdout
    for trace in (cid, email, "Eve Erasable", secret):
        assert trace.encode() not in dump.stdout, trace
