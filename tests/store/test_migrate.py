"""``kraken migrate``: a SQLite file built through Kraken's own code paths, copied by the real CLI
(a subprocess) into a real PostgreSQL, then checked through PostgresStore: counts, balances,
the audit chain, keys, BYOK, erasure, sequences; refusals; a failure leaving the target empty;
the source's bytes unchanged; Kraken serving a pre-migration key on the migrated database."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import asyncpg
import pytest

from harness import http, kraken_mapping, running_kraken, running_mock
from kraken import audit
from kraken.accounts import byok, service
from kraken.accounts.keystore import DbKeySource
from kraken.accounts.masterkey import Keyring, new_entry
from kraken.billing import wallet
from kraken.config import AuthConfig
from kraken.errors import KrakenError
from kraken.policy.auth import KeyVerifier
from kraken.privacy.erase import erase_customer
from kraken.store.migrate.source import CHUNK_ROWS, SqliteSource
from kraken.store.migrate.tables import TABLES, unlisted
from kraken.store.postgres import PostgresStore
from kraken.store.record import RequestRecord
from kraken.store.schema import VERSION
from kraken.store.sqlite import SqliteStore
from postgres_server import pg_dsn, pg_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio
TABLE_NAMES = [t.name for t in TABLES]


def record(i: int, customer: str, key_id: str | None, model: str = "gpt-test") -> RequestRecord:
    return RequestRecord(
        ts=1_700_000_000.0 + i, request_id=f"req_{i:06d}", customer_id=customer,
        model_requested=model, model_dispatched="gpt-test", provider="mockai",
        prompt_tokens=10, completion_tokens=5, cached_tokens=0, reasoning_tokens=0,
        latency_ms=12.5, ttfb_ms=3.0, task_type="chat", cost_usd=0.002, kraken_fee_usd=0.0001,
        fallback_used=i % 2 == 1, error_type=None, status=200, byok=i % 3 == 0, key_id=key_id)


async def _debit(tx, records) -> None:
    """The batch work the billing guard does: wallet debits and monthly usage."""
    await wallet.debit_usage(tx, records)
    await tx.billing.add_usage(tx, [(r.customer_id, "2023-11", r.prompt_tokens or 0,
                                     wallet.usage_micros(r)) for r in records])


async def build_source(path: Path) -> dict:
    """Customers, an organisation with members and an invitation, keys, a BYOK key, top-ups,
    usage debits, request records, audit entries, pending links and an erased customer, all
    through Kraken's code."""
    store = await SqliteStore.open(str(path))
    try:
        alice = await service.create_customer(store, "alice@example.com", "Alice", plan="gold")
        bob = await service.create_customer(store, "bob@example.com", "Bob")
        gone = await service.create_customer(store, "gone@example.com", "Gone")
        org = await service.create_organisation(store, "Acme", alice.id)
        await service.add_member(store, org.id, bob.id, "developer")
        key = await service.create_key(store, alice.id, name="main", rounds=4)
        org_key = await service.create_key(store, bob.id, org_id=org.id, rounds=4)
        revoked = await service.create_key(store, bob.id, rounds=4)
        await service.revoke_key(store, revoked.key.id)  # writes a key_events row
        await service.create_key(store, gone.id, rounds=4)
        ring = Keyring.parse(new_entry(1), "<test>")
        await byok.set_key(store, ring, alice.id, "openai", "sk-alice-0123456789abcdefghij")
        for cid, usd in ((alice.id, "10"), (bob.id, "2.5"), (gone.id, "1")):
            await wallet.top_up(store, cid, wallet.usd_to_micros(usd), f"topup-{cid}")
        for n, cid in enumerate((alice.id, bob.id, gone.id)):  # the oldest is purged below
            await audit.record(store, actor="cli:test", action="wallet.top_up", target=cid,
                               subject=cid, detail={"amount_usd": n}, now=1_700_000_000 + n)
        assert await audit.purge_before(store, 1_700_000_000.5) == 1  # the chain now starts
        # at an anchor
        async with store.transaction() as tx:
            await tx.signup.insert(tx, hashlib.sha256(b"token").hexdigest(),
                                   "new@example.com", time.time(), time.time() + 900)
            await store.owners.claim(tx, "mockai", "file", ["file-abc"], alice.id, time.time())
            await tx.email_changes.insert(tx, hashlib.sha256(b"change").hexdigest(), bob.id,
                                          "bob@new.example.com", time.time(), time.time() + 900)
            await tx.invitations.insert(tx, "inv_pending", org.id, "cus_invited", "developer",
                                        alice.id, time.time(), time.time() + 86_400)
        records = [record(i, c, k) for i, (c, k) in enumerate(
            [(alice.id, key.key.id)] * 5 + [(bob.id, org_key.key.id)] * 4 + [(gone.id, None)] * 2)]
        for start in range(0, len(records), 4):  # several batches, as the meter writes them
            await store.insert_records(records[start:start + 4], _debit)
        await wallet.apply(store, bob.id, "refund", -100_000, "refund-bob")
        await erase_customer(store, gone.id, actor="cli:test")
        await wallet.top_up(store, "wal_closed", 5, "topup-closed")
        async with store.transaction() as tx:  # leaves its tombstone in wallet_erasures
            await wallet.erase_wallet(tx, "wal_closed")
    finally:
        await store.close()
    return {"alice": alice.id, "bob": bob.id, "gone": gone.id, "key": key.plaintext,
            "revoked": revoked.plaintext}


