"""The owners statements in PostgreSQL's spelling (kraken/store/owners_sql.py runs them): the
same SQL with numbered placeholders. A claim takes the erasure lock shared first, as a batch
of records does (kraken/store/postgres/erased.py): an erasure waits for a claim in flight and
deletes its row, or the claim sees the erasure and writes nothing."""
from __future__ import annotations

from kraken.store.owners_sql import STATEMENTS, OwnersRepository
from kraken.store.postgres.accounts import numbered
from kraken.store.postgres.schema import ERASURE_LOCK

POSTGRES_OWNERS = OwnersRepository({name: numbered(sql) for name, sql in STATEMENTS.items()},
                                   serialise=f"SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK})")
"""PostgreSQL's owners repository (``PostgresStore.owners``)."""
