"""The accounts tests run once per backend: a fresh SQLite file, or a fresh database on this
module's PostgreSQL server (tests/postgres_server.py).

    from backends import backend, pg_server, store  # noqa: F401  (fixtures)

``any_store`` is the same per-backend store, for modules whose own ``store`` fixture is a
SQLite file shared with a real ``kraken serve`` process.

``Backend.sql`` rewrites a test's own ``?`` placeholders for PostgreSQL; ``Backend.blobs`` yields
every file the data could have reached (the SQLite file with its WAL, or the server's data
directory after a checkpoint), for tests proving a secret is never stored.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)


@dataclass
class Backend(StoreBackend):
    files: Path
    """Where the bytes land: the SQLite file's directory, or the server's data directory."""

    async def tables(self, store) -> set[str]:
        if self.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        return {r[0] for r in await store.fetch_all(sql)}

    async def blobs(self, store) -> list[tuple[str, bytes]]:
        """(file name, content) of every file holding this database's data."""
        if self.name == "postgres":
            await store.fetch_all("CHECKPOINT")  # table pages out of shared buffers onto disk
        found = []
        for root, _dirs, names in os.walk(self.files):
            for name in names:
                path = Path(root) / name
                try:
                    found.append((str(path), path.read_bytes()))
                except OSError:  # a file removed meanwhile (a recycled WAL segment)
                    continue
        return found


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "acc.db"), tmp_path)
    server = request.getfixturevalue("pg_server")
    return Backend("postgres", server.create_database(), server.data)


@pytest.fixture
async def store(backend):
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def any_store(backend):
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()
