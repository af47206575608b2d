"""Writing, reading, verifying and purging the audit log (schema slot 3).

Every admin action appends one entry inside the transaction that performs it, so the
action and its entry commit together. Entries are never updated (a trigger refuses it)
except to blank ``target``/``subject`` on erasure; they are deleted only by the retention
purge, which first moves the anchor (the hash of the last purged entry) so the remaining
chain still verifies from it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from kraken.audit.chain import GENESIS, canonical_detail, digest, entry_hash, new_salt
from kraken.store.sqlite import SqliteStore, Tx

_PAGE = 1000
_COLUMNS = ("seq, ts, actor, action, target, subject, salt, target_digest, subject_digest, "
            "detail, prev_hash, hash")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts: float
    actor: str
    action: str
    target: str | None
    subject: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action,
                "target": self.target, "subject": self.subject,
                "detail": orjson.loads(self.detail)}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    head_hash: str
    bad_seq: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "head_hash": self.head_hash,
                "bad_seq": self.bad_seq, "reason": self.reason}


async def _tail(tx: Tx) -> tuple[int, str]:
    row = await tx.fetch_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    if row is None:
        row = await tx.fetch_one("SELECT last_seq, last_hash FROM audit_anchor WHERE id = 1")
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


async def append(tx: Tx, *, actor: str, action: str, target: str | None = None,
                 subject: str | None = None, detail: dict[str, Any] | None = None,
                 now: float | None = None) -> int:
    """Append one entry inside ``tx`` (the action's own transaction); returns its seq.

    ``subject`` is the customer the action concerns (blanked when that customer is erased);
    ``detail`` must hold no secrets and no personal data (field names, counts, flags).
    """
    text = canonical_detail(detail)
    last_seq, prev = await _tail(tx)
    seq, ts, salt = last_seq + 1, time.time() if now is None else float(now), new_salt()
    t_digest, s_digest = digest(salt, target), digest(salt, subject)
    h = entry_hash(prev, seq, ts, actor, action, salt, t_digest, s_digest, text)
    await tx.execute(
        f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, actor, action, target, subject, salt, t_digest, s_digest, text, prev, h))
    return seq


def cli_actor() -> str:
    """``cli:<os user>`` for entries written by the ``kraken`` command."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


async def record(store: SqliteStore, **entry: Any) -> int:
    """``append`` in a transaction of its own (actions that write nothing else)."""
    async with store.transaction() as tx:
        return await append(tx, **entry)


async def redact_subject(tx: Tx, customer_id: str) -> int:
    """Blank target/subject of every entry about ``customer_id`` (erasure); chain intact."""
    n = await tx.execute("UPDATE audit_log SET target = NULL, subject = NULL WHERE subject = ?",
                         (customer_id,))
    return n + await tx.execute("UPDATE audit_log SET target = NULL WHERE target = ?",
                                (customer_id,))


async def verify(store: SqliteStore, *, upto_seq: int | None = None) -> VerifyResult:
    """Walk the chain from the anchor (or genesis); name the first entry that does not fit.

    Catches edited, inserted, reordered and deleted-in-the-middle entries. Cutting the
    newest entries off the end cannot be seen from inside the file: compare ``head_hash``
    with a copy kept elsewhere (``kraken audit verify`` prints it).
    """
    anchor = await store.fetch_all("SELECT last_seq, last_hash FROM audit_anchor WHERE id = 1")
    expected_seq, prev = (int(anchor[0][0]) + 1, str(anchor[0][1])) if anchor else (1, GENESIS)
    checked, start = 0, expected_seq
    limit = upto_seq if upto_seq is not None else 2**62
    while True:
        rows = await store.fetch_all(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (expected_seq, limit, _PAGE))
        if not rows:
            break
        for (seq, ts, actor, action, target, subject, salt, t_dig, s_dig, detail,
             prev_hash, h) in rows:
            bad = _check_row(expected_seq, prev, seq, ts, actor, action, target, subject, salt,
                             t_dig, s_dig, detail, prev_hash, h)
            if bad:
                return VerifyResult(False, checked, prev, seq, bad)
            checked += 1
            expected_seq, prev = seq + 1, h
        if len(rows) < _PAGE:
            break
    if upto_seq is None:  # an entry slipped in below the anchor is outside the chain
        stray = await store.fetch_all("SELECT MIN(seq) FROM audit_log WHERE seq < ?", (start,))
        if stray and stray[0][0] is not None:
            return VerifyResult(False, checked, prev, int(stray[0][0]),
                                "entry below the purge anchor")
    return VerifyResult(True, checked, prev)


def _check_row(expected_seq: int, prev: str, seq: int, ts: float, actor: str, action: str,
               target: str | None, subject: str | None, salt: str, t_dig: str, s_dig: str,
               detail: str, prev_hash: str, h: str) -> str:
    if seq != expected_seq:
        return f"entry {expected_seq} is missing (next is {seq})"
    if prev_hash != prev:
        return "prev_hash does not match the previous entry"
    if target is not None and digest(salt, target) != t_dig:
        return "target was altered"
    if subject is not None and digest(salt, subject) != s_dig:
        return "subject was altered"
    if entry_hash(prev, seq, ts, actor, action, salt, t_dig, s_dig, detail) != h:
        return "entry content does not match its hash"
    return ""


async def purge_before(store: SqliteStore, cutoff_ts: float) -> int:
    """Delete the oldest entries written before ``cutoff_ts``; returns how many.

    Only a prefix of the chain is removed, and only if it verifies (a tampered log is kept
    as evidence). The anchor then holds the last purged entry's seq and hash.
    """
    rows = await store.fetch_all(
        "SELECT seq, hash FROM audit_log WHERE ts < ? AND seq < "
        "COALESCE((SELECT MIN(seq) FROM audit_log WHERE ts >= ?), 9223372036854775807) "
        "ORDER BY seq DESC LIMIT 1", (cutoff_ts, cutoff_ts))
    if not rows:
        return 0
    last_seq, last_hash = int(rows[0][0]), str(rows[0][1])
    result = await verify(store, upto_seq=last_seq)
    if not result.ok:
        raise AuditTampered(result)
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO audit_anchor (id, last_seq, last_hash, purged_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, "
            "last_hash = excluded.last_hash, purged_at = excluded.purged_at",
            (last_seq, last_hash, time.time()))
        return await tx.execute("DELETE FROM audit_log WHERE seq <= ?", (last_seq,))


class AuditTampered(Exception):
    """The audit chain failed verification; ``result`` names the entry."""

    def __init__(self, result: VerifyResult):
        super().__init__(f"audit log entry {result.bad_seq}: {result.reason}")
        self.result = result


async def list_entries(store: SqliteStore, *, after_seq: int = 0, limit: int = 100,
                       subject: str | None = None) -> list[AuditEntry]:
    """Entries after ``after_seq`` (keyset pagination), oldest first."""
    sql = "SELECT seq, ts, actor, action, target, subject, detail FROM audit_log WHERE seq > ?"
    params: list[Any] = [after_seq]
    if subject is not None:
        sql += " AND subject = ?"
        params.append(subject)
    rows = await store.fetch_all(sql + " ORDER BY seq LIMIT ?", (*params, limit))
    return [AuditEntry(*row) for row in rows]
