"""The audit log is append-only and hash-chained: tampering is found and named."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from kraken import audit
from kraken.store.errors import StoreError
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


async def _log(path, n: int, *, start: float = 1_000_000.0) -> None:
    store = await SqliteStore.open(str(path))
    try:
        for i in range(n):
            await audit.record(store, actor="cli:test", action="customer.update",
                               target=f"cus_{i}", subject=f"cus_{i}", detail={"fields": ["name"]},
                               now=start + i)
    finally:
        await store.close()


def _sql(path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for stmt in statements:
            conn.execute(stmt)
        conn.commit()
    finally:
        conn.close()


def _verify_cli(path, tmp_path) -> subprocess.CompletedProcess:
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[store]\npath = "{path}"\n')
    return subprocess.run([sys.executable, "-m", "kraken", "audit", "verify", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)


async def _verify(path):
    store = await SqliteStore.open(str(path))
    try:
        return await audit.verify(store)
    finally:
        await store.close()


async def test_an_untouched_chain_verifies(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 5)
    result = await _verify(db)
    assert result.ok and result.checked == 5
    out = _verify_cli(db, tmp_path)
    assert out.returncode == 0 and "OK: 5 entries" in out.stdout and result.head_hash in out.stdout


@pytest.mark.parametrize("edit, reason", [
    ("UPDATE audit_log SET detail = '{\"fields\":[\"email\"]}' WHERE seq = 3", "content"),
    ("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3", "content"),
    ("UPDATE audit_log SET target = 'cus_999' WHERE seq = 3", "target was altered"),
    ("UPDATE audit_log SET ts = ts + 1 WHERE seq = 3", "content"),
    ("DELETE FROM audit_log WHERE seq = 3", "entry 3 is missing"),
])
async def test_editing_a_row_with_sqlite3_is_detected_and_named(tmp_path, edit, reason):
    db = tmp_path / "k.db"
    await _log(db, 5)
    # An attacker with the file can drop the guards; the chain still gives them away.
    _sql(db, "DROP TRIGGER audit_log_append_only", "DROP TRIGGER audit_log_purge_only", edit)
    result = await _verify(db)
    assert not result.ok and result.bad_seq in (3, 4) and reason in result.reason
    out = _verify_cli(db, tmp_path)
    assert out.returncode == 1 and "TAMPERED at entry" in out.stdout
    assert f"entry {result.bad_seq}" in out.stdout


async def test_recomputing_one_hash_breaks_the_next_link(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 4)
    _sql(db, "DROP TRIGGER audit_log_append_only",
         "UPDATE audit_log SET hash = '" + "f" * 64 + "' WHERE seq = 2")
    result = await _verify(db)
    assert not result.ok and result.bad_seq == 2


async def test_triggers_refuse_updates_and_deletes(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 2)
    for stmt in ("UPDATE audit_log SET action = 'x' WHERE seq = 1",
                 "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(sqlite3.IntegrityError):
            _sql(db, stmt)
    store = await SqliteStore.open(str(db))
    try:
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.execute("UPDATE audit_log SET detail = '{}' WHERE seq = 2")
    finally:
        await store.close()


async def test_redaction_on_erasure_keeps_the_chain_valid(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 3)
    store = await SqliteStore.open(str(db))
    try:
        async with store.transaction() as tx:
            assert await audit.redact_subject(tx, "cus_1") == 1
        result = await audit.verify(store)
        entries = await audit.list_entries(store)
    finally:
        await store.close()
    assert result.ok and result.checked == 3
    assert [(e.target, e.subject) for e in entries] == [
        ("cus_0", "cus_0"), (None, None), ("cus_2", "cus_2")]
    assert b"cus_1" not in db.read_bytes()


async def test_purge_moves_the_anchor_and_the_rest_still_verifies(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 6, start=1000.0)
    store = await SqliteStore.open(str(db))
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
    _sql(db, "UPDATE audit_anchor SET last_hash = '" + "0" * 64 + "'")
    result = await _verify(db)
    assert not result.ok and result.bad_seq == 4


async def test_purge_refuses_to_destroy_a_tampered_prefix(tmp_path):
    db = tmp_path / "k.db"
    await _log(db, 4, start=1000.0)
    _sql(db, "DROP TRIGGER audit_log_append_only",
         "UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    store = await SqliteStore.open(str(db))
    try:
        with pytest.raises(audit.AuditTampered) as err:
            await audit.purge_before(store, 1003.0)
        assert err.value.result.bad_seq == 2
        assert len(await audit.list_entries(store)) == 4
    finally:
        await store.close()


def test_details_never_hold_secrets():
    from kraken.audit.chain import canonical_detail

    for bad in ({"secret": "x"}, {"key_hash": "x"}, {"note": "kr_live_abc_" + "A" * 30},
                {"note": "sk-abcdefghijklmnop"}, {"h": "$2b$12$abc"}):
        with pytest.raises(ValueError):
            canonical_detail(bad)
    assert canonical_detail({"b": 1, "a": ["x"]}) == '{"a":["x"],"b":1}'
