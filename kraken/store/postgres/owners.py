"""The owners statements in PostgreSQL's spelling (kraken/store/owners_sql.py runs them): the
same SQL with numbered placeholders."""
from __future__ import annotations

from kraken.store.owners_sql import STATEMENTS, OwnersRepository
from kraken.store.postgres.accounts import numbered

POSTGRES_OWNERS = OwnersRepository({name: numbered(sql) for name, sql in STATEMENTS.items()})
"""PostgreSQL's owners repository (``PostgresStore.owners``)."""
