"""GDPR export, erasure and the retention purge through the store interface, once per backend: a
fresh SQLite file, or a fresh database on this module's real PostgreSQL (tests/postgres_server.py).

The erasure test looks for the customer where an operator's copy would hold them: the raw SQLite
files (database, WAL, shared memory), or a ``pg_dump`` of the PostgreSQL database.
"""
from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from postgres_server import StoreBackend, bin_dir, pg_server  # noqa: F401  (module-scoped fixture)
from kraken import audit
from kraken.accounts import apikeys, service
from kraken.config import RetentionConfig
from kraken.privacy import retention
from kraken.privacy.erase import erase_customer, sweep_requests
from kraken.privacy.export import export_stream
from kraken.store.record import FIELD_NAMES, RequestRecord

pytestmark = pytest.mark.anyio
PAGE = 3
DAY_S = retention.DAY_S


@dataclass
class Backend(StoreBackend):
    server: Any = None

    def copy(self) -> bytes:
        """What an operator's copy of the database holds: the SQLite files' bytes (after the
        erasure's own checkpoint), or a plain-SQL ``pg_dump`` of the database."""
        if self.name == "sqlite":
            return b"".join(p.read_bytes() for p in Path(self.target).parent.iterdir()
                            if p.name.startswith(Path(self.target).name))
        done = subprocess.run([str(bin_dir() / "pg_dump"), "--no-owner", "-d", self.target],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "privacy.db"))
    server = request.getfixturevalue("pg_server")
    return Backend("postgres", server.create_database(), server)


@pytest.fixture
async def store(backend):
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()


def _records(customer_id: str, n: int, *, ts: float, prefix: str, same_ts: bool = False,
             ) -> list[RequestRecord]:
    return [RequestRecord(ts=ts if same_ts else ts + i, request_id=f"{prefix}-{i:04d}",
                          customer_id=customer_id, model_requested="mock-gpt",
                          model_dispatched="mock-gpt", provider="mock", prompt_tokens=10 + i,
                          completion_tokens=5, cached_tokens=None, reasoning_tokens=None,
                          latency_ms=12.5, ttfb_ms=3.0, task_type="chat", cost_usd=0.001,
                          kraken_fee_usd=0.0, fallback_used=i % 2 == 1, error_type=None,
                          status=200, byok=i % 3 == 0, key_id=f"key{prefix}")
            for i in range(n)]


async def _account(backend: Backend, store, marker: str) -> dict:
    """A customer with an organisation, a key, a BYOK ciphertext, a wallet with two
    transactions, monthly usage and request rows (eight sharing one timestamp)."""
    email = f"privacy-{marker}@example.com"
    cus = await service.create_customer(store, email, f"Pat {marker}")
    cid = cus.id
    org = await service.create_organisation(store, f"Org {marker}", cid)
    created = await apikeys.create_key(store, cid, name=f"key {marker}", rounds=4)
    async with store.transaction() as tx:
        await tx.accounts.upsert_byok(tx, cid, "openai", 1, b"n" * 12, b"sealed-" + marker.encode(),
                                      1_000.0)
        for sql, params in (
            ("INSERT INTO wallets (wallet_id, created_ts) VALUES (?, ?)", (cid, 1_000.0)),
            ("INSERT INTO wallet_transactions (wallet_id, kind, amount_micros, ref, ts, "
             "balance_after_micros) VALUES (?, 'top_up', 5000000, ?, 1001.0, 5000000)",
             (cid, f"pay_{marker}")),
            ("INSERT INTO wallet_transactions (wallet_id, kind, amount_micros, ref, ts, "
             "balance_after_micros) VALUES (?, 'usage_debit', -1000, ?, 1002.0, 4999000)",
             (cid, f"req_{marker}")),
            ("INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros) "
             "VALUES (?, '2026-12', 150, 1000)", (cid,)),
        ):
            await tx.execute(backend.sql(sql), params)
    records = (_records(cid, 8, ts=5_000.0, prefix=f"tie{marker}", same_ts=True)
               + _records(cid, 5, ts=1_000.0, prefix=f"old{marker}"))
    await store.insert_records(records)
    return {"id": cid, "email": email, "org": org.id, "key_secret": created.plaintext,
            "customer": cus.as_dict(), "records": records}


async def _export(store, customer: dict, fmt: str = "jsonl") -> bytes:
    return b"".join([chunk async for chunk in export_stream(store, customer, fmt, page_rows=PAGE)])


