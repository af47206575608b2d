"""PostgreSQL as the shared store, for several Kraken hosts (issue 12): groundwork.

What is here is complete for the request-record path: ``PostgresStore`` (asyncpg pool,
migrations applied once across hosts, batches in one multi-row statement, errors mapped to
kraken.store.errors) implements ``kraken.store.interface.Store``, and the meter's batch writer
runs on it unchanged.

Not wired to the config yet, on purpose: there is no ``[store] backend = "postgres"``. Accounts,
billing (the meter's batch hook), audit and privacy still issue SQLite SQL through ``Tx``; the
option appears once that SQL sits behind per-concern query modules in store/ with a PostgreSQL
version of each. Importing this package needs the ``postgres`` extra (asyncpg).
"""
from kraken.store.postgres.store import PgTx, PostgresStore

__all__ = ["PgTx", "PostgresStore"]
