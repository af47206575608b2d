"""Right to erasure: after it, the customer's email, name, id and BYOK ciphertext are in
none of the SQLite files' bytes (main file, WAL, shared memory), in a real Kraken process."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from adminkit import ADMIN_TOKEN, Admin, admin_doc, admin_kraken, insert_requests
from harness import (
    TEST_KEY,
    KrakenProcess,
    auth_headers,
    db_rows,
    free_port,
    http,
    running_mock,
    wait_for,
    write_toml,
)

from kraken.accounts.masterkey import new_entry
from kraken.accounts.keys import generate_key, hash_key

pytestmark = pytest.mark.anyio


def _db_files(tmp: Path) -> dict[str, bytes]:
    """Every file Kraken keeps beside its database: .db, -wal, -shm, journal segments."""
    return {str(p): p.read_bytes() for p in tmp.rglob("*")
            if p.is_file() and p.suffix not in (".toml", ".log", ".keyring")}


def _holding(files: dict[str, bytes], needle: bytes) -> list[str]:
    return [name for name, blob in files.items() if needle in blob]


async def _chat(port: int, key: str) -> None:
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    reply = await http(port, "POST", "/v1/chat/completions", body.encode(), auth_headers(key))
    assert reply.status == 200, reply.body


async def test_erasure_leaves_no_trace_in_db_wal_or_shm_of_a_real_process(tmp_path):
    keyring = tmp_path / "byok.keyring"
    keyring.write_text(new_entry(1) + "\n")
    os.chmod(keyring, 0o600)
    marker = uuid.uuid4().hex[:12]
    email = f"erase-me-{marker}@example.com"
    name = f"Erin Marker{marker}"
    byok_secret = "sk-byok-" + marker * 3
    async with running_mock() as mock:
        port, admin_port = free_port(), free_port()
        doc = admin_doc(tmp_path, mock.port, admin_port, server={"port": port},
                        byok={"master_key_file": str(keyring)})
        write_toml(tmp_path / "k.toml", doc)
        admin = Admin(admin_port, tmp_path / "kraken.db")
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:  # 1: the account, an organisation, a Kraken key, a BYOK key
            cus = await admin.customer(email, name)
            cid = cus["id"]
            await admin.ok("POST", "/admin/organisations", {"name": f"Org of {name}", "owner_id": cid}, 201)
            await admin.ok("POST", "/admin/keys", {"customer_id": cid, "name": f"key of {name}"}, 201)
            await admin.ok("PUT", f"/admin/customers/{cid}/byok/openai", {"api_key": byok_secret})
            await admin.ok("POST", f"/admin/customers/{cid}/wallet",
                           {"amount_usd": "5.25", "ref": f"pay_{marker}"}, 201)
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
        conn = sqlite3.connect(tmp_path / "kraken.db")
        ciphertext = bytes(conn.execute("SELECT ciphertext FROM byok_keys").fetchone()[0])
        conn.close()
        # 2: the customer's traffic through the gateway (a config key for its id).
        key = generate_key("erasekey", env="test")
        doc["keys"].append({"id": "erasekey", "hash": hash_key(key, rounds=4), "customer_id": cid})
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            for _ in range(5):
                await _chat(port, key)
            await _chat(port, TEST_KEY)  # another customer's request must survive
            await wait_for(lambda: len(db_rows(tmp_path / "kraken.db")) >= 6)
            before = _db_files(tmp_path)
            # The needles are there to begin with (this test can fail).
            assert _holding(before, email.encode()) and _holding(before, cid.encode())
            assert _holding(before, marker.encode())

            reply = await admin.call("DELETE", f"/admin/customers/{cid}")
            assert reply.status == 200, reply.body
            report = reply.json()
            assert report["requests_deleted"] == 5 and report["wal_truncated"] is True
            assert report["rows_deleted"]["byok_keys"] == 1 and report["rows_deleted"]["wallets"] == 2

            after = _db_files(tmp_path)  # while the process is still running
            assert any(name.endswith("kraken.db-wal") for name in after)
            for needle in (email.encode(), cid.encode(), marker.encode(), ciphertext,
                           email.encode("utf-16-le")):
                assert not _holding(after, needle), needle
            gone = await admin.call("GET", f"/admin/customers/{cid}")
            assert gone.status == 404
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
    final = _db_files(tmp_path)
    for needle in (email.encode(), cid.encode(), marker.encode(), ciphertext):
        assert not _holding(final, needle), needle
    rows = db_rows(tmp_path / "kraken.db")
    assert [r["customer_id"] for r in rows] == ["cust_1"]
    verify = subprocess.run([sys.executable, "-m", "kraken", "audit", "verify", "--config",
                             str(tmp_path / "k.toml")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_billing_retention_keeps_rows_under_an_irreversible_tombstone(tmp_path):
    async with admin_kraken(tmp_path, retention={"keep_billing_records": True}) as (admin, k):
        cus = await admin.customer()
        await insert_requests(k.db_path, cus["id"], 12)
        other = await admin.customer()
        await insert_requests(k.db_path, other["id"], 2)
        report = await admin.ok("DELETE", f"/admin/customers/{cus['id']}")
        assert report["requests_tombstoned"] == 12 and report["requests_deleted"] == 0
        rows = db_rows(k.db_path)
        tombs = {r["customer_id"] for r in rows if r["customer_id"] != other["id"]}
        assert len(rows) == 14 and len(tombs) == 1
        (tomb,) = tombs
        assert tomb.startswith("erased_") and cus["id"] not in tomb
        files = _db_files(tmp_path)
        assert not _holding(files, cus["id"].encode()) and not _holding(files, cus["email"].encode())
        usage = await admin.ok("GET", "/admin/usage?group_by=customer")
        assert {r["group"]: r["requests"] for r in usage["data"]} == {tomb: 12, other["id"]: 2}


async def test_erasing_twice_or_an_unknown_customer_is_404(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        await admin.ok("DELETE", f"/admin/customers/{cus['id']}")
        again = await admin.call("DELETE", f"/admin/customers/{cus['id']}")
        assert again.status == 404 and again.json()["error"]["param"] == "customer_id"


def _kraken(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


async def test_cli_erase_needs_yes_then_erases_and_audits(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        await insert_requests(k.db_path, cus["id"], 3)
        db = k.db_path
    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(db)}})
    refused = _kraken("erase", cus["id"], "--config", str(cfg))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = _kraken("erase", cus["id"], "--yes", "--json", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requests_deleted"] == 3
    assert not any(cus["email"].encode() in blob for blob in _db_files(tmp_path).values())
    listed = _kraken("audit", "list", "--json", "--config", str(cfg))
    entries = json.loads(listed.stdout)
    assert entries[-1]["action"] == "customer.erase" and entries[-1]["actor"].startswith("cli")
    assert entries[-1]["target"] is None and entries[-1]["subject"] is None
    missing = _kraken("erase", "cus_nobody", "--yes", "--config", str(cfg))
    assert missing.returncode == 2 and "customer_id" in missing.stderr
    assert ADMIN_TOKEN not in done.stdout


async def test_records_flushed_after_the_erasure_are_swept(tmp_path):
    """A request admitted just before the erasure may reach SQLite just after it."""
    from kraken.privacy.erase import sweep_requests
    from kraken.store.sqlite import SqliteStore

    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        await admin.ok("DELETE", f"/admin/customers/{cus['id']}")
        await insert_requests(k.db_path, cus["id"], 3)  # as the meter would, late
        store = await SqliteStore.open(str(k.db_path))
        try:
            assert await sweep_requests(store, cus["id"]) == 3
        finally:
            await store.close()
        assert db_rows(k.db_path) == []
