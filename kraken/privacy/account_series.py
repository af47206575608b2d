"""``GET /v1/account/usage/series?hours=N``: the caller's usage over time, for the portal's
charts (``GET /v1/account/usage`` holds the totals). The same scope as that route (the
organisation's keys for a ``read_usage`` role, else the caller's own customer), the same
buckets and statistics as the admin usage page's ``/usage/data`` series (kraken/admin/page.py).
Added to the account route table by the app, so the permission check stays ``AccountApi``'s."""
from __future__ import annotations

import time
from typing import Any

from kraken.accounts import service
from kraken.accounts.roles import can
from kraken.admin.page import _bucket_for, _hours, _series, group_stats
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller
from kraken.http.exchange import Request
from kraken.privacy.account_rights import _query


async def _scope(api: AccountApi, caller: Caller) -> tuple[str, dict[str, Any]]:
    """(scope name, ``group_stats`` filter) as ``GET /v1/account/usage`` scopes it."""
    if caller.org_id is not None and can(caller.role, "read_usage"):
        keys = await service.list_keys(api.store, org_id=caller.org_id)
        return "organisation", {"key_ids": [k.id for k in keys]}
    return "customer", {"customer": caller.customer_id}


async def series(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    hours = _hours(_query(req, ("hours",)).get("hours") or "24")
    bucket = _bucket_for(hours)
    now = time.time()
    start = (int(now - hours * 3600) // bucket) * bucket
    scope, where = await _scope(api, caller)
    rows = await group_stats(api.store, "bucket", bucket_s=bucket, since=start, **where)
    return 200, {"scope": scope, "hours": hours, "bucket_s": bucket, "from": start, "to": now,
                 "series": _series(rows, start, now, bucket)}


ROUTES = [("GET", "/usage/series", "read_own_usage", series)]


def register(api: AccountApi) -> None:
    api.add_routes(ROUTES)
