"""Where metadata is kept: schema, migrations and the SQLite store (off the hot path)."""
from kraken.store.errors import StoreBusy, StoreDataError, StoreError, StoreFull
from kraken.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "StoreBusy", "StoreDataError", "StoreError", "StoreFull"]
