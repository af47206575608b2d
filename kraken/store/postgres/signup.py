"""The sign-up links statements in PostgreSQL's spelling (kraken/store/signup_sql.py runs them):
the same SQL with numbered placeholders."""
from __future__ import annotations

from kraken.store.postgres.accounts import numbered
from kraken.store.signup_sql import STATEMENTS, SignupRepository

POSTGRES_SIGNUP = SignupRepository({name: numbered(sql) for name, sql in STATEMENTS.items()})
"""PostgreSQL's sign-up links repository (``PostgresStore.signup``)."""
