"""The privacy repository: the statements behind GDPR export, erasure and the retention purge.

kraken/privacy holds the rules (which tables are account data, which columns are secret, what an
erasure removes and in which order); this holds the statements, so no SQL lives outside store/.
One class serves both backends through a ``Dialect`` (this module's ``SQLITE``;
``kraken.store.postgres.privacy.POSTGRES``): the catalogue queries, the placeholders, how an
erased customer is marked and what follows an erasure differ, the rest is the same SQL.

Reached as ``store.privacy`` (reads, the purge) and ``tx.privacy`` (inside the erasure's
transaction); methods take what they run on (``db``) first, as the accounts repository does.
Table and column names interpolated here come from the database's own catalogue, quoted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import anyio

from kraken.store import erased
from kraken.store.record import FIELD_NAMES

STATEMENTS: dict[str, str] = {
    # the catalogue: tables in creation order, then one table's columns in order
    "tables": ("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
               "ORDER BY rowid"),
    "columns": "SELECT name FROM pragma_table_info(?)",
    # erasure ({table} is a quoted catalogue name)
    "count_members": "SELECT COUNT(*) FROM members WHERE customer_id = ?",
    "tombstone_rows": "UPDATE {table} SET customer_id = ? WHERE customer_id = ?",
    "delete_rows": "DELETE FROM {table} WHERE customer_id = ?",
    "tombstone_requests": "UPDATE requests SET customer_id = ? WHERE customer_id = ?",
    "delete_requests": "DELETE FROM requests WHERE customer_id = ?",
    # an erased customer, looked up by its keyed digest (kraken/store/erased.py)
    "erasure_key": "SELECT key FROM erasure_key WHERE id = 1",
    "erased": "SELECT 1 FROM erased_customers WHERE digest = ?",
    # pending sign-up links of the address (a second link, or expired ones not yet purged),
    # compared as the customers table compares addresses
    "delete_signup_links": "DELETE FROM signup_links WHERE email = ? COLLATE NOCASE",
    # the wallet: the wallet_erasures row is what lets the schema's triggers allow the deletes
    "mark_wallet_erased": "INSERT OR IGNORE INTO wallet_erasures (wallet_id, ts) VALUES (?, ?)",
    "delete_wallet_transactions": "DELETE FROM wallet_transactions WHERE wallet_id = ?",
    "delete_wallet": "DELETE FROM wallets WHERE wallet_id = ?",
    "unmark_wallet_erased": "DELETE FROM wallet_erasures WHERE wallet_id = ?",
    # export ({select}, {order}: quoted column lists; {key}: the quoted key column)
    "account_rows": ("SELECT {select} FROM {table} WHERE {key} = ? ORDER BY {order} "
                     "LIMIT ? OFFSET ?"),
    "request_page": ("SELECT {} FROM requests WHERE customer_id = ? AND (ts > ? OR (ts = ? AND "
                     "request_id > ?)) ORDER BY ts, request_id LIMIT ?"
                     ).format(", ".join(FIELD_NAMES)),
    # retention: at most ? rows older than ? per statement
    "purge_requests": ("DELETE FROM requests WHERE rowid IN "
                       "(SELECT rowid FROM requests WHERE ts < ? LIMIT ?)"),
}
"""The statements in SQLite's spelling (``?`` placeholders), as they were in kraken/privacy."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one backend changes."""

    statements: Mapping[str, str]
    mark_erased: Callable[..., Awaitable[None]]
    """``(tx, customer_id, *, keep_billing_records)``: the erased_customers digest; called first in
    the erasure's transaction (on PostgreSQL it takes the erasure lock exclusive)."""
    after_erasure: Callable[[Any], Awaitable[bool | None]]
    """``(store)``, after the erasure committed: push the erased bytes out of the files the
    backend still keeps them in; True if it did, False if it could not this time, None if the
    backend has no such step (PostgreSQL: see ``leftovers``)."""
    request_row: Callable[[tuple], tuple]
    """A ``request_page`` row in SQLite's shape (flags as 0/1), so exports read the same."""
    leftovers: str
    """Where the erased bytes can still be after ``after_erasure`` succeeded, for the operator
    (``kraken erase`` prints it): what this backend's files keep, stated as measured."""


