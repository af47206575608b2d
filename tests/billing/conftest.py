"""The store backends the billing tests run on: each SQL-backed test runs once per backend."""
from __future__ import annotations

import pytest

from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> StoreBackend:
    """A fresh database: a new SQLite file, or a new database on this module's PostgreSQL."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", str(tmp_path / "k.db"))
    return StoreBackend("postgres", request.getfixturevalue("pg_server").create_database())

