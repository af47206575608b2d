"""The owners repository: which customer created each file and batch (``/v1/files``,
``/v1/batches``), one class for both backends.

A row is metadata only: the provider holding the object, its kind (``file`` or ``batch``),
its id, the customer and when it was claimed; never a file's name or bytes. A claim of an id
already known moves it to the new claimant (a provider that answered 2xx to a create made
that object for this caller). Erasure and export walk the table by its ``customer_id``
(kraken/privacy/tables.py): nothing there names it. A claim of an erased customer (its upload
was still in flight) writes nothing, checked in the claim's transaction as a batch of records
checks (kraken/store/erased.py), so the erasure stays final.

Reached as ``store.owners``; PostgreSQL's statements are these with numbered placeholders
(kraken/store/postgres/owners.py).
"""
from __future__ import annotations

from typing import Iterable, Mapping

CHUNK = 100
"""Ids asked about per statement (``owned``): a fixed statement whatever a page holds."""

STATEMENTS: dict[str, str] = {
    "claim": "INSERT INTO object_owners (provider, kind, object_id, customer_id, created_at) "
             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider, kind, object_id) DO UPDATE "
             "SET customer_id = excluded.customer_id, created_at = excluded.created_at",
    "owner": "SELECT customer_id FROM object_owners "
             "WHERE provider = ? AND kind = ? AND object_id = ?",
    "owned": "SELECT object_id FROM object_owners "
             "WHERE provider = ? AND kind = ? AND customer_id = ? "
             f"AND object_id IN ({', '.join('?' * CHUNK)})",
}
"""SQLite's spelling (``?`` placeholders)."""


class OwnersRepository:
    """The statements of one backend; every method runs on ``db`` (a store or a transaction)."""

    __slots__ = ("_sql", "_serialise")

    def __init__(self, statements: Mapping[str, str], serialise: str | None = None) -> None:
        self._sql = statements
        self._serialise = serialise
        """Run first in a claim's transaction so an erasure cannot overlap it (PostgreSQL:
        the erasure lock shared, as a batch takes it); SQLite's writer is single already."""

    async def claim(self, db, provider: str, kind: str, object_ids: Iterable[str],
                    customer_id: str, now: float) -> None:
        """Record ``object_ids`` as the customer's (``db`` a transaction: one commit); nothing
        if the customer was erased meanwhile."""
        rows = [(provider, kind, object_id, customer_id, now) for object_id in object_ids]
        if rows and not await self._erased(db, customer_id):
            await db.executemany(self._sql["claim"], rows)

    async def _erased(self, tx, customer_id: str) -> bool:
        if self._serialise is not None:
            await tx.execute(self._serialise)
        return await tx.privacy.is_erased(tx, customer_id)

    async def owner(self, db, provider: str, kind: str, object_id: str) -> str | None:
        rows = await db.fetch_all(self._sql["owner"], (provider, kind, object_id))
        return rows[0][0] if rows else None

    async def owned(self, db, provider: str, kind: str, customer_id: str,
                    object_ids: Iterable[str]) -> set[str]:
        """Which of ``object_ids`` (a list page's) the customer owns at ``provider``: never
        every id it owns, which grows with each object it creates."""
        ids = list(dict.fromkeys(object_ids))
        out: set[str] = set()
        for at in range(0, len(ids), CHUNK):
            chunk = ids[at:at + CHUNK]
            chunk += [""] * (CHUNK - len(chunk))  # no id is empty (file_owners._ID)
            rows = await db.fetch_all(self._sql["owned"], (provider, kind, customer_id, *chunk))
            out.update(row[0] for row in rows)
        return out


SQLITE_OWNERS = OwnersRepository(STATEMENTS)
"""SQLite's owners repository (``SqliteStore.owners``)."""
