"""PostgreSQL as the shared store, for several Kraken hosts (issue 12).

``PostgresStore`` (asyncpg pool, migrations applied once across hosts, batches in one multi-row
statement, errors mapped to kraken.store.errors) implements ``kraken.store.interface.Store``, and
the meter's batch writer runs on it unchanged.

Every concern has its PostgreSQL repository: accounts (``accounts.py``), the audit chain
(``audit.py``), privacy (``privacy.py``: GDPR export, erasure, retention), billing
(``billing.py``: the wallet ledger and the meter's batch hook, a few array statements per batch
with the batch's wallets locked in a fixed order) and reports (``reports.py``: usage statistics).
Importing this package needs the ``postgres`` extra (asyncpg).
"""
from kraken.store.postgres.store import PgTx, PostgresStore

__all__ = ["PgTx", "PostgresStore"]
