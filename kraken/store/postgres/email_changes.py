"""The email change links statements in PostgreSQL's spelling (kraken/store/email_changes_sql.py
runs them): the same SQL with numbered placeholders, and ``lock`` an advisory lock held until
the transaction ends (hosts requesting one customer's changes at once take turns)."""
from __future__ import annotations

from kraken.store.email_changes_sql import STATEMENTS, EmailChangesRepository
from kraken.store.postgres.accounts import ADVISORY_LOCK, numbered

POSTGRES_EMAIL_CHANGES = EmailChangesRepository(
    {name: numbered(ADVISORY_LOCK if name == "lock" else sql) for name, sql in STATEMENTS.items()})
"""PostgreSQL's email change links repository (``PostgresStore.email_changes``)."""
