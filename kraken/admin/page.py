"""The usage page on the admin listener: static files plus two data routes.

The page itself is public (it holds no data); it asks for a Kraken API key or the admin
token and keeps it in a JavaScript variable only: no cookies, no storage. The data routes
check that credential themselves: an API key sees only its own customer's requests, the
admin token any customer's (or all). An API key that is not cached is checked under the
client listener's per-address auth limits (kraken/policy/authgate.py), so the page is no
way around them. Charts use uPlot (MIT), vendored in ``kraken/web/`` with the chart code
shared with the client listener's portal.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kraken import audit
from kraken.accounts import service
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.errors import AdminError, AdminForbidden, CredentialRequired
from kraken.admin.route_group import Route, RouteGroup
from kraken.admin.routes_privacy import send_export
from kraken.admin.server import AdminApp, AdminCall
from kraken.admin.token import bearer, token_matches
from kraken.admin.usage import has_key_column, known_cost
from kraken.errors import Unauthorized
from kraken.gateway.endpoints.portal import PAGE_HEADERS, WEB
from kraken.policy.authgate import AddressGate
from kraken.policy.clientip import ClientAddress
from kraken.privacy.export import FORMATS
from kraken.store.interface import Store
from kraken.store.reports_sql import STAT_COLUMNS

_OWN = Path(__file__).resolve().parent / "static"
STATIC = {
    "/usage": (_OWN / "usage.html", b"text/html; charset=utf-8"),
    "/usage/app.js": (_OWN / "usage.js", b"text/javascript; charset=utf-8"),
    # Shared with the client listener's portal (kraken/web): one copy of the chart code.
    "/usage/common.js": (WEB / "common.js", b"text/javascript; charset=utf-8"),
    "/usage/uplot.js": (WEB / "uplot.iife.min.js", b"text/javascript; charset=utf-8"),
    "/usage/uplot.css": (WEB / "uplot.min.css", b"text/css; charset=utf-8"),
    "/usage/page.css": (WEB / "page.css", b"text/css; charset=utf-8"),
}
_HEADERS = PAGE_HEADERS
RANGES_H = (1, 6, 24, 24 * 7, 24 * 30, 24 * 90)
_BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400)
MAX_POINTS = 200


def _unauthorized() -> AdminError:
    """A new 401 each time: re-raising one shared exception would grow its traceback."""
    return CredentialRequired("a Kraken API key or the admin token is required")


def _bucket_for(hours: int) -> int:
    span = hours * 3600
    return next((b for b in _BUCKETS_S if span / b <= MAX_POINTS), _BUCKETS_S[-1])


STAT_FIELDS = STAT_COLUMNS
"""``cost_usd`` is null (unknown) where ``unpriced`` requests had usage but no price."""


def _stat_dicts(rows: list[tuple]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item = dict(zip(STAT_FIELDS, row))
        item["cost_usd"] = known_cost(item["cost_usd"], item["unpriced"])
        item["total_tokens"] = item["prompt_tokens"] + item["completion_tokens"]
        item["error_rate"] = round(item["errors"] / item["requests"], 6) if item["requests"] else 0.0
        out.append(item)
    return out


async def group_stats(store: Store, group: str, *, bucket_s: int | None = None,
                      since: float | None = None, customer: str | None = None,
                      key_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per group ("all", "model", "key", "bucket" of ``bucket_s``, ...) of the requests
    in scope; nearest-rank percentiles computed by the database (``store.reports``)."""
    return _stat_dicts(await store.reports.stats(store, group, bucket_s=bucket_s, since=since,
                                                 customer=customer, key_ids=key_ids))


class Caller:
    """Who a data route's credential names: the admin token, or a Kraken API key checked like
    on the client listener (same verifier, same per-address limits)."""

    def __init__(self, ctx: AdminContext):
        self._ctx = ctx
        self._addresses = ClientAddress(ctx.cfg.limits.trusted_proxies)

    async def __call__(self, call: AdminCall) -> tuple[str | None, str]:
        """(customer the caller may see or None for the admin, actor for the audit log)."""
        token = bearer(call.req.header(b"authorization"))
        if token is None:
            raise _unauthorized()
        if token_matches(token, self._ctx.cfg.admin.token_hash):
            return None, "admin:usage-page"
        verifier = self._ctx.verifier
        if verifier is None:
            raise _unauthorized()
        principal = verifier.lookup_cached(token)
        try:
            if principal is None:
                principal = await verifier.verify(token, await self._gate(call))
        except Unauthorized:  # the one 401, nothing echoed (Overloaded stays a 503)
            raise _unauthorized() from None
        return principal.customer_id, f"key:{principal.key_id}"

    async def _gate(self, call: AdminCall) -> AddressGate | None:
        """The caller's address under the auth limits; 429 if it failed too often."""
        if self._ctx.limiter is None:
            return None
        ip = self._addresses.of(call.req.peer, call.req.header(b"x-forwarded-for"))
        gate = AddressGate(self._ctx.limiter, ip)
        await gate.check()
        return gate


