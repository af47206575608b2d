"""The accounts repository: customers, organisations, members, API keys, key events, BYOK rows.

kraken/accounts holds the rules (validation, roles, crypto); this holds the statements, so no
SQL lives outside store/. One class serves both backends: the SQL differs only in placeholders,
how a flag is bound and how a duplicate email is recognised, so each backend gives a
``Dialect`` (this module's ``SQLITE``; ``kraken.store.postgres.accounts.POSTGRES``).

Each store exposes its backend's repository as ``store.accounts`` (and each transaction as
``tx.accounts``); methods take what they run on (``db``) first, as the audit repository does.
Rows come back as plain tuples in the column order named beside each statement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from kraken.store.errors import StoreDataError, StoreError

CUSTOMER_COLS = "id, email, name, plan, opted_out, created_at"
KEY_COLS = ("id, customer_id, org_id, name, created_at, expires_at, revoked_at, allowed_models, "
            "rpm, tpm, max_concurrent, token_budget, spend_budget_usd")
"""Columns of a key as listed, in order. ``hash`` is deliberately not among them."""
CUSTOMER_CHANGES = frozenset({"email", "name", "plan", "opted_out"})
KEY_CHANGES = frozenset({"name", "expires_at", "allowed_models", "rpm", "tpm", "max_concurrent",
                         "token_budget", "spend_budget_usd"})
"""The only columns an update may name (column names never come from input)."""

STATEMENTS: dict[str, str] = {
    "lock": "",  # SQLite: the transaction's write lock is already the only one
    # customers: rows are CUSTOMER_COLS
    "customer": f"SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?",
    "customer_by_email": f"SELECT {CUSTOMER_COLS} FROM customers WHERE email = ?",
    "email_taken": "SELECT 1 FROM customers WHERE email = ?",
    "email_taken_by_other": "SELECT 1 FROM customers WHERE email = ? AND id <> ?",
    "customer_exists": "SELECT 1 FROM customers WHERE id = ?",
    "insert_customer": f"INSERT INTO customers ({CUSTOMER_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
    "customers_after": f"SELECT {CUSTOMER_COLS} FROM customers WHERE id > ? ORDER BY id LIMIT ?",
    "orgs_of_customer": "SELECT org_id FROM members WHERE customer_id = ?",
    "delete_customer": "DELETE FROM customers WHERE id = ?",
    "delete_org_if_empty": ("DELETE FROM organisations WHERE id = ? "
                            "AND NOT EXISTS (SELECT 1 FROM members WHERE org_id = ?)"),
    # organisations: rows are (id, name, created_at)
    "organisation": "SELECT id, name, created_at FROM organisations WHERE id = ?",
    "organisation_exists": "SELECT 1 FROM organisations WHERE id = ?",
    # SQLite: BEGIN IMMEDIATE already made this transaction the only writer (PostgreSQL locks
    # the row: kraken/store/postgres/accounts.py)
    "lock_organisation": "SELECT 1 FROM organisations WHERE id = ?",
    "organisations": "SELECT id, name, created_at FROM organisations ORDER BY id",
    "organisations_of": ("SELECT o.id, o.name, o.created_at FROM organisations o "
                         "JOIN members m ON m.org_id = o.id WHERE m.customer_id = ? ORDER BY o.id"),
    "organisations_after": ("SELECT id, name, created_at FROM organisations WHERE id > ? "
                            "ORDER BY id LIMIT ?"),
    "organisations_of_after": ("SELECT o.id, o.name, o.created_at FROM organisations o "
                               "JOIN members m ON m.org_id = o.id WHERE m.customer_id = ? "
                               "AND o.id > ? ORDER BY o.id LIMIT ?"),
    "insert_organisation": "INSERT INTO organisations (id, name, created_at) VALUES (?, ?, ?)",
    "rename_organisation": "UPDATE organisations SET name = ? WHERE id = ?",
    "delete_organisation": "DELETE FROM organisations WHERE id = ?",
    # members: rows are (org_id, customer_id, role, created_at)
    "member": "SELECT role, created_at FROM members WHERE org_id = ? AND customer_id = ?",
    "is_member": "SELECT 1 FROM members WHERE org_id = ? AND customer_id = ?",
    "insert_member": ("INSERT INTO members (org_id, customer_id, role, created_at) "
                      "VALUES (?, ?, ?, ?)"),
    "set_member_role": "UPDATE members SET role = ? WHERE org_id = ? AND customer_id = ?",
    "delete_member": "DELETE FROM members WHERE org_id = ? AND customer_id = ?",
    "members": ("SELECT org_id, customer_id, role, created_at FROM members WHERE org_id = ? "
                "ORDER BY created_at, customer_id"),
    "members_first": ("SELECT org_id, customer_id, role, created_at FROM members WHERE org_id = ? "
                      "ORDER BY created_at, customer_id LIMIT ?"),
    "members_after": ("SELECT org_id, customer_id, role, created_at FROM members WHERE org_id = ? "
                      "AND (created_at > ? OR (created_at = ? AND customer_id > ?)) "
                      "ORDER BY created_at, customer_id LIMIT ?"),
    "member_count": "SELECT COUNT(*) FROM members WHERE org_id = ?",
    "owners": "SELECT COUNT(*) FROM members WHERE org_id = ? AND role = 'owner'",
    # API keys: rows are KEY_COLS
    "insert_key": ("INSERT INTO api_keys (id, customer_id, org_id, name, hash, created_at, "
                   "expires_at, allowed_models, rpm, tpm, max_concurrent, token_budget, "
                   "spend_budget_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    "key": f"SELECT {KEY_COLS} FROM api_keys WHERE id = ?",
    "key_count": "SELECT COUNT(*) FROM api_keys WHERE customer_id = ?",
    "revoke_key": "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
    "delete_key": "DELETE FROM api_keys WHERE id = ?",
    "member_keys": ("SELECT id FROM api_keys WHERE org_id = ? AND customer_id = ? "
                    "AND revoked_at IS NULL ORDER BY id"),
    "revoke_member_keys": ("UPDATE api_keys SET revoked_at = ? WHERE org_id = ? "
                           "AND customer_id = ? AND revoked_at IS NULL"),
    "usable_key": (  # the gateway's lookup on a key-cache miss (kraken/accounts/keystore.py)
        "SELECT k.hash, k.customer_id, k.rpm, k.tpm, k.max_concurrent, k.allowed_models, "
        "c.plan, c.opted_out, k.token_budget, k.spend_budget_usd, k.expires_at "
        "FROM api_keys k JOIN customers c ON c.id = k.customer_id "
        "WHERE k.id = ? AND k.revoked_at IS NULL"),
    # key events (written by triggers; polled by kraken/accounts/revocation.py)
    "last_key_event": ("SELECT COALESCE((SELECT seq FROM sqlite_sequence "
                       "WHERE name = 'key_events'), 0)"),  # AUTOINCREMENT's high-water mark
    "newest_key_event": "SELECT COALESCE(MAX(seq), 0) FROM key_events",  # committed, kept
    "key_events_after": "SELECT seq, key_id FROM key_events WHERE seq > ? ORDER BY seq LIMIT ?",
    "key_events_before": "SELECT 1 FROM key_events WHERE ts < ? LIMIT 1",
    "purge_key_events": "DELETE FROM key_events WHERE ts < ?",
    # BYOK ciphertexts: entries are (customer_id, provider, key_version, created_at, updated_at)
    "upsert_byok": (
        "INSERT INTO byok_keys (customer_id, provider, key_version, nonce, ciphertext,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (customer_id, provider) DO UPDATE SET key_version = excluded.key_version,"
        " nonce = excluded.nonce, ciphertext = excluded.ciphertext,"
        " updated_at = excluded.updated_at"),
    "byok_created_at": "SELECT created_at FROM byok_keys WHERE customer_id = ? AND provider = ?",
    "delete_byok": "DELETE FROM byok_keys WHERE customer_id = ? AND provider = ?",
    "byok_entries": ("SELECT customer_id, provider, key_version, created_at, updated_at "
                     "FROM byok_keys ORDER BY customer_id, provider"),
    "byok_entries_of": ("SELECT customer_id, provider, key_version, created_at, updated_at "
                        "FROM byok_keys WHERE customer_id = ? ORDER BY customer_id, provider"),
    "byok_sealed": "SELECT customer_id, provider, key_version, nonce, ciphertext FROM byok_keys",
    "byok_sealed_of": ("SELECT provider, key_version, nonce, ciphertext FROM byok_keys "
                       "WHERE customer_id = ?"),
    "reseal_byok": ("UPDATE byok_keys SET key_version = ?, nonce = ?, ciphertext = ?"
                    " WHERE customer_id = ? AND provider = ?"),
    "byok_state": "SELECT generation, keys FROM byok_state WHERE id = 1",
}
"""The statements in SQLite's spelling (``?`` placeholders); the email ones compare through the
column's NOCASE collation."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one backend changes: its statements, placeholders, flags, duplicate detection."""

    statements: Mapping[str, str]
    placeholder: Callable[[int], str]
    """The n-th (1-based) parameter's marker, for the statements built per call (updates)."""
    flag: Callable[[bool], Any]
    """A boolean as its column takes it."""
    duplicate: Callable[[StoreError], bool]
    """True if the error is a UNIQUE violation (the email is the only one an account write
    can break: ids are random)."""


