"""PostgreSQL as the shared store, for several Kraken hosts (issue 12): groundwork.

What is here is complete for the request-record path: ``PostgresStore`` (asyncpg pool,
migrations applied once across hosts, batches in one multi-row statement, errors mapped to
kraken.store.errors) implements ``kraken.store.interface.Store``, and the meter's batch writer
runs on it unchanged.

Accounts (``accounts.py``), the audit chain (``audit.py``) and privacy (``privacy.py``: GDPR
export, erasure, retention) have their PostgreSQL repositories too. Not wired to the config yet,
on purpose: there is no ``[store] backend = "postgres"`` while billing (the meter's batch hook)
still issues SQLite SQL through ``Tx``; the option appears once it sits behind a store/
repository with a PostgreSQL version. Importing this package needs the ``postgres`` extra (asyncpg).
"""
from kraken.store.postgres.store import PgTx, PostgresStore

__all__ = ["PgTx", "PostgresStore"]
