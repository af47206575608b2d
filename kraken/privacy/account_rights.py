"""The account API's routes that need the privacy layer: usage, export (access and
portability), objection and erasure of the caller's own account (``/v1/account/...``).

They live here, not in kraken/gateway, because the gateway layer may not import privacy or
admin; the app adds them to the account API's route table (``register``), so the permission
check stays the one in ``AccountApi.handle``. Each reuses what the admin API calls."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import anyio

from kraken.accounts import service
from kraken.accounts.roles import can
from kraken.admin import validate as val
from kraken.admin.page import group_stats
from kraken.admin.routes_privacy import send_export
from kraken.admin.usage import has_key_column
from kraken.gateway.endpoints.account import (AccountApi, Answer, Caller, Streamed,
                                              json_body)
from kraken.http.exchange import Request
from kraken.privacy.erase import erase_customer, sweep_requests
from kraken.privacy.export import FORMATS

METER_DRAIN_S = 5.0


class OrganisationFirst(service.ConflictError):
    """An owner of an organisation with other members: transfer or remove it first."""

    code = "organisation_first"


def _query(req: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    q = dict(parse_qsl(req.target.partition("?")[2], keep_blank_values=True))
    for name in q:
        if name not in allowed:
            raise service.ValidationError(name[:40], "unknown query parameter")
    return q


async def usage_scope(api: AccountApi, caller: Caller) -> tuple[str, dict[str, Any]]:
    """(scope name, ``group_stats`` filter): the organisation's keys for a role with
    ``read_usage``, else the caller's own customer. The totals and the series
    (account_series.py) both take it from here, so they always count the same requests."""
    if caller.org_id is not None and can(caller.role, "read_usage"):
        keys = await service.list_keys(api.store, org_id=caller.org_id)
        return "organisation", {"key_ids": [k.id for k in keys]}
    return "customer", {"customer": caller.customer_id}


async def usage(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Own usage (the caller's customer), or the organisation's (its keys' requests) for a
    role with ``read_usage``; the same statistics as the usage page, cost null if unknown."""
    scope, where = await usage_scope(api, caller)
    total = await group_stats(api.store, "all", **where)
    by_model = await group_stats(api.store, "model", **where)
    by_key = (await group_stats(api.store, "key", **where)
              if await has_key_column(api.store) else None)
    return 200, {"scope": scope, "customer_id": caller.customer_id, "org_id": caller.org_id,
                 "total": total[0] if total else None, "by_model": by_model, "by_key": by_key}


async def export(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """The caller's own customer, streamed exactly as the admin export streams it."""
    q = _query(req, ("format",))
    fmt = val.choice(q.get("format"), "format", FORMATS, "jsonl")
    record = (await service.get_customer(api.store, caller.customer_id)).as_dict()
    await api.audit(caller, "customer.export", record["id"], record["id"], format=fmt)
    page_rows = api.rights["export_page_rows"]

    async def send(sink) -> None:
        await send_export(SimpleNamespace(sink=sink), api.store, record, fmt, page_rows)

    return 200, Streamed(send)


async def object_(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Right to object: the caller's metadata left out of routing statistics (or back in)."""
    body = json_body(req, ("opted_out",))
    opted = body.get("opted_out", True)
    if not isinstance(opted, bool):
        raise service.ValidationError("opted_out", "must be true or false")
    cus = await service.update_customer(api.store, caller.customer_id, opted_out=opted)
    await api.audit(caller, "customer.object", cus.id, cus.id, opted_out=opted)
    return 200, cus.as_dict()


async def _owner_blocks(api: AccountApi, customer_id: str) -> None:
    """409 if the customer owns an organisation that has other members."""
    for org_id, _name, _created in await api.store.accounts.organisations(api.store,
                                                                           customer_id):
        members = await service.list_members(api.store, org_id)
        mine = [m for m in members if m.customer_id == customer_id]
        if mine and mine[0].role == "owner" and len(members) > 1:
            raise OrganisationFirst(
                "org_id", f"owner of organisation {org_id} with other members: transfer "
                          "ownership or remove the organisation first")


async def erase(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Erasure of the caller's own account, as the admin route erases one; the calling key
    goes with it."""
    json_body(req, ())
    await _owner_blocks(api, caller.customer_id)
    keys = await service.list_keys(api.store, customer_id=caller.customer_id)
    cid, keep = caller.customer_id, api.rights["keep_billing_records"]
    result = await erase_customer(api.store, cid, actor=caller.actor,
                                  keep_billing_records=keep)
    # The keys were deleted with the customer (key_events tells the other processes, as for
    # the admin route); this process refuses them from now on, the calling one included.
    api.gateway.verifier.evict([k.id for k in keys] + [caller.key.id])
    meter = api.rights.get("meter")
    if meter is not None:  # requests admitted before the keys went away: let them land
        with anyio.move_on_after(METER_DRAIN_S):
            while meter.depth:
                await anyio.sleep(0.05)
    late = await sweep_requests(api.store, cid, tombstone_id=result.tombstone)
    if keep:
        result.requests_tombstoned += late
    else:
        result.requests_deleted += late
    return 200, result.to_dict()


ROUTES = [
    # method, path under /v1/account, the roles.py action it needs, handler
    ("GET", "/usage", "read_own_usage", usage),
    # Access, portability, objection and erasure are every person's own rights: any role.
    ("GET", "/export", "call_models", export),
    ("POST", "/object", "call_models", object_),
    ("DELETE", "", "call_models", erase),
]


def register(api: AccountApi, *, export_page_rows: int, keep_billing_records: bool,
             meter: Any = None) -> None:
    api.rights = {"export_page_rows": export_page_rows,
                  "keep_billing_records": keep_billing_records, "meter": meter}
    api.add_routes(ROUTES)
