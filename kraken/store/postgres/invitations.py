"""The invitations statements in PostgreSQL's spelling (kraken/store/invitations_sql.py runs
them): the same SQL with numbered placeholders, and ``lock`` advisory locks held until the
transaction ends (hosts inviting into one organisation, or one invitee, at once take turns)."""
from __future__ import annotations

from kraken.store.invitations_sql import STATEMENTS, InvitationsRepository
from kraken.store.postgres.accounts import ADVISORY_LOCK, numbered

POSTGRES_INVITATIONS = InvitationsRepository(
    {name: numbered(ADVISORY_LOCK if name == "lock" else sql) for name, sql in STATEMENTS.items()})
"""PostgreSQL's invitations repository (``PostgresStore.invitations``)."""
