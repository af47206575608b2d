"""The email change links repository: pending changes of a customer's address, one class for
both backends (kraken/accounts/email_change.py holds the rules).

A row is what a link needs to apply its change and nothing more: the SHA-256 of the link's
token (never the token), the customer, the new address and when the link stops working. A
link is used by deleting its row (``consume``), so two concurrent confirmations cannot both
apply it, as with sign-up links (kraken/store/signup_sql.py). ``lock`` serialises the
requests of one customer across PostgreSQL hosts (an advisory lock for the transaction), so
the per-customer bound holds; SQLite's single writer already does.

Reached as ``store.email_changes`` / ``tx.email_changes``; PostgreSQL's statements are these
with numbered placeholders (kraken/store/postgres/email_changes.py).
"""
from __future__ import annotations

from typing import Mapping

STATEMENTS: dict[str, str] = {
    "lock": "",  # SQLite: the transaction's write lock is already the only one
    "insert": "INSERT INTO email_change_links (token_hash, customer_id, email, created_at, "
              "expires_at) VALUES (?, ?, ?, ?, ?)",
    "pending": "SELECT expires_at FROM email_change_links WHERE customer_id = ? "
               "AND expires_at > ? ORDER BY expires_at",
    "live": "SELECT 1 FROM email_change_links WHERE token_hash = ? AND expires_at > ?",
    "consume": "DELETE FROM email_change_links WHERE token_hash = ? "
               "RETURNING customer_id, email, expires_at",
    "delete": "DELETE FROM email_change_links WHERE token_hash = ?",
    "delete_of_customer": "DELETE FROM email_change_links WHERE customer_id = ?",
    "purge": "DELETE FROM email_change_links WHERE expires_at <= ?",
}
"""SQLite's spelling (``?`` placeholders)."""


class EmailChangesRepository:
    """The statements of one backend; every method runs on ``db`` (a store or a transaction)."""

    __slots__ = ("_sql",)

    def __init__(self, statements: Mapping[str, str]) -> None:
        self._sql = statements

    async def lock(self, db, customer_id: str) -> None:
        """Hold the customer's change requests until ``db`` (a transaction) ends."""
        if self._sql["lock"]:
            await db.execute(self._sql["lock"], ("email_change:" + customer_id,))

    async def insert(self, db, token_hash: str, customer_id: str, email: str,
                     created_at: float, expires_at: float) -> None:
        await db.execute(self._sql["insert"],
                         (token_hash, customer_id, email, created_at, expires_at))

    async def pending(self, db, customer_id: str, now: float) -> list[float]:
        """When each of the customer's live links expires, soonest first."""
        return [float(r[0]) for r in await db.fetch_all(self._sql["pending"],
                                                        (customer_id, now))]

    async def live(self, db, token_hash: str, now: float) -> bool:
        """Is there an unexpired link with this hash (a read: nothing is used up)?"""
        return bool(await db.fetch_all(self._sql["live"], (token_hash, now)))

    async def consume(self, db, token_hash: str) -> tuple[str, str, float] | None:
        """Delete the link and return its (customer_id, email, expires_at); None if there was
        none. The caller checks the expiry: an expired link is gone too."""
        rows = await db.fetch_all(self._sql["consume"], (token_hash,))
        return (rows[0][0], rows[0][1], float(rows[0][2])) if rows else None

    async def delete(self, db, token_hash: str) -> None:
        await db.execute(self._sql["delete"], (token_hash,))

    async def delete_of_customer(self, db, customer_id: str) -> int:
        """Every pending change of the customer (one was applied: the others are stale)."""
        return await db.execute(self._sql["delete_of_customer"], (customer_id,))

    async def purge(self, db, now: float) -> int:
        """Delete every expired link; how many went."""
        return await db.execute(self._sql["purge"], (now,))


SQLITE_EMAIL_CHANGES = EmailChangesRepository(STATEMENTS)
"""SQLite's email change links repository (``SqliteStore.email_changes``)."""