async def test_export_is_complete_and_the_same_on_every_backend(backend, store):
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    other = await _account(backend, store, uuid.uuid4().hex[:10])
    body = await _export(store, mine["customer"])
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert lines[0]["record_type"] == "export" and lines[-1]["record_type"] == "export_end"
    by_kind: dict[str, list[dict]] = {}
    for line in lines:
        by_kind.setdefault(line["record_type"], []).append(line)
    # every request row, each once, oldest first, as written (flags read back the same)
    expected = sorted(mine["records"], key=lambda r: (r.ts, r.request_id))
    got = [{k: line[k] for k in FIELD_NAMES} for line in by_kind["request"]]
    assert got == [{**r.to_dict(), "byok": int(r.byok)} for r in expected]
    assert lines[-1]["requests"] == 13
    assert lines[-1]["account_records"] == len(lines) - 2 - 13
    assert by_kind["customer"] == [{"record_type": "customer", **mine["customer"]}]
    assert [o["id"] for o in by_kind["organisation"]] == [mine["org"]]
    assert [m["org_id"] for m in by_kind["members"]] == [mine["org"]]
    assert [k["name"] for k in by_kind["api_keys"]] == [f"key {marker}"]
    assert [(b["provider"], b["key_version"]) for b in by_kind["byok_keys"]] == [("openai", 1)]
    assert [w["balance_micros"] for w in by_kind["wallets"]] == [4_999_000]
    assert sorted(t["amount_micros"] for t in by_kind["wallet_transactions"]) == [-1000, 5_000_000]
    assert [(u["month"], u["tokens"]) for u in by_kind["usage_monthly"]] == [("2026-12", 150)]
    # nothing secret, nothing of the other customer
    assert b"sealed-" not in body and b'"hash"' not in body and b"$2b$" not in body
    assert mine["key_secret"].encode() not in body
    assert other["id"].encode() not in body and other["email"].encode() not in body
    csv_rows = (await _export(store, mine["customer"], "csv")).decode().splitlines()
    assert sum(row.startswith("request,") for row in csv_rows) == 13


async def test_erasure_leaves_the_customer_in_no_copy_of_the_database(backend, store):
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    other = await _account(backend, store, uuid.uuid4().hex[:10])
    before = backend.copy()
    for needle in (mine["id"], mine["email"], marker):  # the test can fail
        assert needle.encode() in before, needle
    result = await erase_customer(store, mine["id"], actor="cli:test")
    assert result.requests_deleted == 13
    assert result.rows_deleted["wallets"] == 3  # the wallet and its two transactions
    assert {"api_keys", "byok_keys", "members", "usage_monthly", "customers"} <= set(
        result.rows_deleted)
    after = backend.copy()
    for needle in (mine["id"], mine["email"], marker, f"Org {marker}"):
        assert needle.encode() not in after, needle
    assert other["id"].encode() in after and other["email"].encode() in after
    rows = await store.fetch_all("SELECT customer_id, count(*) FROM requests GROUP BY customer_id")
    assert rows == [(other["id"], 13)]
    with pytest.raises(service.NotFoundError):
        await erase_customer(store, mine["id"], actor="cli:test")
    assert (await audit.verify(store)).ok
    # a batch still in flight on another host lands after the erasure: written under a
    # tombstone, never under the id, so there is nothing left for the sweep
    late = await backend.open()
    try:
        await late.insert_records(_records(mine["id"], 2, ts=9_000.0, prefix=f"late{marker}"))
    finally:
        await late.close()
    assert await sweep_requests(store, mine["id"]) == 0
    assert mine["id"].encode() not in backend.copy()


async def test_kept_billing_records_stay_under_one_tombstone(backend, store):
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    result = await erase_customer(store, mine["id"], actor="cli:test", keep_billing_records=True)
    assert result.requests_tombstoned == 13 and result.requests_deleted == 0
    assert result.rows_tombstoned == {"usage_monthly": 1}
    tomb = result.tombstone
    rows = await store.fetch_all(backend.sql("SELECT count(*) FROM requests WHERE customer_id = ?"),
                                 (tomb,))
    assert rows == [(13,)]
    usage = await store.fetch_all("SELECT customer_id, tokens FROM usage_monthly")
    assert usage == [(tomb, 150)]
    after = backend.copy()
    assert mine["email"].encode() not in after and f"Org {marker}".encode() not in after


async def test_retention_purges_old_requests_and_audit_entries(backend, store, monkeypatch):
    now = 10_000 * DAY_S
    for days in (200, 100, 1):
        await audit.record(store, actor="cli:test", action="customer.update", target="cus_x",
                           now=now - days * DAY_S)
    await store.insert_records(_records("cus_x", 7, ts=now - 400 * DAY_S, prefix="old"))
    await store.insert_records(_records("cus_x", 2, ts=now - DAY_S, prefix="new"))
    monkeypatch.setattr(retention, "_BATCH", 3)  # several purge transactions
    done = await retention.purge_once(store, RetentionConfig(request_days=30, audit_days=90),
                                      now=now)
    assert done == {"audit_entries": 2, "requests": 7}
    rows = await store.fetch_all("SELECT request_id FROM requests ORDER BY request_id")
    assert rows == [("new-0000",), ("new-0001",)]
    assert [e.action for e in await audit.list_entries(store)] == [
        "customer.update", "retention.purge"]
    assert (await audit.verify(store)).ok
    again = await retention.purge_once(store, RetentionConfig(request_days=30, audit_days=90),
                                       now=now)
    assert again == {"audit_entries": 0, "requests": 0}


