"""month_span: the writer's two-compare month test agrees with month_of, boundaries included."""
from __future__ import annotations

import calendar
import random

from kraken.billing.guard import month_of, month_span


def test_month_span_holds_exactly_the_times_month_of_puts_in_that_month():
    rng = random.Random(13)
    for year in (1970, 1999, 2024, 2026, 2100):
        for mon in range(1, 13):
            month = f"{year:04d}-{mon:02d}"
            name, start, end = month_span(month)
            assert name == month and start == calendar.timegm((year, mon, 1, 0, 0, 0))
            for ts in (start, start + 0.5, end - 1e-3, rng.uniform(start, end)):
                assert month_of(ts) == month and start <= ts < end
            assert month_of(end) != month and month_of(start - 1e-3) != month
    for _ in range(20_000):
        ts = rng.uniform(0, 4.2e9)
        _, start, end = month_span(month_of(ts))
        assert start <= ts < end