def _static(body: bytes, ctype: bytes):
    """A handler answering one file read at startup, with the page's security headers."""
    async def handler(call: AdminCall):
        call.sink.respond(200, [(b"content-type", ctype), *_HEADERS], body)

    return handler


def _scope(caller: str | None, q: dict[str, str]) -> str | None:
    """The customer a data route shows: an API key's own only, the admin's choice (or all)."""
    wanted = val.ident(q.get("customer"), "customer", required=False)
    if caller is not None:
        if wanted not in (None, caller):
            raise AdminForbidden("customer: an API key sees only its own customer",
                                 param="customer")
        return caller
    return wanted


def _hours(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or int(raw) not in RANGES_H:
        raise val.invalid("hours", f"must be one of {', '.join(map(str, RANGES_H))}")
    return int(raw)


def _series(rows: list[dict[str, Any]], start: int, now: float, bucket: int) -> dict[str, list]:
    """One column per stat over every bucket from ``start`` to ``now``; null where a bucket
    had no requests (a gap in the chart, not a zero)."""
    by_time = {int(r["group"]): r for r in rows}
    series: dict[str, list] = {k: [] for k in ("t", *STAT_FIELDS[1:], "total_tokens")}
    for t in range(start, int(now) + 1, bucket):
        r = by_time.get(t, {})
        series["t"].append(t)
        for k in series:
            if k != "t":
                series[k].append(r.get(k))
    return series


class UsagePage(RouteGroup):
    """The page's files and its two data routes, all public to ``AdminApp``: the data routes
    check the caller's credential themselves (``Caller``)."""

    def __init__(self, ctx: AdminContext):
        super().__init__(ctx)
        self._who = Caller(ctx)
        self._files = {path: (file.read_bytes(), ctype) for path, (file, ctype) in STATIC.items()}

    def routes(self) -> list[Route]:
        return [
            *(("GET", path, _static(body, ctype)) for path, (body, ctype) in self._files.items()),
            ("GET", "/usage/data", self.data),
            ("GET", "/usage/export", self.export),
        ]

    def bind(self, app: AdminApp) -> None:
        for method, path, handler in self.routes():
            assert method == "GET"  # public routes are GET only: AdminApp answers 405 otherwise
            app.add_public(path, handler)

    async def data(self, call: AdminCall):
        caller, _ = await self._who(call)
        q = call.query(("customer", "hours"))
        customer = _scope(caller, q)
        hours = _hours(q.get("hours") or "24")
        bucket = _bucket_for(hours)
        now = time.time()
        start = (int(now - hours * 3600) // bucket) * bucket
        store = self.store
        rows = await group_stats(store, "bucket", bucket_s=bucket, since=start, customer=customer)
        series = _series(rows, start, now, bucket)
        total = await group_stats(store, "all", since=start, customer=customer)
        by_model = await group_stats(store, "model", since=start, customer=customer)
        by_key = (await group_stats(store, "key", since=start, customer=customer)
                  if await has_key_column(store) else None)
        return 200, {"customer": customer, "hours": hours, "bucket_s": bucket, "from": start,
                     "to": now, "total": total[0] if total else None, "series": series,
                     "by_model": by_model, "by_key": by_key}

    async def export(self, call: AdminCall):
        caller, actor = await self._who(call)
        q = call.query(("customer", "format"))
        customer = _scope(caller, q)
        if customer is None:
            raise val.invalid("customer", "name the customer to export")
        fmt = val.choice(q.get("format"), "format", FORMATS, "jsonl")
        store = self.store
        if await store.accounts.customer_exists(store, customer):
            record = (await service.get_customer(store, customer)).as_dict()
        else:  # a customer named only in the config file: its request records, no account
            record = {"id": customer}
        # The caller is named by its credential, not by the call (public to AdminApp).
        await audit.record(store, actor=actor, action="customer.export", target=customer,
                           subject=customer, detail={"format": fmt, "via": "usage-page"})
        await send_export(call, store, record, fmt, self.ctx.cfg.admin.export_page_rows)
        return None


def register(app: AdminApp, ctx: AdminContext) -> None:
    UsagePage(ctx).bind(app)
