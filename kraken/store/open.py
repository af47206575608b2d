"""Open the configured store: the one place that knows which backend ``[store]`` names.

Everything else (the server, the admin listener, every CLI command) asks for "the store" and
gets a ``kraken.store.interface.Store``; backends are imported only when chosen, so the SQLite
default never loads asyncpg.
"""
from __future__ import annotations

import contextlib
from typing import AsyncIterator

from kraken.config import StoreConfig
from kraken.store.interface import Store

__all__ = ["open_store", "opened_store"]


async def open_store(cfg: StoreConfig, *, pool_size: int | None = None) -> Store:
    """A ready store (migrations applied). ``pool_size`` overrides ``[store] pool_size`` for
    a PostgreSQL pool that serves one small job (key lookups, one CLI command)."""
    if cfg.backend == "postgres":
        from kraken.store.postgres import PostgresStore

        return await PostgresStore.open(cfg.dsn, pool_size=pool_size or cfg.pool_size,
                                        statement_timeout_ms=cfg.statement_timeout_ms)
    from kraken.store.sqlite import SqliteStore

    return await SqliteStore.open(cfg.path, busy_timeout_ms=cfg.busy_timeout_ms)


@contextlib.asynccontextmanager
async def opened_store(cfg: StoreConfig, *, pool_size: int | None = None
                       ) -> AsyncIterator[Store]:
    """``open_store`` closed on the way out."""
    store = await open_store(cfg, pool_size=pool_size)
    try:
        yield store
    finally:
        await store.close()
