"""The sign-up links repository: pending one-time links (issue 15), one class for both backends.

A row is what a link needs to create its account and nothing more: the SHA-256 of the link's
token (never the token), the address the customer will have, and when the link stops
working. A link is used by deleting its row (``consume``), so two concurrent confirmations
cannot both get it: SQLite's writer is single, PostgreSQL's row lock makes the second DELETE
find nothing. Expired rows are purged on every sign-up request and confirmation.

Reached as ``store.signup`` / ``tx.signup``; PostgreSQL's statements are these with numbered
placeholders (kraken/store/postgres/signup.py).
"""
from __future__ import annotations

from typing import Mapping

STATEMENTS: dict[str, str] = {
    "insert": "INSERT INTO signup_links (token_hash, email, created_at, expires_at) "
              "VALUES (?, ?, ?, ?)",
    "live": "SELECT 1 FROM signup_links WHERE token_hash = ? AND expires_at > ?",
    "consume": "DELETE FROM signup_links WHERE token_hash = ? RETURNING email, expires_at",
    "delete": "DELETE FROM signup_links WHERE token_hash = ?",
    "purge": "DELETE FROM signup_links WHERE expires_at <= ?",
}
"""SQLite's spelling (``?`` placeholders)."""


class SignupRepository:
    """The statements of one backend; every method runs on ``db`` (a store or a transaction)."""

    __slots__ = ("_sql",)

    def __init__(self, statements: Mapping[str, str]) -> None:
        self._sql = statements

    async def insert(self, db, token_hash: str, email: str, created_at: float,
                     expires_at: float) -> None:
        await db.execute(self._sql["insert"], (token_hash, email, created_at, expires_at))

    async def live(self, db, token_hash: str, now: float) -> bool:
        """Is there an unexpired link with this hash (a read: nothing is used up)?"""
        return bool(await db.fetch_all(self._sql["live"], (token_hash, now)))

    async def consume(self, db, token_hash: str) -> tuple[str, float] | None:
        """Delete the link and return its (email, expires_at); None if there was none (already
        used, or never issued). The caller checks the expiry: an expired link is gone too."""
        rows = await db.fetch_all(self._sql["consume"], (token_hash,))
        return (rows[0][0], float(rows[0][1])) if rows else None

    async def delete(self, db, token_hash: str) -> None:
        await db.execute(self._sql["delete"], (token_hash,))

    async def purge(self, db, now: float) -> int:
        """Delete every expired link; how many went."""
        return await db.execute(self._sql["purge"], (now,))


SQLITE_SIGNUP = SignupRepository(STATEMENTS)
"""SQLite's sign-up links repository (``SqliteStore.signup``)."""
