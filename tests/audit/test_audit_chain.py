"""The audit log is append-only and hash-chained: tampering is found and named.

Every behaviour is proven once per backend: a fresh SQLite file, or a fresh database on this
module's PostgreSQL server. "Tampering" is done the way someone with direct access to the
database would: sqlite3 on the file, or a plain PostgreSQL connection, guards dropped first.
"""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from postgres_server import pg_server  # noqa: F401  (module-scoped fixture)
from kraken import audit
from kraken.store.errors import StoreError
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


@dataclass
class Backend:
    name: str
    open: Callable[[], Awaitable[Any]]
    """Open a store on this test's database (each call: another process or host)."""
    raw: Callable[..., Awaitable[None]]
    """Run statements straight on the database, outside Kraken, committing each."""
    integrity_error: type[Exception]
    path: Path | None = None
    """The SQLite file (None on PostgreSQL)."""

    def drop_trigger(self, name: str) -> str:
        return f"DROP TRIGGER {name}" + (" ON audit_log" if self.name == "postgres" else "")

    def drop_guards(self) -> tuple[str, str]:
        return (self.drop_trigger("audit_log_append_only"),
                self.drop_trigger("audit_log_purge_only"))


def _sqlite_backend(path: Path) -> Backend:
    async def raw(*statements: str) -> None:
        conn = sqlite3.connect(path)
        try:
            for stmt in statements:
                conn.execute(stmt)
            conn.commit()
        finally:
            conn.close()

    return Backend("sqlite", lambda: SqliteStore.open(str(path)), raw, sqlite3.IntegrityError, path)


def _postgres_backend(dsn: str) -> Backend:
    import asyncpg

    from kraken.store.postgres import PostgresStore

    async def raw(*statements: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for stmt in statements:
                await conn.execute(stmt)
        finally:
            await conn.close()

    return Backend("postgres", lambda: PostgresStore.open(dsn), raw,
                   asyncpg.IntegrityConstraintViolationError)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path / "k.db")
    return _postgres_backend(request.getfixturevalue("pg_server").create_database())


async def _log(backend: Backend, n: int, *, start: float = 1_000_000.0) -> None:
    store = await backend.open()
    try:
        for i in range(n):
            await audit.record(store, actor="cli:test", action="customer.update",
                               target=f"cus_{i}", subject=f"cus_{i}", detail={"fields": ["name"]},
                               now=start + i)
    finally:
        await store.close()


