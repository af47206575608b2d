"""The audit chain's SQL for PostgreSQL (``PostgresStore.audit``; contract: kraken/store/audit_repo.py).

Several hosts append to one chain. Each append reads the head and inserts the next link in one
transaction, so two hosts must never read the same head: ``head`` first takes
``pg_advisory_xact_lock(AUDIT_LOCK)``, held until that transaction commits or rolls back. Under
READ COMMITTED each statement sees what committed before it started, so the head read after the
lock is the last committed link. The purge takes the same lock (it moves the anchor ``head`` may
fall back to). An append costs one extra statement; admin actions are rare and off the hot path.
"""
from __future__ import annotations

from typing import Any, Sequence

from kraken.store.audit_repo import BIGGEST_SEQ, COLUMNS, ENTRY_COLUMNS, Reader

AUDIT_LOCK = 0x6B72616B656E0A0D
"""``pg_advisory_xact_lock`` key serialising appends to (and purges of) the audit chain."""

_COLUMNS = ", ".join(COLUMNS)
_INSERT = (f"INSERT INTO audit_log ({_COLUMNS}) "
           f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})")
_LOCK = "SELECT pg_advisory_xact_lock($1)"
_ANCHOR = "SELECT last_seq, last_hash FROM audit_anchor WHERE id = 1"
_PURGE_POINT = (
    "SELECT seq, hash FROM audit_log WHERE ts < $1 AND seq < "
    f"COALESCE((SELECT MIN(seq) FROM audit_log WHERE ts >= $1), {BIGGEST_SEQ}) "
    "ORDER BY seq DESC LIMIT 1")
_MOVE_ANCHOR = (
    "INSERT INTO audit_anchor (id, last_seq, last_hash, purged_at) VALUES (1, $1, $2, $3) "
    "ON CONFLICT (id) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
    "last_hash = EXCLUDED.last_hash, purged_at = EXCLUDED.purged_at")


class PostgresAuditRepo:
    """Stateless: one instance serves every PostgresStore and transaction."""

    __slots__ = ()

    async def head(self, tx: Any) -> tuple[int, str] | None:
        await tx.execute(_LOCK, (AUDIT_LOCK,))
        row = await tx.fetch_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        if row is None:
            row = await tx.fetch_one(_ANCHOR)
        return (int(row[0]), str(row[1])) if row else None

    async def insert(self, tx: Any, row: Sequence[Any]) -> None:
        await tx.execute(_INSERT, tuple(row))

    async def redact(self, tx: Any, customer_id: str) -> int:
        n = await tx.execute(
            "UPDATE audit_log SET target = NULL, subject = NULL WHERE subject = $1", (customer_id,))
        return n + await tx.execute("UPDATE audit_log SET target = NULL WHERE target = $1",
                                    (customer_id,))

    async def anchor(self, q: Reader) -> tuple[int, str] | None:
        rows = await q.fetch_all(_ANCHOR)
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    async def rows(self, q: Reader, first_seq: int, last_seq: int, limit: int) -> list[tuple]:
        return await q.fetch_all(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            (first_seq, last_seq, limit))

    async def lowest_seq_below(self, q: Reader, seq: int) -> int | None:
        rows = await q.fetch_all("SELECT MIN(seq) FROM audit_log WHERE seq < $1", (seq,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def purge_point(self, q: Reader, cutoff_ts: float) -> tuple[int, str] | None:
        rows = await q.fetch_all(_PURGE_POINT, (float(cutoff_ts),))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    async def purge(self, tx: Any, last_seq: int, last_hash: str, now: float) -> int:
        await tx.execute(_LOCK, (AUDIT_LOCK,))
        await tx.execute(_MOVE_ANCHOR, (last_seq, last_hash, float(now)))
        return await tx.execute("DELETE FROM audit_log WHERE seq <= $1", (last_seq,))

    async def entries(self, q: Reader, after_seq: int, limit: int,
                      subject: str | None) -> list[tuple]:
        sql = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_log WHERE seq > $1"
        params: list[Any] = [after_seq]
        if subject is not None:
            sql += " AND subject = $2"
            params.append(subject)
        return await q.fetch_all(sql + f" ORDER BY seq LIMIT ${len(params) + 1}", (*params, limit))


AUDIT = PostgresAuditRepo()
