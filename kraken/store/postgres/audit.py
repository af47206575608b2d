"""The audit chain's SQL for PostgreSQL (``PostgresStore.audit``; contract: kraken/store/audit_repo.py).

Several hosts append to one chain. Each append reads the head and inserts the next link in one
transaction, so two hosts must never read the same head: ``head`` first takes
``pg_advisory_xact_lock(AUDIT_LOCK)``, held until that transaction commits or rolls back. Under
READ COMMITTED each statement sees what committed before it started, so the head read after the
lock is the last committed link. The purge takes the same lock (it moves the anchor ``head`` may
fall back to). An append costs one extra statement; admin actions are rare and off the hot path.
"""
from __future__ import annotations

from typing import Any

from kraken.store.audit_sqlite import SqliteAuditRepo
from kraken.store.postgres.accounts import numbered

AUDIT_LOCK = 0x6B72616B656E0A0D
"""``pg_advisory_xact_lock`` key serialising appends to (and purges of) the audit chain."""

_LOCK = "SELECT pg_advisory_xact_lock($1)"


class PostgresAuditRepo(SqliteAuditRepo):
    """The same statements with numbered placeholders, and appends serialised across hosts."""

    __slots__ = ()

    sql = staticmethod(numbered)

    async def serialise(self, tx: Any) -> None:
        await tx.execute(_LOCK, (AUDIT_LOCK,))


AUDIT = PostgresAuditRepo()