def _sqlite_duplicate(exc: StoreError) -> bool:
    # The message names only the SQLite code (SQLITE_CONSTRAINT_UNIQUE), never row content.
    return isinstance(exc, StoreDataError) and "UNIQUE" in str(exc)


SQLITE = Dialect(STATEMENTS, lambda _n: "?", int, _sqlite_duplicate)


class AccountsRepository:
    """The accounts statements of one backend. Stateless: every method runs on ``db``, a store
    (reads outside a transaction) or an open transaction (reads and writes)."""

    __slots__ = ("_d", "_sql")

    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect
        self._sql = dialect.statements

    def is_duplicate(self, exc: StoreError) -> bool:
        return self._d.duplicate(exc)

    async def lock(self, db, name: str) -> None:
        """Hold ``name`` until ``db`` (a transaction) ends: a cap counted, then inserted under
        it, holds across PostgreSQL hosts (an advisory lock; READ COMMITTED would let each
        count the same rows). SQLite's single writer already serialises: nothing to do."""
        if self._sql["lock"]:
            await db.execute(self._sql["lock"], (name,))

    async def _rows(self, db, name: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await db.fetch_all(self._sql[name], params)

    async def _one(self, db, name: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = await db.fetch_all(self._sql[name], params)
        return rows[0] if rows else None

    async def _run(self, db, name: str, params: Sequence[Any] = ()) -> int:
        return await db.execute(self._sql[name], params)

    def _sets(self, changes: Mapping[str, Any], allowed: frozenset[str]) -> str:
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not an updatable column: {sorted(unknown)}")
        return ", ".join(f"{col} = {self._d.placeholder(i)}" for i, col in enumerate(changes, 1))

    # -- customers -------------------------------------------------------------------------

    async def customer(self, db, customer_id: str) -> tuple | None:
        return await self._one(db, "customer", (customer_id,))

    async def customer_by_email(self, db, email: str) -> tuple | None:
        return await self._one(db, "customer_by_email", (email,))

    async def customer_exists(self, db, customer_id: str) -> bool:
        return await self._one(db, "customer_exists", (customer_id,)) is not None

    async def email_taken(self, db, email: str, *, other_than: str | None = None) -> bool:
        """Is the address (compared case-insensitively) used by a customer (but ``other_than``)?"""
        if other_than is None:
            return await self._one(db, "email_taken", (email,)) is not None
        return await self._one(db, "email_taken_by_other", (email, other_than)) is not None

    async def insert_customer(self, db, customer_id: str, email: str, name: str | None, plan: str,
                              opted_out: bool, created_at: float) -> None:
        await self._run(db, "insert_customer",
                        (customer_id, email, name, plan, self._d.flag(opted_out), created_at))

    async def customers_after(self, db, after: str, limit: int) -> list[tuple]:
        return await self._rows(db, "customers_after", (after, limit))

    async def update_customer(self, db, customer_id: str, changes: Mapping[str, Any]) -> None:
        """Set the named columns (of CUSTOMER_CHANGES); ``opted_out`` is a bool."""
        values = [self._d.flag(v) if col == "opted_out" else v for col, v in changes.items()]
        sql = (f"UPDATE customers SET {self._sets(changes, CUSTOMER_CHANGES)} "
               f"WHERE id = {self._d.placeholder(len(values) + 1)}")
        await db.execute(sql, (*values, customer_id))

    async def delete_customer(self, db, customer_id: str) -> bool:
        """Delete (cascading to keys and memberships) and drop organisations left memberless."""
        orgs = await self._rows(db, "orgs_of_customer", (customer_id,))
        deleted = await self._run(db, "delete_customer", (customer_id,))
        for (org_id,) in orgs:
            await self._run(db, "delete_org_if_empty", (org_id, org_id))
        return deleted > 0

    # -- organisations and members -----------------------------------------------------------

    async def organisation(self, db, org_id: str) -> tuple | None:
        return await self._one(db, "organisation", (org_id,))

    async def organisation_exists(self, db, org_id: str) -> bool:
        return await self._one(db, "organisation_exists", (org_id,)) is not None

    async def organisations(self, db, customer_id: str | None = None, *, after: str = "",
                            limit: int | None = None) -> list[tuple]:
        """By id; with ``limit``, at most that many after the id ``after``."""
        if limit is None:
            if customer_id is None:
                return await self._rows(db, "organisations")
            return await self._rows(db, "organisations_of", (customer_id,))
        if customer_id is None:
            return await self._rows(db, "organisations_after", (after, limit))
        return await self._rows(db, "organisations_of_after", (customer_id, after, limit))

    async def lock_organisation(self, db, org_id: str) -> None:
        """Make ``db`` (a transaction) the only one changing the organisation's members until
        it ends, so a rule over all of them (at least one owner) holds when two change at once."""
        await self._rows(db, "lock_organisation", (org_id,))

    async def insert_organisation(self, db, org_id: str, name: str, created_at: float) -> None:
        await self._run(db, "insert_organisation", (org_id, name, created_at))

    async def rename_organisation(self, db, org_id: str, name: str) -> bool:
        return await self._run(db, "rename_organisation", (name, org_id)) > 0

    async def delete_organisation(self, db, org_id: str) -> bool:
        return await self._run(db, "delete_organisation", (org_id,)) > 0

    async def member(self, db, org_id: str, customer_id: str) -> tuple | None:
        """(role, created_at), or None if not a member."""
        return await self._one(db, "member", (org_id, customer_id))

    async def is_member(self, db, org_id: str, customer_id: str) -> bool:
        return await self._one(db, "is_member", (org_id, customer_id)) is not None

    async def insert_member(self, db, org_id: str, customer_id: str, role: str,
                            created_at: float) -> None:
        await self._run(db, "insert_member", (org_id, customer_id, role, created_at))

    async def set_member_role(self, db, org_id: str, customer_id: str, role: str) -> None:
        await self._run(db, "set_member_role", (role, org_id, customer_id))

    async def delete_member(self, db, org_id: str, customer_id: str) -> None:
        await self._run(db, "delete_member", (org_id, customer_id))

    async def members(self, db, org_id: str, *, after: tuple[float, str] | None = None,
                      limit: int | None = None) -> list[tuple]:
        """By (created_at, customer_id); with ``limit``, at most that many after ``after``
        (that position: a member's created_at and customer_id)."""
        if limit is None:
            return await self._rows(db, "members", (org_id,))
        if after is None:
            return await self._rows(db, "members_first", (org_id, limit))
        since, customer_id = after
        return await self._rows(db, "members_after", (org_id, since, since, customer_id, limit))

    async def member_count(self, db, org_id: str) -> int:
        row = await self._one(db, "member_count", (org_id,))
        return int(row[0])

    async def owners(self, db, org_id: str) -> int:
        row = await self._one(db, "owners", (org_id,))
        return int(row[0])

    # -- API keys and their events -------------------------------------------------------------

    async def insert_key(self, db, row: Sequence[Any]) -> None:
        """``row``: id, customer_id, org_id, name, hash, created_at, expires_at, allowed_models,
        rpm, tpm, max_concurrent, token_budget, spend_budget_usd."""
        await self._run(db, "insert_key", row)

    async def key(self, db, key_id: str) -> tuple | None:
        return await self._one(db, "key", (key_id,))

    async def keys(self, db, *, customer_id: str | None = None, org_id: str | None = None,
                   personal: bool = False, include_revoked: bool = True,
                   after: tuple[float, str] | None = None, limit: int | None = None
                   ) -> list[tuple]:
        """Newest first (then by id), filtered by customer and/or organisation (``personal``:
        keys of none); at most ``limit`` of those after ``after`` (that position: a key's
        created_at and id)."""
        where, params = [], []
        mark = self._d.placeholder
        if customer_id is not None:
            params.append(customer_id)
            where.append(f"customer_id = {self._d.placeholder(len(params))}")
        if org_id is not None:
            params.append(org_id)
            where.append(f"org_id = {self._d.placeholder(len(params))}")
        if personal:
            where.append("org_id IS NULL")
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if after is not None:
            params.extend((after[0], after[0], after[1]))
            n = len(params)
            where.append(f"(created_at < {mark(n - 2)} OR "
                         f"(created_at = {mark(n - 1)} AND id > {mark(n)}))")
        sql = f"SELECT {KEY_COLS} FROM api_keys"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT {mark(len(params))}"
        return await db.fetch_all(sql, params)

    async def key_count(self, db, customer_id: str) -> int:
        """The customer's keys, revoked ones included (every one is a row of its listings)."""
        row = await self._one(db, "key_count", (customer_id,))
        return int(row[0])

    async def update_key(self, db, key_id: str, changes: Mapping[str, Any]) -> None:
        """Set the named columns (of KEY_CHANGES)."""
        sql = (f"UPDATE api_keys SET {self._sets(changes, KEY_CHANGES)} "
               f"WHERE id = {self._d.placeholder(len(changes) + 1)}")
        await db.execute(sql, (*changes.values(), key_id))

    async def revoke_key(self, db, key_id: str, at: float) -> None:
        """Set revoked_at unless already revoked (the first time is kept)."""
        await self._run(db, "revoke_key", (at, key_id))

    async def delete_key(self, db, key_id: str) -> bool:
        return await self._run(db, "delete_key", (key_id,)) > 0

    async def revoke_member_keys(self, db, org_id: str, customer_id: str,
                                 at: float) -> list[str]:
        """Revoke the customer's unrevoked keys in the organisation; their ids."""
        ids = [r[0] for r in await self._rows(db, "member_keys", (org_id, customer_id))]
        if ids:
            await self._run(db, "revoke_member_keys", (at, org_id, customer_id))
        return ids

    async def usable_key(self, db, key_id: str) -> tuple | None:
        """(hash, customer_id, rpm, tpm, max_concurrent, allowed_models, plan, opted_out,
        token_budget, spend_budget_usd, expires_at) of an unrevoked key, or None."""
        return await self._one(db, "usable_key", (key_id,))

    async def last_key_event(self, db) -> int:
        row = await self._one(db, "last_key_event")
        return int(row[0])

    async def newest_key_event(self, db) -> int:
        """The newest event number committed and not purged (0 if none is kept)."""
        row = await self._one(db, "newest_key_event")
        return int(row[0])

    async def key_events_after(self, db, seq: int, limit: int) -> list[tuple]:
        """(seq, key_id) rows, oldest first."""
        return await self._rows(db, "key_events_after", (seq, limit))

    async def key_events_in(self, db, seqs: Sequence[int]) -> list[tuple]:
        """(seq, key_id) rows of the given event numbers that exist (committed) by now."""
        marks = ", ".join(self._d.placeholder(i) for i in range(1, len(seqs) + 1))
        return await db.fetch_all(
            f"SELECT seq, key_id FROM key_events WHERE seq IN ({marks}) ORDER BY seq", seqs)

    async def key_events_before(self, db, ts: float) -> bool:
        return await self._one(db, "key_events_before", (ts,)) is not None

    async def purge_key_events(self, db, ts: float) -> None:
        await self._run(db, "purge_key_events", (ts,))

    # -- BYOK ciphertexts -----------------------------------------------------------------------

    async def upsert_byok(self, db, customer_id: str, provider: str, key_version: int, nonce: bytes,
                          ciphertext: bytes, now: float) -> float | None:
        """Insert or replace the ciphertext; return the row's created_at."""
        await self._run(db, "upsert_byok",
                        (customer_id, provider, key_version, nonce, ciphertext, now, now))
        row = await self._one(db, "byok_created_at", (customer_id, provider))
        return row[0] if row else None

    async def delete_byok(self, db, customer_id: str, provider: str) -> bool:
        return await self._run(db, "delete_byok", (customer_id, provider)) > 0

    async def byok_entries(self, db, customer_id: str | None = None) -> list[tuple]:
        if customer_id is None:
            return await self._rows(db, "byok_entries")
        return await self._rows(db, "byok_entries_of", (customer_id,))

    async def byok_sealed(self, db) -> list[tuple]:
        """(customer_id, provider, key_version, nonce, ciphertext) of every stored key, held
        until ``db`` (the rotation's transaction) ends: nobody else changes them meanwhile."""
        return await self._rows(db, "byok_sealed")

    async def byok_sealed_of(self, db, customer_id: str) -> list[tuple]:
        """(provider, key_version, nonce, ciphertext) of one customer's keys."""
        return await self._rows(db, "byok_sealed_of", (customer_id,))

    async def reseal_byok(self, db, rows: Sequence[Sequence[Any]]) -> None:
        """(key_version, nonce, ciphertext, customer_id, provider) per row."""
        await db.executemany(self._sql["reseal_byok"], rows)

    async def byok_state(self, db) -> tuple[int, int]:
        row = await self._one(db, "byok_state")
        return (row[0], row[1]) if row else (0, 0)


SQLITE_ACCOUNTS = AccountsRepository(SQLITE)
"""SQLite's accounts repository (``SqliteStore.accounts``)."""