def source_rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def file_digest(path: Path) -> str:
    """The file's bytes and its -wal's (absent and empty alike: no pending frames). Not -shm:
    SQLite's shared-memory index, which any reader of a WAL database creates and marks."""
    h = hashlib.sha256()
    for p in (path, Path(f"{path}-wal")):
        h.update(p.read_bytes() if p.exists() else b"")
        h.update(b"|")
    return h.hexdigest()


async def migrate_cli(path: Path, dsn: str | None, env: dict | None = None
                      ) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "kraken", "migrate", "--from", f"sqlite:{path}"]
    argv += ["--to", dsn] if dsn else []
    environ = {k: v for k, v in os.environ.items() if k != "KRAKEN_DATABASE_URL"}
    return await anyio.to_thread.run_sync(lambda: subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**environ, **(env or {})}))


async def pg_counts(dsn: str) -> dict[str, int] | None:
    """Rows per table, or None when the schema is not there at all."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('customers')") is None:
            return None
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLE_NAMES}
    finally:
        await conn.close()


@pytest.fixture
async def source(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "kraken.db"
    return path, await build_source(path)


async def test_everything_is_copied_verified_and_usable_on_postgres(source, pg_dsn):
    path, made = source
    before = file_digest(path)
    done = await migrate_cli(path, None, env={"KRAKEN_DATABASE_URL": pg_dsn})  # DSN from env
    assert done.returncode == 0, done.stderr
    assert file_digest(path) == before
    for table in TABLE_NAMES:
        (n,) = source_rows(path, f"SELECT count(*) FROM {table}")[0]
        assert f"{table:<22}{n:>10}{n:>10}\n" in done.stdout
    assert "committed" in done.stdout and "audit chain: " in done.stdout
    counts = await pg_counts(pg_dsn)
    assert counts == {t: source_rows(path, f"SELECT count(*) FROM {t}")[0][0] for t in TABLE_NAMES}
    assert all(counts.values()), counts  # every table had rows to copy

    pg = await PostgresStore.open(pg_dsn, pool_size=2)
    try:
        for cid, balance in source_rows(path, "SELECT wallet_id, balance_micros FROM wallets"):
            assert await wallet.balance(pg, cid) == balance
        chain = await audit.verify(pg)
        (head,) = source_rows(path, "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")[0]
        assert chain.ok and chain.checked == counts["audit_log"] and chain.head_hash == head
        assert "audit chain: %d entries verified" % chain.checked in done.stdout

        verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(pg))
        principal = await verifier.verify(made["key"].encode())
        assert (principal.customer_id, principal.plan) == (made["alice"], "gold")
        with pytest.raises(KrakenError) as refused:
            await verifier.verify(made["revoked"].encode())
        assert refused.value.status == 401
        assert await pg.fetch_all("SELECT generation, keys FROM byok_state") == \
            source_rows(path, "SELECT generation, keys FROM byok_state")

        # The erasure key came along: a late record of the erased customer is tombstoned.
        await pg.insert_records([record(99, made["gone"], None)])
        (stored,) = (await pg.fetch_all(
            "SELECT customer_id FROM requests WHERE request_id = 'req_000099'"))[0]
        assert stored != made["gone"]

        # Sequences continue past the copied ids.
        (high,) = source_rows(path, "SELECT MAX(id) FROM wallet_transactions")[0]
        txn, created = await wallet.top_up(pg, made["bob"], 1_000, "after-migration")
        assert created and txn.id > high
        await service.revoke_key(pg, principal.key_id)
        (seq,) = (await pg.fetch_all("SELECT MAX(seq) FROM key_events"))[0]
        assert seq > source_rows(path, "SELECT MAX(seq) FROM key_events")[0][0]
    finally:
        await pg.close()


async def test_a_ledger_longer_than_several_chunks_is_rebuilt_exactly(tmp_path, pg_dsn):
    """More debits than CHUNK_ROWS, from several wallets, written by the meter's batches: each
    chunk's COPY is checked by the ledger trigger against the balance the previous left."""
    path = tmp_path / "big.db"
    store = await SqliteStore.open(str(path))
    try:
        ids = [(await service.create_customer(store, f"c{i}@example.com")).id for i in range(3)]
        for cid in ids:
            await wallet.top_up(store, cid, 1_000_000, f"topup-{cid}")
        records = [record(i, ids[i % 3], None) for i in range(2 * CHUNK_ROWS + 500)]
        for start in range(0, len(records), 500):
            await store.insert_records(records[start:start + 500], _debit)
    finally:
        await store.close()
    source = SqliteSource.open(str(path))
    try:
        sizes = [len(rows) for rows in source.chunks("SELECT * FROM wallet_transactions")]
    finally:
        source.close()
    assert max(sizes) == CHUNK_ROWS and sum(sizes) == len(records) + 3
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 0, done.stderr
    assert "wallets: 3 of 3 balances equal" in done.stdout
    pg = await PostgresStore.open(pg_dsn, pool_size=1)
    try:
        for cid, balance, last in source_rows(path, "SELECT wallet_id, balance_micros, "
                                                    "last_tx_id FROM wallets"):
            assert balance < 0  # usage may overdraw: the trigger allowed it as SQLite did
            assert await pg.fetch_all("SELECT balance_micros, last_tx_id, (SELECT SUM("
                                      "amount_micros) FROM wallet_transactions WHERE wallet_id"
                                      " = $1) FROM wallets WHERE wallet_id = $1", (cid,)) == \
                [(balance, last, balance)]
    finally:
        await pg.close()


