"""``kraken migrate``: one host's SQLite file into an empty PostgreSQL database (issue 12).

``source.py`` reads the file read-only in one snapshot; ``tables.py`` is the copy plan (order
and trigger rules per table); ``copy.py`` copies, verifies and commits in one transaction.
Importing this package needs the ``postgres`` extra (asyncpg).
"""
from kraken.store.migrate.copy import Check, Report, TableCount, VerificationFailed, migrate
from kraken.store.migrate.source import CHUNK_ROWS, MigrationRefused

__all__ = ["CHUNK_ROWS", "Check", "MigrationRefused", "Report", "TableCount",
           "VerificationFailed", "migrate"]
