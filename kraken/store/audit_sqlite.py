"""The audit chain's SQL for SQLite (``SqliteStore.audit``; contract: kraken/store/audit_repo.py).

Appends need no lock of their own: every write transaction is ``BEGIN IMMEDIATE``, so SQLite's
single writer already orders them, across processes too.
"""
from __future__ import annotations

from typing import Any, Sequence

from kraken.store.audit_repo import BIGGEST_SEQ, COLUMNS, ENTRY_COLUMNS, Reader

_COLUMNS = ", ".join(COLUMNS)
_INSERT = f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_ANCHOR = "SELECT last_seq, last_hash FROM audit_anchor WHERE id = 1"
_PURGE_POINT = (
    "SELECT seq, hash FROM audit_log WHERE ts < ? AND seq < "
    f"COALESCE((SELECT MIN(seq) FROM audit_log WHERE ts >= ?), {BIGGEST_SEQ}) "
    "ORDER BY seq DESC LIMIT 1")
_MOVE_ANCHOR = (
    "INSERT INTO audit_anchor (id, last_seq, last_hash, purged_at) VALUES (1, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, "
    "last_hash = excluded.last_hash, purged_at = excluded.purged_at")


class SqliteAuditRepo:
    """Stateless: one instance serves every SqliteStore and transaction.

    The statements are written once, in SQLite's spelling; PostgreSQL's repository
    (kraken/store/postgres/audit.py) renames the placeholders (``sql``) and serialises the
    appends of several hosts (``serialise``)."""

    __slots__ = ()

    @staticmethod
    def sql(statement: str) -> str:
        """``statement`` in this backend's placeholder spelling."""
        return statement

    async def serialise(self, tx: Any) -> None:
        """Make this transaction the chain's only writer until it ends (SQLite: BEGIN IMMEDIATE
        already did)."""

    async def head(self, tx: Any) -> tuple[int, str] | None:
        await self.serialise(tx)
        row = await tx.fetch_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        if row is None:
            row = await tx.fetch_one(_ANCHOR)
        return (int(row[0]), str(row[1])) if row else None

    async def insert(self, tx: Any, row: Sequence[Any]) -> None:
        """Append ``row``; a target or subject naming a customer erased by now (a call that read
        it before the erasure audits after it) is blanked as ``redact`` would have blanked it,
        its digests kept. Called after ``head``: no erasure's redaction is in progress (on
        PostgreSQL the audit lock orders them; never the erasure lock here, which an erasure
        takes before the audit lock)."""
        row = list(row)
        target, subject = row[4], row[5]
        if subject is not None and await tx.privacy.is_erased(tx, subject):
            row[4] = row[5] = None
        elif target is not None and await tx.privacy.is_erased(tx, target):
            row[4] = None
        await tx.execute(self.sql(_INSERT), tuple(row))

    async def redact(self, tx: Any, customer_id: str, actors: Sequence[str] = ()) -> int:
        named = f"(actor IN ({', '.join('?' for _ in actors)}) AND actor_digest <> '')" \
            if actors else "FALSE"
        return await tx.execute(self.sql(
            "UPDATE audit_log SET "
            "target = CASE WHEN subject = ? OR target = ? THEN NULL ELSE target END, "
            "subject = CASE WHEN subject = ? THEN NULL ELSE subject END, "
            f"actor = CASE WHEN {named} THEN '' ELSE actor END "
            f"WHERE subject = ? OR target = ? OR {named}"),
            (customer_id, customer_id, customer_id, *actors, customer_id, customer_id, *actors))

    async def key_targets(self, tx: Any, customer_id: str) -> list[str]:
        rows = await tx.fetch_all(self.sql(
            "SELECT DISTINCT target FROM audit_log WHERE subject = ? AND action LIKE 'key.%' "
            "AND target IS NOT NULL"), (customer_id,))
        return [str(r[0]) for r in rows]

    async def anchor(self, q: Reader) -> tuple[int, str] | None:
        rows = await q.fetch_all(_ANCHOR)
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    async def rows(self, q: Reader, first_seq: int, last_seq: int, limit: int) -> list[tuple]:
        return await q.fetch_all(self.sql(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"),
            (first_seq, last_seq, limit))

    async def lowest_seq_below(self, q: Reader, seq: int) -> int | None:
        rows = await q.fetch_all(self.sql("SELECT MIN(seq) FROM audit_log WHERE seq < ?"), (seq,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def purge_point(self, q: Reader, cutoff_ts: float) -> tuple[int, str] | None:
        cutoff = float(cutoff_ts)
        rows = await q.fetch_all(self.sql(_PURGE_POINT), (cutoff, cutoff))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    async def purge(self, tx: Any, last_seq: int, last_hash: str, now: float) -> int:
        await self.serialise(tx)  # it moves the anchor ``head`` may fall back to
        await tx.execute(self.sql(_MOVE_ANCHOR), (last_seq, last_hash, float(now)))
        return await tx.execute(self.sql("DELETE FROM audit_log WHERE seq <= ?"), (last_seq,))

    async def entries(self, q: Reader, after_seq: int, limit: int,
                      subject: str | None) -> list[tuple]:
        sql = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_log WHERE seq > ?"
        params: list[Any] = [after_seq]
        if subject is not None:
            sql += " AND subject = ?"
            params.append(subject)
        return await q.fetch_all(self.sql(sql + " ORDER BY seq LIMIT ?"), (*params, limit))


AUDIT = SqliteAuditRepo()