async def test_a_second_run_is_refused_and_duplicates_nothing(source, pg_dsn):
    path, _ = source
    assert (await migrate_cli(path, pg_dsn)).returncode == 0
    counts = await pg_counts(pg_dsn)
    again = await migrate_cli(path, pg_dsn)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert "already holds Kraken data" in again.stderr
    assert await pg_counts(pg_dsn) == counts


async def test_a_used_kraken_database_is_refused_an_unused_one_accepted(source, pg_dsn):
    path, _ = source
    pg = await PostgresStore.open(pg_dsn, pool_size=1)  # a host started once: schema, no data
    await pg.close()
    assert (await migrate_cli(path, pg_dsn)).returncode == 0

    other = path.parent / "other.db"
    store = await SqliteStore.open(str(other))
    await service.create_customer(store, "x@example.com")
    await store.close()
    done = await migrate_cli(other, pg_dsn)
    assert done.returncode == 2 and "customers has rows" in done.stderr


async def test_a_failure_mid_copy_leaves_the_target_empty(source, pg_dsn):
    """The last table's row is refused by PostgreSQL (a NUL in text): every table copied before
    it is rolled back with it, schema included."""
    path, _ = source
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE requests SET model_requested = 'bad' || char(0) || 'model' "
                     "WHERE request_id = 'req_000003'")
    conn.close()
    before = file_digest(path)
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 1
    assert "copy requests" in done.stderr and "rolled back" in done.stderr
    assert "bad" not in done.stderr and "postgres@" not in done.stderr
    assert await pg_counts(pg_dsn) is None
    assert file_digest(path) == before


@pytest.mark.parametrize("tamper, problem", [
    # The file edited behind Kraken's back (its triggers dropped first): the copy goes in, but
    # the verification finds the difference, and nothing is committed.
    ("DROP TRIGGER audit_log_append_only;"
     "UPDATE audit_log SET detail = '{\"amount_usd\":\"1000\"}' WHERE seq = 2",
     "audit chain: entry 2: entry content does not match its hash"),
    ("DROP TRIGGER wallets_change_only_by_transaction;"
     "UPDATE wallets SET balance_micros = balance_micros + 1 WHERE wallet_id IN "
     "(SELECT wallet_id FROM wallets ORDER BY wallet_id LIMIT 1)",
     "1 of 2 wallet balances differ"),
])
async def test_a_mismatch_found_by_the_verification_rolls_everything_back(
        source, pg_dsn, tamper, problem):
    path, _ = source
    conn = sqlite3.connect(path)
    conn.executescript(tamper)
    conn.close()
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 1, done.stdout
    assert problem in done.stderr and "rolled back" in done.stderr
    assert await pg_counts(pg_dsn) is None


