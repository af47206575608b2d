"""PostgreSQL as the shared store, for several Kraken hosts (issue 12): groundwork.

What is here is complete for the request-record path: ``PostgresStore`` (asyncpg pool,
migrations applied once across hosts, batches in one multi-row statement, errors mapped to
kraken.store.errors) implements ``kraken.store.interface.Store``, and the meter's batch writer
runs on it unchanged.

Accounts (``accounts.py``) and the audit chain (``audit.py``) have their PostgreSQL repositories
too. Not wired to the config yet, on purpose: there is no ``[store] backend = "postgres"`` while
billing (the meter's batch hook) and privacy still issue SQLite SQL through ``Tx``; the option
appears once they sit behind store/ repositories with a PostgreSQL version each. Importing this package needs the ``postgres`` extra (asyncpg).
"""
from kraken.store.postgres.store import PgTx, PostgresStore

__all__ = ["PgTx", "PostgresStore"]
