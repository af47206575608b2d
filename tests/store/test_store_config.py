"""``[store]``: the backend choice is checked at load, in one line, never echoing a password."""
from __future__ import annotations

import pytest

from kraken import config
from kraken.config.store import describe

DSN = "postgresql://kraken:s3cret-pw@db.internal:5433/kraken"


def load(store: dict, env: dict | None = None) -> config.Config:
    return config.from_mapping({"store": store}, "<test>", env=env or {})


def test_sqlite_is_the_default_with_its_journal_beside_the_file():
    cfg = load({"path": "state/kraken.db"})
    assert cfg.store.backend == "sqlite"
    assert cfg.journal_dir == "state/kraken.db.journal"
    assert describe(cfg.store) == "state/kraken.db"


def test_postgres_takes_the_dsn_pool_and_timeout_and_a_local_journal():
    cfg = load({"backend": "postgres", "dsn": DSN, "pool_size": 12, "statement_timeout_ms": 2500})
    assert (cfg.store.backend, cfg.store.dsn, cfg.store.pool_size,
            cfg.store.statement_timeout_ms) == ("postgres", DSN, 12, 2500)
    assert cfg.journal_dir == "kraken.journal"
    assert load({"backend": "postgres", "dsn": DSN, "journal_dir": "/j"}).journal_dir == "/j"


def test_the_environment_variable_wins_over_the_file():
    env = {"KRAKEN_DATABASE_URL": "postgresql://other@h/db"}
    assert load({"backend": "postgres", "dsn": DSN}, env).store.dsn == "postgresql://other@h/db"
    assert load({"backend": "postgres"}, env).store.dsn == "postgresql://other@h/db"


def test_describe_names_host_and_database_never_the_credentials():
    text = describe(load({"backend": "postgres", "dsn": DSN}).store)
    assert text == "postgresql://db.internal:5433/kraken"
    assert "s3cret" not in text and "kraken:" not in text


@pytest.mark.parametrize("store, env, message", [
    ({"backend": "mysql"}, {}, 'store.backend must be "sqlite" or "postgres"'),
    ({"backend": "postgres"}, {}, "needs store.dsn or KRAKEN_DATABASE_URL"),
    ({"backend": "postgres", "dsn": "mysql://u:s3cret-pw@h/db"}, {},
     "store.dsn must be a postgresql:// URL"),
    ({"backend": "postgres"}, {"KRAKEN_DATABASE_URL": "http://u:s3cret-pw@h/db"},
     "KRAKEN_DATABASE_URL must be a postgresql:// URL"),
    ({"backend": "postgres", "dsn": DSN, "pool_size": 0}, {}, "store.pool_size must be at least 1"),
    ({"backend": "postgres", "dsn": DSN, "pool_size": 1000}, {}, "store.pool_size must be at most"),
    ({"backend": "postgres", "dsn": DSN, "statement_timeout_ms": 5}, {},
     "store.statement_timeout_ms must be at least 100"),
    ({"backend": "postgres", "dsn": DSN, "bogus": 1}, {}, "unknown key store.bogus"),
])
def test_bad_store_settings_are_one_line_errors_without_the_password(store, env, message):
    with pytest.raises(config.ConfigError) as caught:
        load(store, env)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "s3cret" not in text
