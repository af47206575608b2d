"""The accounts statements in PostgreSQL's spelling (kraken/store/accounts_sql.py runs them).

Placeholders are numbered (``$1``); flags bind as booleans; an email is compared through
``lower()`` on both sides, which is what the unique index ``customers_email`` is built on
(SQLite compares through the column's NOCASE collation instead).
"""
from __future__ import annotations

import re

from kraken.store.accounts_sql import CUSTOMER_COLS, STATEMENTS, AccountsRepository, Dialect
from kraken.store.errors import StoreDataError, StoreError

_MARK = re.compile(r"\?")
ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"
"""A transaction-scoped lock named by a text (accounts' caps, invitations, email changes)."""


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, ... (the statements quote no literal ``?``)."""
    counter = iter(range(1, 1000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)


_EMAIL = {
    "customer_by_email": f"SELECT {CUSTOMER_COLS} FROM customers WHERE lower(email) = lower(?)",
    "email_taken": "SELECT 1 FROM customers WHERE lower(email) = lower(?)",
    "email_taken_by_other": "SELECT 1 FROM customers WHERE lower(email) = lower(?) AND id <> ?",
}

_SPELLED = {
    **_EMAIL,
    "lock": ADVISORY_LOCK,
    # Held to the transaction's end: a second one waits, then counts what the first committed
    # (READ COMMITTED lets two transactions each count two owners and each demote one).
    # NO KEY UPDATE: members' foreign-key checks (KEY SHARE) on the row are not blocked.
    "lock_organisation": "SELECT 1 FROM organisations WHERE id = ? FOR NO KEY UPDATE",
    # The rotation's read (kraken/accounts/byok.py): each row it will write back is locked, so
    # a key another host stores meanwhile waits and lands after it, not under it.
    "byok_sealed": ("SELECT customer_id, provider, key_version, nonce, ciphertext FROM byok_keys "
                    "FOR NO KEY UPDATE"),
    # The identity's high-water mark (NULL until first used), not MAX(seq) of the rows kept.
    "last_key_event": ("SELECT COALESCE(pg_sequence_last_value("
                       "pg_get_serial_sequence('key_events', 'seq')::regclass), 0)"),
}

STATEMENTS_PG: dict[str, str] = {name: numbered(_SPELLED.get(name, sql))
                                 for name, sql in STATEMENTS.items()}


def _duplicate(exc: StoreError) -> bool:
    # kraken/store/postgres/errors.py names the SQLSTATE: 23505 is unique_violation.
    return isinstance(exc, StoreDataError) and "(23505)" in str(exc)


POSTGRES = Dialect(STATEMENTS_PG, lambda n: f"${n}", bool, _duplicate)
POSTGRES_ACCOUNTS = AccountsRepository(POSTGRES)
"""PostgreSQL's accounts repository (``PostgresStore.accounts``)."""