async def test_an_incompatible_table_in_the_target_refuses_and_is_left_alone(source, pg_dsn):
    path, _ = source
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("CREATE TABLE wallets (wallet_id INTEGER PRIMARY KEY, note TEXT)")
    await conn.execute("INSERT INTO wallets VALUES (1, 'theirs')")
    await conn.close()
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 2 and "cannot create Kraken's schema" in done.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('customers')") is None
        assert await conn.fetch("SELECT * FROM wallets") == [(1, "theirs")]
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["not sqlite", "other sqlite", "newer", "older"])
async def test_a_source_that_is_not_this_krakens_database_is_refused(kind, tmp_path, pg_dsn):
    path = tmp_path / "src.db"
    if kind == "not sqlite":
        path.write_bytes(b"hello, this is not a database" * 100)
    else:
        if kind != "other sqlite":
            store = await SqliteStore.open(str(path))
            await store.close()
        conn = sqlite3.connect(path)
        if kind == "other sqlite":
            conn.execute("CREATE TABLE notes (body TEXT)")
        else:
            conn.execute(f"PRAGMA user_version = {VERSION + 1 if kind == 'newer' else VERSION - 1}")
        conn.commit()
        conn.close()
    before = file_digest(path)
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kraken: migrate: source:") and done.stderr.count("\n") == 1
    assert {"not sqlite": "not a SQLite database", "other sqlite": "not a Kraken database",
            "newer": "newer than this Kraken", "older": "older than this Kraken"}[kind] in done.stderr
    assert await pg_counts(pg_dsn) is None
    assert file_digest(path) == before


async def test_kraken_on_the_migrated_database_serves_a_pre_migration_key(source, pg_dsn, tmp_path):
    path, made = source
    assert (await migrate_cli(path, pg_dsn)).returncode == 0
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, store={
            "backend": "postgres", "dsn": pg_dsn, "journal_dir": str(tmp_path / "journal")})
        async with running_kraken(doc) as k:
            reply = await http(k.port, "POST", "/v1/chat/completions", body.encode(),
                               {"authorization": f"Bearer {made['key']}",
                                "content-type": "application/json"})
            assert reply.status == 200, reply.body
            pg = await PostgresStore.open(pg_dsn, pool_size=1)
            try:
                async def served() -> list:
                    return await pg.fetch_all(
                        "SELECT customer_id FROM requests WHERE status = 200 AND ts > 1700001000")
                rows = []
                with anyio.fail_after(10):
                    while not (rows := await served()):
                        await anyio.sleep(0.02)
                assert rows == [(made["alice"],)]
            finally:
                await pg.close()


async def test_the_copy_plan_names_every_table_of_both_schemas(tmp_path, pg_dsn):
    """A table added by a later migration must be taught to the copy (or the copy refuses)."""
    store = await SqliteStore.open(str(tmp_path / "fresh.db"))
    await store.close()
    source = SqliteSource.open(str(tmp_path / "fresh.db"))
    try:
        assert unlisted(source.tables()) == set()
    finally:
        source.close()
    pg = await PostgresStore.open(pg_dsn, pool_size=1)
    try:
        names = {r[0] for r in await pg.fetch_all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    finally:
        await pg.close()
    assert unlisted(names) == set() and set(TABLE_NAMES) <= names


async def test_a_target_of_a_newer_kraken_is_refused(source, pg_dsn):
    path, _ = source
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("CREATE TABLE kraken_schema (id INTEGER PRIMARY KEY, version INTEGER)")
    await conn.execute("INSERT INTO kraken_schema VALUES (1, $1)", VERSION + 1)
    await conn.close()
    done = await migrate_cli(path, pg_dsn)
    assert done.returncode == 2 and "newer than this Kraken" in done.stderr
    assert await pg_counts(pg_dsn) is None


@pytest.mark.parametrize("where", ["userinfo", "query"])
async def test_a_password_on_the_command_line_is_refused_and_taken_from_the_environment(
        source, pg_dsn, where):
    """argv is readable by every user of the host (ps) for as long as the copy runs: a --to URL
    holding a password is refused before anything is opened; the same URL in
    $KRAKEN_DATABASE_URL is used."""
    path, _ = source
    secret = "pw-Zq81xK3"
    if where == "userinfo":
        with_password = pg_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    else:
        with_password = f"{pg_dsn}?password={secret}"
    assert secret in with_password
    refused = await migrate_cli(path, with_password)
    assert refused.returncode == 2, refused.stderr
    assert "--to" in refused.stderr and "KRAKEN_DATABASE_URL" in refused.stderr
    assert secret not in refused.stderr + refused.stdout
    assert await pg_counts(pg_dsn) is None
    done = await migrate_cli(path, None, env={"KRAKEN_DATABASE_URL": with_password})
    assert done.returncode == 0, done.stderr
    assert secret not in done.stderr + done.stdout
