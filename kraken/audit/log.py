"""Writing, reading, verifying and purging the audit log (schema slot 3).

Every admin action appends one entry inside the transaction that performs it, so the
action and its entry commit together. Entries are never updated (a trigger refuses it)
except to blank ``target``/``subject`` and (where the entry has its digest) ``actor`` on
erasure; they are deleted only by the retention purge, which first moves the anchor (the
hash of the last purged entry) so the remaining chain still verifies from it.

The rules live here; the SQL is the store's (``store.audit`` / ``tx.audit``, one repository per
backend: kraken/store/audit_repo.py), so the same chain runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from kraken.audit.chain import GENESIS, canonical_detail, digest, entry_hash, new_salt
from kraken.store.audit_repo import AuditRepo
from kraken.store.interface import Store, Tx

_PAGE = 1000


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


async def append(tx: Tx, *, actor: str, action: str, target: str | None = None,
                 subject: str | None = None, detail: dict[str, Any] | None = None,
                 now: float | None = None) -> int:
    """Append one entry inside ``tx`` (the action's own transaction); returns its seq.

    ``subject`` is the customer the action concerns (blanked when that customer is erased);
    ``detail`` must hold no secrets and no personal data (field names, counts, flags).
    Reading the head holds off every other appender, on any host, until ``tx`` ends.
    """
    text = canonical_detail(detail)
    repo: AuditRepo = tx.audit
    last_seq, prev = await repo.head(tx) or (0, GENESIS)
    seq, ts, salt = last_seq + 1, time.time() if now is None else float(now), new_salt()
    t_digest, s_digest = digest(salt, target), digest(salt, subject)
    a_digest = digest(salt, actor)
    h = entry_hash(prev, seq, ts, a_digest, action, salt, t_digest, s_digest, text)
    await repo.insert(tx, (seq, ts, actor, action, target, subject, salt, t_digest, s_digest,
                           text, prev, h, a_digest))
    return seq


def cli_actor() -> str:
    """``cli:<os user>`` for entries written by the ``kraken`` command."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


async def record(store: Store, **entry: Any) -> int:
    """``append`` in a transaction of its own (actions that write nothing else)."""
    async with store.transaction() as tx:
        return await append(tx, **entry)


async def customer_actors(tx: Tx, customer_id: str) -> list[str]:
    """The actors naming ``customer_id``'s keys (``key:<id>``), deleted keys too: call it
    before the keys and the entries' targets go."""
    keys = {row[0] for row in await tx.accounts.keys(tx, customer_id=customer_id)}
    keys.update(await tx.audit.key_targets(tx, customer_id))
    return sorted("key:" + key for key in keys)


async def redact_subject(tx: Tx, customer_id: str, actors: Sequence[str] = ()) -> int:
    """Blank target/subject of every entry about ``customer_id`` and the ``actors`` naming its
    keys (erasure); chain intact. Entries written before actors had a digest keep theirs."""
    repo: AuditRepo = tx.audit
    return await repo.redact(tx, customer_id, actors)


async def verify(store: Store, *, upto_seq: int | None = None) -> VerifyResult:
    """Walk the chain from the anchor (or genesis); name the first entry that does not fit.

    Catches edited, inserted, reordered and deleted-in-the-middle entries. Cutting the
    newest entries off the end cannot be seen from inside the file: compare ``head_hash``
    with a copy kept elsewhere (``kraken audit verify`` prints it).
    """
    repo: AuditRepo = store.audit
    anchor = await repo.anchor(store)
    expected_seq, prev = (anchor[0] + 1, anchor[1]) if anchor else (1, GENESIS)
    checked, start = 0, expected_seq
    limit = upto_seq if upto_seq is not None else 2**62
    while True:
        rows = await repo.rows(store, expected_seq, limit, _PAGE)
        if not rows:
            break
        for (seq, ts, actor, action, target, subject, salt, t_dig, s_dig, detail,
             prev_hash, h, a_dig) in rows:
            bad = _check_row(expected_seq, prev, seq, ts, actor, action, target, subject, salt,
                             t_dig, s_dig, detail, prev_hash, h, a_dig)
            if bad:
                return VerifyResult(False, checked, prev, seq, bad)
            checked += 1
            expected_seq, prev = seq + 1, h
        if len(rows) < _PAGE:
            break
    if upto_seq is None:  # an entry slipped in below the anchor is outside the chain
        stray = await repo.lowest_seq_below(store, start)
        if stray is not None:
            return VerifyResult(False, checked, prev, stray, "entry below the purge anchor")
    return VerifyResult(True, checked, prev)


def _check_row(expected_seq: int, prev: str, seq: int, ts: float, actor: str, action: str,
               target: str | None, subject: str | None, salt: str, t_dig: str, s_dig: str,
               detail: str, prev_hash: str, h: str, a_dig: str = "") -> str:
    """Why the row does not fit the chain, or "". An entry with an actor digest (since schema
    10) is hashed over it, so a blanked actor still verifies; an older one over the actor."""
    if seq != expected_seq:
        return f"entry {expected_seq} is missing (next is {seq})"
    if prev_hash != prev:
        return "prev_hash does not match the previous entry"
    if target is not None and digest(salt, target) != t_dig:
        return "target was altered"
    if subject is not None and digest(salt, subject) != s_dig:
        return "subject was altered"
    if a_dig and actor and digest(salt, actor) != a_dig:
        return "actor was altered"
    if entry_hash(prev, seq, ts, a_dig or actor, action, salt, t_dig, s_dig, detail) != h:
        return "entry content does not match its hash"
    return ""


async def purge_before(store: Store, cutoff_ts: float) -> int:
    """Delete the oldest entries written before ``cutoff_ts``; returns how many.

    Only a prefix of the chain is removed, and only if it verifies (a tampered log is kept
    as evidence). The anchor then holds the last purged entry's seq and hash.
    """
    repo: AuditRepo = store.audit
    point = await repo.purge_point(store, cutoff_ts)
    if point is None:
        return 0
    last_seq, last_hash = point
    result = await verify(store, upto_seq=last_seq)
    if not result.ok:
        raise AuditTampered(result)
    async with store.transaction() as tx:
        return await repo.purge(tx, last_seq, last_hash, time.time())


class AuditTampered(Exception):
    """The audit chain failed verification; ``result`` names the entry."""

    def __init__(self, result: VerifyResult):
        super().__init__(f"audit log entry {result.bad_seq}: {result.reason}")
        self.result = result


async def list_entries(store: Store, *, after_seq: int = 0, limit: int = 100,
                       subject: str | None = None) -> list[AuditEntry]:
    """Entries after ``after_seq`` (keyset pagination), oldest first."""
    repo: AuditRepo = store.audit
    return [AuditEntry(*row) for row in await repo.entries(store, after_seq, limit, subject)]
