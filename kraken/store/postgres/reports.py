"""The reports statements in PostgreSQL's spelling (kraken/store/reports_sql.py runs them).

Days and time buckets are computed in UTC from the epoch seconds, truncated as SQLite's
CAST truncates (``floor``: a cast to BIGINT would round; ``to_timestamp`` of a fraction rounds to
the microsecond); a list of keys is one array parameter; the column list
comes from ``information_schema``. Sums of BIGINT come back as NUMERIC and are made ints, so a
row reads exactly as SQLite's does.
"""
from __future__ import annotations

from decimal import Decimal

from kraken.store.reports_sql import Dialect, ReportsRepository


def _row(row: tuple) -> tuple:
    return tuple(int(v) if isinstance(v, Decimal) else v for v in row)


POSTGRES = Dialect(
    mark=lambda n: f"${n}",
    day="to_char(to_timestamp(floor(ts)) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    bucket=lambda b: f"(floor(ts / {int(b)}) * {int(b)})::bigint",
    fallback="fallback_used",
    key_column=("SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'requests'"),
    in_list=lambda first, _n: f"= ANY(${first}::text[])",
    bind_list=lambda values: [list(values)],
    row=_row,
)
POSTGRES_REPORTS = ReportsRepository(POSTGRES)
"""PostgreSQL's reports repository (``PostgresStore.reports``)."""
