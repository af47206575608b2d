"""Admin routes for GDPR rights (export, erasure), usage statistics and the audit log."""
from __future__ import annotations

import logging
import time

import anyio

from kraken import audit
from kraken.accounts import service
from kraken.admin import paging
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.route_group import Route, RouteGroup
from kraken.admin.server import AdminApp, AdminCall, FlowGate
from kraken.admin.usage import GROUPS, MAX_GROUPS, UsageQuery, usage
from kraken.privacy.erase import erase_customer, sweep_requests
from kraken.privacy.export import CONTENT_TYPES, FORMATS, export_stream

log = logging.getLogger("kraken.admin")
_METER_DRAIN_S = 5.0


async def send_export(call: AdminCall, store, record: dict, fmt: str, page_rows: int) -> None:
    """Stream ``record``'s export as a download; a slow reader pauses the reads, so nothing
    piles up, and a reader that goes away stops it."""
    sink, gate = call.sink, FlowGate()
    sink.set_producer(gate)
    sink.start(200, [(b"content-type", CONTENT_TYPES[fmt]), (b"cache-control", b"no-store"),
                     (b"content-disposition",
                      f'attachment; filename="{record["id"]}.{fmt}"'.encode())], None)
    try:
        async for chunk in export_stream(store, record, fmt, page_rows=page_rows):
            if sink.disconnected:
                return
            sink.write(chunk)
            await gate.wait()
        sink.end()
    finally:
        sink.set_producer(None)


class PrivacyRoutes(RouteGroup):
    """Export and erasure of a customer, usage statistics, the audit log, whoami."""

    def routes(self) -> list[Route]:
        return [
            ("GET", "/admin/customers/{id}/export", self.export),
            ("DELETE", "/admin/customers/{id}", self.erase),
            ("GET", "/admin/usage", self.usage_stats),
            ("GET", "/admin/audit", self.audit_list),
            ("GET", "/admin/audit/verify", self.audit_verify),
            ("GET", "/admin/whoami", self.whoami),
        ]

    async def export(self, call: AdminCall):
        q = call.query(("format",))
        fmt = val.choice(q.get("format"), "format", FORMATS, "jsonl")
        customer = (await service.get_customer(self.store, call.params["id"])).as_dict()
        await self._audit(call, "customer.export", customer["id"], customer["id"], format=fmt)
        await send_export(call, self.store, customer, fmt, self.ctx.cfg.admin.export_page_rows)

    async def erase(self, call: AdminCall):
        call.body(())
        cid = call.params["id"]
        keep = self.ctx.cfg.retention.keep_billing_records
        result = await erase_customer(self.store, cid, actor=call.actor,
                                      keep_billing_records=keep)
        await self._drain_meter()
        late = await sweep_requests(self.store, cid, tombstone_id=result.tombstone)
        if keep:
            result.requests_tombstoned += late
        else:
            result.requests_deleted += late
        return 200, result.to_dict()

    async def _drain_meter(self) -> None:
        """Requests admitted just before the keys went away may still sit in the meter's
        queue: wait (bounded) for it to flush before the final sweep."""
        meter = self.ctx.meter
        if meter is not None:
            with anyio.move_on_after(_METER_DRAIN_S):
                while meter.depth:
                    await anyio.sleep(0.05)

    async def usage_stats(self, call: AdminCall):
        q = call.query(("customer", "key", "model", "group_by", "from", "to", "limit", "after"))
        query = UsageQuery(
            customer=val.ident(q.get("customer"), "customer", required=False),
            key=val.ident(q.get("key"), "key", required=False),
            model=(val.clean_text(q["model"], "model", max_len=val.QUERY_VALUE_MAX)
                   if q.get("model") else None),
            group_by=val.choice(q.get("group_by"), "group_by", tuple(GROUPS), "day"),
            start=val.timestamp(q.get("from"), "from"),
            end=val.timestamp(q.get("to"), "to"))
        if query.start is not None and query.end is not None and query.end <= query.start:
            raise val.invalid("to", "must be after from")
        size = paging.limit(q.get("limit"), most=MAX_GROUPS, default=paging.MOST)
        # after="" is the page past the group "" (requests with no customer, model, ...),
        # which sorts first: only an absent after starts from the beginning.
        rows = await usage(self.store, query, after=q.get("after"), limit=size + 1)
        return 200, {"group_by": query.group_by,
                     **paging.page(rows, size, lambda r: r["group"], lambda r: r)}

    async def audit_list(self, call: AdminCall):
        q = call.query(("after", "limit"))
        after = _int(q.get("after"), "after", 0, 2**62, 0)
        size = paging.limit(q.get("limit"))
        entries = await audit.list_entries(self.store, after_seq=after, limit=size + 1)
        return 200, paging.page(entries, size, lambda e: e.seq, lambda e: e.to_dict())

    async def audit_verify(self, call: AdminCall):
        result = await audit.verify(self.store)
        return 200, result.to_dict()

    async def whoami(self, call: AdminCall):
        return 200, {"actor": call.actor, "time": time.time()}


def register(app: AdminApp, ctx: AdminContext) -> None:
    PrivacyRoutes(ctx).bind(app)


def _int(raw: str | None, field: str, lo: int, hi: int, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        raise val.invalid(field, f"must be an integer between {lo} and {hi}")
    return int(raw)
