"""Each two-host test gets a new, empty database on the module's PostgreSQL server."""
from __future__ import annotations

import pytest

from postgres_server import pg_server  # noqa: F401  (fixture)


@pytest.fixture
def dsn(pg_server) -> str:  # noqa: F811
    return pg_server.create_database()