async def truncate_wal(store: Any, attempts: int = 50) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` until it is not blocked by a reader (bounded).

    With ``secure_delete`` on, the TRUNCATE checkpoint moves the last page images out of the WAL
    and empties it, so the erased bytes are in neither the database file nor ``-wal``/``-shm``.
    """
    for _ in range(attempts):
        rows = await store.fetch_all("PRAGMA wal_checkpoint(TRUNCATE)")
        if rows and rows[0][0] == 0:
            return True
        await anyio.sleep(0.05)
    return False


def _same(row: tuple) -> tuple:
    return row


SQLITE = Dialect(STATEMENTS, erased.mark, truncate_wal, _same, leftovers=(
    "with secure_delete on and the WAL truncated, none of the database, -wal and -shm files "
    "holds the erased rows; copies and backups taken before keep them until they expire"))


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PrivacyRepository:
    """The privacy statements of one backend. Stateless: every method runs on ``db``, a store
    (reads outside a transaction) or an open transaction."""

    __slots__ = ("_d", "_sql")

    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect
        self._sql = dialect.statements

    # -- the catalogue ----------

    async def tables(self, db) -> list[tuple[str, list[str]]]:
        """``(table, columns)`` of every table, in creation order."""
        out = []
        for (name,) in await db.fetch_all(self._sql["tables"]):
            cols = [r[0] for r in await db.fetch_all(self._sql["columns"], (name,))]
            out.append((name, cols))
        return out

    # -- erasure ----------

    async def mark_erased(self, tx, customer_id: str, *, keep_billing_records: bool) -> None:
        """Record the erasure (kraken/store/erased.py); first in the erasure's transaction."""
        await self._d.mark_erased(tx, customer_id, keep_billing_records=keep_billing_records)

    async def after_erasure(self, store) -> bool | None:
        return await self._d.after_erasure(store)

    @property
    def leftovers(self) -> str:
        """Where erased bytes may remain on this backend (``Dialect.leftovers``)."""
        return self._d.leftovers

    async def is_erased(self, db, customer_id: str) -> bool:
        """Whether ``customer_id`` was erased. A write that may end after an erasure (a file's
        claim, a wallet credit, an audit entry) asks in its own transaction, so the id never
        comes back; on PostgreSQL the caller serialises with the erasure as it must."""
        (key,), = await db.fetch_all(self._sql["erasure_key"])
        rows = await db.fetch_all(self._sql["erased"], (erased.digest(bytes(key), customer_id),))
        return bool(rows)

    async def count_members(self, db, customer_id: str) -> int:
        rows = await db.fetch_all(self._sql["count_members"], (customer_id,))
        return int(rows[0][0]) if rows else 0

    async def tombstone_rows(self, db, table: str, tombstone: str, customer_id: str) -> int:
        """Replace ``customer_id`` by ``tombstone`` in ``table`` (a catalogue name)."""
        sql = self._sql["tombstone_rows"].format(table=quoted(table))
        return await db.execute(sql, (tombstone, customer_id))

    async def delete_rows(self, db, table: str, customer_id: str) -> int:
        sql = self._sql["delete_rows"].format(table=quoted(table))
        return await db.execute(sql, (customer_id,))

    async def tombstone_requests(self, db, tombstone: str, customer_id: str) -> int:
        return await db.execute(self._sql["tombstone_requests"], (tombstone, customer_id))

    async def delete_requests(self, db, customer_id: str) -> int:
        return await db.execute(self._sql["delete_requests"], (customer_id,))

    async def delete_signup_links(self, db, email: str) -> int:
        """Delete the sign-up links of ``email`` (compared case-insensitively); rows deleted."""
        return await db.execute(self._sql["delete_signup_links"], (email,))

    async def erase_wallet(self, db, wallet_id: str, now: float) -> int:
        """Delete the wallet and its transactions (rows deleted), leaving no erasure marker."""
        await db.execute(self._sql["mark_wallet_erased"], (wallet_id, now))
        deleted = await db.execute(self._sql["delete_wallet_transactions"], (wallet_id,))
        deleted += await db.execute(self._sql["delete_wallet"], (wallet_id,))
        await db.execute(self._sql["unmark_wallet_erased"], (wallet_id,))
        return deleted

    # -- export ----------

    async def account_rows(self, db, table: str, columns: Sequence[str], key: str, value: str,
                           limit: int, offset: int) -> list[tuple]:
        """One page of ``table``'s rows whose ``key`` is ``value``, ordered by all ``columns``."""
        shown = ", ".join(quoted(c) for c in columns)
        sql = self._sql["account_rows"].format(select=shown, table=quoted(table),
                                               key=quoted(key), order=shown)
        return await db.fetch_all(sql, (value, limit, offset))

    async def request_page(self, db, customer_id: str, after: tuple[float, str],
                           limit: int) -> list[tuple]:
        """Request rows (FIELD_NAMES order) after ``(ts, request_id)``, oldest first."""
        ts, rid = after
        rows = await db.fetch_all(self._sql["request_page"], (customer_id, ts, ts, rid, limit))
        return [self._d.request_row(r) for r in rows]

    # -- retention ----------

    async def purge_requests(self, db, before: float, limit: int) -> int:
        """Delete up to ``limit`` request rows older than ``before``; rows deleted."""
        return await db.execute(self._sql["purge_requests"], (before, limit))


SQLITE_PRIVACY = PrivacyRepository(SQLITE)
"""SQLite's privacy repository (``SqliteStore.privacy``)."""