def _verify_cli(path, tmp_path) -> subprocess.CompletedProcess:
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[store]\npath = "{path}"\n')
    return subprocess.run([sys.executable, "-m", "kraken", "audit", "verify", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)


async def _verify(backend: Backend):
    store = await backend.open()
    try:
        return await audit.verify(store)
    finally:
        await store.close()


async def test_an_untouched_chain_verifies(backend, tmp_path):
    await _log(backend, 5)
    result = await _verify(backend)
    assert result.ok and result.checked == 5
    if backend.path:  # `kraken audit verify` reads [store] path (no PostgreSQL option yet)
        out = _verify_cli(backend.path, tmp_path)
        assert out.returncode == 0 and "OK: 5 entries" in out.stdout and result.head_hash in out.stdout


@pytest.mark.parametrize("edit, reason", [
    ("UPDATE audit_log SET detail = '{\"fields\":[\"email\"]}' WHERE seq = 3", "content"),
    ("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3", "actor was altered"),
    ("UPDATE audit_log SET target = 'cus_999' WHERE seq = 3", "target was altered"),
    ("UPDATE audit_log SET ts = ts + 1 WHERE seq = 3", "content"),
    ("DELETE FROM audit_log WHERE seq = 3", "entry 3 is missing"),
])
async def test_editing_a_row_behind_krakens_back_is_detected_and_named(backend, tmp_path, edit,
                                                                       reason):
    await _log(backend, 5)
    # An attacker with the database can drop the guards; the chain still gives them away.
    await backend.raw(*backend.drop_guards(), edit)
    result = await _verify(backend)
    assert not result.ok and result.bad_seq in (3, 4) and reason in result.reason
    if backend.path:
        out = _verify_cli(backend.path, tmp_path)
        assert out.returncode == 1 and "TAMPERED at entry" in out.stdout
        assert f"entry {result.bad_seq}" in out.stdout


async def test_recomputing_one_hash_breaks_the_next_link(backend):
    await _log(backend, 4)
    await backend.raw(backend.drop_trigger("audit_log_append_only"),
                      "UPDATE audit_log SET hash = '" + "f" * 64 + "' WHERE seq = 2")
    result = await _verify(backend)
    assert not result.ok and result.bad_seq == 2


async def test_triggers_refuse_updates_and_deletes(backend):
    await _log(backend, 2)
    for stmt in ("UPDATE audit_log SET action = 'x' WHERE seq = 1",
                 "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(backend.integrity_error):
            await backend.raw(stmt)
    store = await backend.open()
    try:
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.execute("UPDATE audit_log SET detail = '{}' WHERE seq = 2")
    finally:
        await store.close()


async def test_redaction_on_erasure_keeps_the_chain_valid(backend):
    await _log(backend, 3)
    store = await backend.open()
    try:
        async with store.transaction() as tx:
            assert await audit.redact_subject(tx, "cus_1") == 1
        result = await audit.verify(store)
        entries = await audit.list_entries(store)
        assert [e.seq for e in await audit.list_entries(store, subject="cus_2")] == [3]
    finally:
        await store.close()
    assert result.ok and result.checked == 3
    assert [(e.target, e.subject) for e in entries] == [
        ("cus_0", "cus_0"), (None, None), ("cus_2", "cus_2")]
    if backend.path:
        assert b"cus_1" not in backend.path.read_bytes()


async def test_erasure_blanks_an_actor_naming_the_customers_key_and_the_chain_holds(backend):
    store = await backend.open()
    try:
        for actor, subject in (("key:k1", "cus_1"), ("key:k1", "cus_2"), ("key:k2", "cus_2")):
            await audit.record(store, actor=actor, action="customer.update", subject=subject)
        async with store.transaction() as tx:
            assert await audit.redact_subject(tx, "cus_1", ["key:k1"]) == 2
        assert (await audit.verify(store)).ok
        assert [(e.actor, e.subject) for e in await audit.list_entries(store)] == [
            ("", None), ("", "cus_2"), ("key:k2", "cus_2")]
    finally:
        await store.close()
    if backend.path:
        assert b"key:k1" not in backend.path.read_bytes()
    # the blank is all the trigger allows, and a changed actor is still caught
    for stmt in ("UPDATE audit_log SET actor = 'key:k9' WHERE seq = 3",
                 "UPDATE audit_log SET actor_digest = '' WHERE seq = 3"):
        with pytest.raises(backend.integrity_error):
            await backend.raw(stmt)
    await backend.raw(backend.drop_trigger("audit_log_append_only"),
                      "UPDATE audit_log SET actor = 'key:k9' WHERE seq = 3")
    result = await _verify(backend)
    assert not result.ok and result.bad_seq == 3 and "actor was altered" in result.reason


async def test_an_entry_written_before_actor_digests_verifies_and_keeps_its_actor(backend):
    """Schema 10 added the actor's digest: an older entry, hashed over the actor itself, still
    verifies, and its actor cannot be blanked (the chain would break)."""
    from kraken.audit.chain import GENESIS, digest, entry_hash

    h = entry_hash(GENESIS, 1, 1000.0, "key:k1", "customer.update", "s", digest("s", "cus_1"),
                   digest("s", "cus_1"), "{}")
    await (await backend.open()).close()  # the schema, then the old row as it was written
    await backend.raw(
        "INSERT INTO audit_log (seq, ts, actor, action, target, subject, salt, target_digest, "
        f"subject_digest, detail, prev_hash, hash) VALUES (1, 1000.0, 'key:k1', "
        f"'customer.update', 'cus_1', 'cus_1', 's', '{digest('s', 'cus_1')}', "
        f"'{digest('s', 'cus_1')}', '{{}}', '{GENESIS}', '{h}')")
    store = await backend.open()
    try:
        await audit.record(store, actor="key:k1", action="customer.update", subject="cus_1")
        async with store.transaction() as tx:
            assert await audit.redact_subject(tx, "cus_1", ["key:k1"]) == 2
        assert (await audit.verify(store)).ok
        assert [e.actor for e in await audit.list_entries(store)] == ["key:k1", ""]
    finally:
        await store.close()
    with pytest.raises(backend.integrity_error):
        await backend.raw("UPDATE audit_log SET actor = '' WHERE seq = 1")


async def test_purge_moves_the_anchor_and_the_rest_still_verifies(backend):
    await _log(backend, 6, start=1000.0)
    store = await backend.open()
    try:
        assert await audit.purge_before(store, 1003.0) == 3
        result = await audit.verify(store)
        assert result.ok and result.checked == 3
        await audit.record(store, actor="cli:test", action="customer.update", target="cus_9")
        assert (await audit.verify(store)).ok
        seqs = [e.seq for e in await audit.list_entries(store)]
        assert seqs == [4, 5, 6, 7]
    finally:
        await store.close()
    # The anchor cannot be moved to hide an edit: the next entry no longer links to it.
    await backend.raw("UPDATE audit_anchor SET last_hash = '" + "0" * 64 + "'")
    result = await _verify(backend)
    assert not result.ok and result.bad_seq == 4


async def test_an_emptied_chain_continues_from_its_anchor(backend):
    await _log(backend, 3, start=1000.0)
    store = await backend.open()
    try:
        assert await audit.purge_before(store, 2000.0) == 3
        assert await audit.list_entries(store) == []
        assert await audit.record(store, actor="cli:test", action="customer.update") == 4
        result = await audit.verify(store)
        assert result.ok and result.checked == 1
    finally:
        await store.close()


async def test_purge_refuses_to_destroy_a_tampered_prefix(backend):
    await _log(backend, 4, start=1000.0)
    await backend.raw(backend.drop_trigger("audit_log_append_only"),
                      "UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    store = await backend.open()
    try:
        with pytest.raises(audit.AuditTampered) as err:
            await audit.purge_before(store, 1003.0)
        assert err.value.result.bad_seq == 2
        assert len(await audit.list_entries(store)) == 4
    finally:
        await store.close()


async def test_two_hosts_appending_at_once_keep_one_chain(backend):
    """Each append reads the head and links to it: two writers must never read the same head."""
    hosts = [await backend.open(), await backend.open()]  # two pools / connections on one database
    try:
        seqs = await asyncio.gather(*(
            audit.record(hosts[i % 2], actor=f"admin:host{i % 2}", action="key.update",
                         target=f"key_{i}", subject=f"cus_{i % 7}", detail={"n": i})
            for i in range(200)))
        result = await audit.verify(hosts[1])
        entries = await audit.list_entries(hosts[0], limit=500)
    finally:
        for host in hosts:
            await host.close()
    assert result.ok and result.checked == 200, result
    assert sorted(seqs) == list(range(1, 201)) == [e.seq for e in entries]
    assert {e.actor for e in entries} == {"admin:host0", "admin:host1"}


async def test_a_purge_on_one_host_while_the_other_appends_keeps_one_chain(backend):
    await _log(backend, 50, start=1000.0)
    hosts = [await backend.open(), await backend.open()]
    try:
        done = await asyncio.gather(
            audit.purge_before(hosts[0], 1030.0),
            *(audit.record(hosts[1], actor="admin:host1", action="key.update", target=f"key_{i}")
              for i in range(50)))
        result = await audit.verify(hosts[0])
    finally:
        for host in hosts:
            await host.close()
    assert done[0] == 30
    assert result.ok and result.checked == 70, result


def test_details_never_hold_secrets():
    from kraken.audit.chain import canonical_detail

    for bad in ({"secret": "x"}, {"key_hash": "x"}, {"note": "kr_live_abc_" + "A" * 30},
                {"note": "sk-abcdefghijklmnop"}, {"h": "$2b$12$abc"}):
        with pytest.raises(ValueError):
            canonical_detail(bad)
    assert canonical_detail({"b": 1, "a": ["x"]}) == '{"a":["x"],"b":1}'
