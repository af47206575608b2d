"""The ``[store]`` section: which backend holds Kraken's state, checked once at load.

SQLite needs nothing (one file, created on first start). PostgreSQL needs a DSN, from the
file or ``KRAKEN_DATABASE_URL`` (the variable wins, as ``KRAKEN_DB`` does for the SQLite path,
so a unit file can keep the password out of the config), and the asyncpg driver. A DSN may
hold a password: no message here ever repeats it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any, Mapping
from urllib.parse import urlsplit

from kraken.config.fields import at_least
from kraken.config.fields import section as _section
from kraken.config.sections import ConfigError, StoreConfig

__all__ = ["BACKENDS", "DATABASE_URL_ENV", "describe", "store_section"]

BACKENDS = ("sqlite", "postgres")
DATABASE_URL_ENV = "KRAKEN_DATABASE_URL"
_SCHEMES = ("postgresql", "postgres")
MAX_POOL_SIZE = 256


def store_section(raw: Any, source: str, env: Mapping[str, str]) -> StoreConfig:
    """``[store]`` as a StoreConfig; a PostgreSQL backend without a usable DSN or driver is
    refused here, before anything listens."""
    cfg = _section(StoreConfig, raw, "store", source)
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"{source}: store.backend must be \"sqlite\" or \"postgres\"")
    if cfg.backend != "postgres":
        return cfg
    dsn = env.get(DATABASE_URL_ENV) or cfg.dsn
    where = DATABASE_URL_ENV if env.get(DATABASE_URL_ENV) else "store.dsn"
    if not dsn:
        raise ConfigError(f"{source}: store.backend = \"postgres\" needs store.dsn "
                          f"or {DATABASE_URL_ENV}")
    try:
        scheme = urlsplit(dsn).scheme
    except ValueError:
        scheme = ""
    if scheme not in _SCHEMES:
        raise ConfigError(f"{source}: {where} must be a postgresql:// URL")
    at_least(cfg.pool_size, 1, "store.pool_size", source)
    if cfg.pool_size > MAX_POOL_SIZE:
        raise ConfigError(f"{source}: store.pool_size must be at most {MAX_POOL_SIZE}")
    at_least(cfg.statement_timeout_ms, 100, "store.statement_timeout_ms", source)
    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError(f"{source}: store.backend = \"postgres\" needs the asyncpg driver: "
                          "pip install 'kraken[postgres]'")
    return replace(cfg, dsn=dsn)


def describe(cfg: StoreConfig) -> str:
    """Where the store is, for log lines: the SQLite path, or PostgreSQL's host and database
    (never the user or password)."""
    if cfg.backend != "postgres":
        return cfg.path
    parts = urlsplit(cfg.dsn)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # asyncpg reports a bad port itself when it connects
        port = ""
    return f"postgresql://{parts.hostname or 'localhost'}{port}{parts.path}"
