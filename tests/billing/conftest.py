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


async def raw_execute(backend: StoreBackend, sql: str) -> None:
    """Run ``sql`` on a plain connection of the backend's own driver, outside Kraken's store
    (what an operator's SQL shell would do); the driver's own error comes out."""
    if backend.name == "sqlite":
        import sqlite3

        conn = sqlite3.connect(backend.target)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.target)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
