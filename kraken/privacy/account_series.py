"""``GET /v1/account/usage/series?hours=N``: the caller's usage over time, for the portal's
charts (``GET /v1/account/usage`` holds the totals). The same scope as that route (the
organisation's keys for a ``read_usage`` role, else the caller's own customer), the same
buckets and statistics as the admin usage page's ``/usage/data`` series (kraken/admin/page.py).
Added to the account route table by the app, so the permission check stays ``AccountApi``'s."""
from __future__ import annotations

import time

from kraken.admin.page import _bucket_for, _hours, _series, group_stats
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller
from kraken.http.exchange import Request
from kraken.privacy.account_rights import _query, usage_scope


async def series(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    hours = _hours(_query(req, ("hours",)).get("hours") or "24")
    bucket = _bucket_for(hours)
    now = time.time()
    start = (int(now - hours * 3600) // bucket) * bucket
    scope, where = await usage_scope(api, caller)
    rows = await group_stats(api.store, "bucket", bucket_s=bucket, since=start, **where)
    return 200, {"scope": scope, "hours": hours, "bucket_s": bucket, "from": start, "to": now,
                 "series": _series(rows, start, now, bucket)}


ROUTES = [("GET", "/usage/series", "read_own_usage", series)]


def register(api: AccountApi) -> None:
    api.add_routes(ROUTES)