async def _erasure_waiting(backend: Backend, store) -> None:
    """On PostgreSQL: until the erasure waits for the erasure lock (held shared by the batch).
    SQLite's erasure waits in BEGIN IMMEDIATE, which no query can observe."""
    if backend.name != "postgres":
        return
    with anyio.fail_after(10):
        while not (await store.fetch_all(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")):
            await anyio.sleep(0.01)


async def test_a_batch_in_flight_during_the_erasure_leaves_no_row_under_the_id(backend, store):
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    host_b = await backend.open()
    in_batch, release = anyio.Event(), anyio.Event()

    async def hold(_tx, _records) -> None:  # the batch's transaction stays open meanwhile
        in_batch.set()
        await release.wait()

    erased: list[Any] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(host_b.insert_records,
                          _records(mine["id"], 4, ts=8_000.0, prefix=f"fly{marker}"), hold)
            await in_batch.wait()

            async def erase() -> None:
                erased.append(await erase_customer(store, mine["id"], actor="cli:test"))

            tg.start_soon(erase)
            await _erasure_waiting(backend, host_b)
            release.set()
    finally:
        await host_b.close()
    # the erasure saw the committed batch and deleted its rows with the rest
    assert erased[0].requests_deleted == 13 + 4
    assert await store.fetch_all("SELECT count(*) FROM requests") == [(0,)]
    assert mine["id"].encode() not in backend.copy()


async def test_erasure_takes_the_pending_sign_up_links_of_the_customers_address(backend, store):
    """A second link asked for before the first was confirmed (or one the operator's manual
    account made moot) still holds the address; expired links stay until a sign-up purges
    them. The erasure takes them with the account; another address's link stays."""
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    other = f"someone-{marker}@example.com"
    local, _, domain = mine["email"].partition("@")
    async with store.transaction() as tx:
        await tx.signup.insert(tx, "a" * 64, mine["email"], 1_000.0, 9e9)  # still usable
        await tx.signup.insert(tx, "b" * 64, f"{local.upper()}@{domain}", 1_000.0, 1_900.0)
        await tx.signup.insert(tx, "c" * 64, other, 1_000.0, 9e9)
    result = await erase_customer(store, mine["id"], actor="cli:test")
    assert result.rows_deleted["signup_links"] == 2
    assert await store.fetch_all("SELECT email FROM signup_links") == [(other,)]
    after = backend.copy()
    assert mine["email"].encode() not in after and local.upper().encode() not in after
    assert other.encode() in after


async def test_an_audit_entry_written_after_the_erasure_does_not_name_the_customer(backend, store):
    """An admin or account call about the customer that read it before the erasure and audits
    after it (an export, a key change) appends its entry last: it keeps the digests the chain
    commits to, never the erased id in plain text."""
    marker = uuid.uuid4().hex[:10]
    mine = await _account(backend, store, marker)
    await erase_customer(store, mine["id"], actor="cli:test")
    await audit.record(store, actor="api:ops", action="customer.export", target=mine["id"],
                       subject=mine["id"], detail={"format": "jsonl"})
    await audit.record(store, actor="api:ops", action="key.delete", target="k" + marker,
                       subject=mine["id"])
    await audit.record(store, actor="api:ops", action="customer.update", target="cus_other",
                       subject="cus_other")
    entries = (await audit.list_entries(store))[-3:]
    assert [(e.target, e.subject) for e in entries] == [
        (None, None), (None, None), ("cus_other", "cus_other")]
    assert (await audit.verify(store)).ok
    await store.privacy.after_erasure(store)
    assert mine["id"].encode() not in backend.copy()


async def test_a_large_customers_erasure_outlasts_the_statement_timeout(pg_server):  # noqa: F811
    """PostgreSQL: the erasure deletes every request and ledger row of the customer in its one
    transaction; for a large prepaid customer (a usage debit per request, each delete checked
    by the ledger's row trigger) one statement outlasts the hot path's statement timeout (a
    million rows: ~7 s against the default 5 s). The erasure must still go through, on the
    server and in the client."""
    import asyncpg

    from kraken.store.postgres import PostgresStore

    dsn = pg_server.create_database()
    store = await PostgresStore.open(dsn, statement_timeout_ms=100, connect_timeout_s=0.1)
    try:
        cid = (await service.create_customer(store, "big-spender@example.com")).id
        conn = await asyncpg.connect(dsn)
        try:  # the ledger as years of batches left it (written here without its triggers)
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("INSERT INTO wallets (wallet_id, created_ts) VALUES ($1, 1)", cid)
            await conn.execute(
                "INSERT INTO wallet_transactions (wallet_id, kind, amount_micros, ref, ts, "
                "balance_after_micros) SELECT $1, 'usage_debit', -1, 'req_' || g, 1, -g "
                "FROM generate_series(1, 150000) g", cid)
        finally:
            await conn.close()
        result = await erase_customer(store, cid, actor="cli:test")
        assert result.rows_deleted["wallets"] == 150_001
        assert await store.fetch_all("SELECT count(*) FROM wallet_transactions") == [(0,)]
    finally:
        await store.close()
