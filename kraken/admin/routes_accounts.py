"""Admin routes for customers, organisations, members, Kraken API keys (and their limits)
and BYOK provider keys. Each change is written to the audit log: who, what, which target,
field names only (never values, never secrets)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kraken import audit
from kraken.accounts import service
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.errors import AdminError
from kraken.admin.server import AdminApp, AdminCall

CUSTOMER_FIELDS = ("email", "name", "plan", "opted_out")
KEY_LIMIT_FIELDS = ("name", "expires_at", "allowed_models", "rpm", "tpm", "max_concurrent",
                    "token_budget", "spend_budget_usd")


def _page(call: AdminCall) -> tuple[int, str | None]:
    q = call.query(("limit", "after"))
    limit = 100
    if q.get("limit"):
        if not (q["limit"].isascii() and q["limit"].isdigit()) or not 1 <= int(q["limit"]) <= 10_000:
            raise val.invalid("limit", "must be an integer between 1 and 10000")
        limit = int(q["limit"])
    return limit, val.ident(q.get("after"), "after", required=False)


def _changes(call: AdminCall, fields: tuple[str, ...]) -> dict[str, Any]:
    """A PATCH body: only ``fields``, and at least one of them."""
    body = call.body(fields)
    if not body:
        raise AdminError("body: name at least one of " + ", ".join(fields), param="body")
    return body


def _show(fetch: Callable[[Any, str], Awaitable[Any]], store: Any) -> Callable[[AdminCall], Any]:
    """A GET handler answering ``fetch(store, id).as_dict()`` for the ``{id}`` in the path."""
    async def show(call: AdminCall):
        return 200, (await fetch(store, call.params["id"])).as_dict()
    return show


def register(app: AdminApp, ctx: AdminContext) -> None:
    store = ctx.store

    async def log(call: AdminCall, action: str, target: str | None, subject: str | None,
                  **detail: Any) -> None:
        await audit.record(store, actor=call.actor, action=action, target=target,
                           subject=subject, detail=detail)

    # ---- customers ---------------------------------------------------------------------
    async def create_customer(call: AdminCall):
        body = call.body(CUSTOMER_FIELDS)
        if "email" not in body:
            raise val.invalid("email", "is required")
        kwargs = {k: body[k] for k in ("plan", "opted_out") if k in body}
        cus = await service.create_customer(store, body["email"], body.get("name"), **kwargs)
        await log(call, "customer.create", cus.id, cus.id, fields=sorted(body))
        return 201, cus.as_dict()

    async def list_customers(call: AdminCall):
        limit, after = _page(call)
        rows = await service.list_customers(store, limit=limit, after=after)
        return 200, {"data": [c.as_dict() for c in rows],
                     "next_after": rows[-1].id if len(rows) == limit else None}

    async def patch_customer(call: AdminCall):
        body = _changes(call, CUSTOMER_FIELDS)
        cus = await service.update_customer(store, call.params["id"], **body)
        await log(call, "customer.update", cus.id, cus.id, fields=sorted(body))
        return 200, cus.as_dict()

    async def object_(call: AdminCall):
        """Right to object: leave this customer's metadata out of routing statistics."""
        body = call.body(("opted_out",))
        opted = val.boolean(body, "opted_out")
        opted = True if opted is None else opted
        cus = await service.update_customer(store, call.params["id"], opted_out=opted)
        await log(call, "customer.object", cus.id, cus.id, opted_out=opted)
        return 200, cus.as_dict()

    app.add("POST", "/admin/customers", create_customer)
    app.add("GET", "/admin/customers", list_customers)
    app.add("GET", "/admin/customers/{id}", _show(service.get_customer, store))
    app.add("PATCH", "/admin/customers/{id}", patch_customer)
    app.add("POST", "/admin/customers/{id}/object", object_)

    # ---- organisations and members -----------------------------------------------------
    async def create_org(call: AdminCall):
        body = call.body(("name", "owner_id"))
        owner = val.text(body, "owner_id", required=True, max_len=64)
        name = val.text(body, "name", required=True)
        org = await service.create_organisation(store, name, owner)
        await log(call, "organisation.create", org.id, owner)
        return 201, org.as_dict()

    async def list_orgs(call: AdminCall):
        q = call.query(("customer",))
        customer = val.ident(q.get("customer"), "customer", required=False)
        orgs = await service.list_organisations(store, customer_id=customer)
        return 200, {"data": [o.as_dict() for o in orgs]}

    async def get_org(call: AdminCall):
        org = await service.get_organisation(store, call.params["id"])
        members = await service.list_members(store, org.id)
        return 200, {**org.as_dict(), "members": [m.as_dict() for m in members]}

    async def patch_org(call: AdminCall):
        body = call.body(("name",))
        name = val.text(body, "name", required=True)
        org = await service.rename_organisation(store, call.params["id"], name)
        await log(call, "organisation.update", org.id, None, fields=["name"])
        return 200, org.as_dict()

    async def delete_org(call: AdminCall):
        await service.delete_organisation(store, call.params["id"])
        await log(call, "organisation.delete", call.params["id"], None)
        return 200, {"id": call.params["id"], "deleted": True}

    async def list_members(call: AdminCall):
        await service.get_organisation(store, call.params["id"])
        return 200, {"data": [m.as_dict() for m in await service.list_members(store, call.params["id"])]}

    async def add_member(call: AdminCall):
        body = call.body(("customer_id", "role"))
        cid = val.text(body, "customer_id", required=True, max_len=64)
        role = val.text(body, "role", required=True, max_len=32)
        m = await service.add_member(store, call.params["id"], cid, role)
        await log(call, "member.add", m.org_id, m.customer_id, role=m.role)
        return 201, m.as_dict()

    async def set_role(call: AdminCall):
        body = call.body(("role",))
        role = val.text(body, "role", required=True, max_len=32)
        m = await service.set_member_role(store, call.params["id"], call.params["customer"], role)
        await log(call, "member.role", m.org_id, m.customer_id, role=m.role)
        return 200, m.as_dict()

    async def remove_member(call: AdminCall):
        await service.remove_member(store, call.params["id"], call.params["customer"])
        await log(call, "member.remove", call.params["id"], call.params["customer"])
        return 200, {"org_id": call.params["id"], "customer_id": call.params["customer"],
                     "deleted": True}

    app.add("POST", "/admin/organisations", create_org)
    app.add("GET", "/admin/organisations", list_orgs)
    app.add("GET", "/admin/organisations/{id}", get_org)
    app.add("PATCH", "/admin/organisations/{id}", patch_org)
    app.add("DELETE", "/admin/organisations/{id}", delete_org)
    app.add("GET", "/admin/organisations/{id}/members", list_members)
    app.add("POST", "/admin/organisations/{id}/members", add_member)
    app.add("PATCH", "/admin/organisations/{id}/members/{customer}", set_role)
    app.add("DELETE", "/admin/organisations/{id}/members/{customer}", remove_member)

    # ---- Kraken API keys and their limits --------------------------------------------
    async def create_key(call: AdminCall):
        body = call.body(("customer_id", "org_id", "env", *KEY_LIMIT_FIELDS))
        cid = val.text(body, "customer_id", required=True, max_len=64)
        kwargs = {k: body[k] for k in ("org_id", "env", *KEY_LIMIT_FIELDS) if k in body}
        created = await service.create_key(store, cid, **kwargs)
        key = created.key
        await log(call, "key.create", key.id, key.customer_id, fields=sorted(kwargs))
        # The only time the secret leaves Kraken: this response, never a log or a row.
        return 201, {"key": key.as_dict(), "secret": created.plaintext}

    async def list_keys(call: AdminCall):
        q = call.query(("customer", "org", "include_revoked"))
        include = val.choice(q.get("include_revoked"), "include_revoked", ("true", "false"), "true")
        keys = await service.list_keys(
            store, customer_id=val.ident(q.get("customer"), "customer", required=False),
            org_id=val.ident(q.get("org"), "org", required=False),
            include_revoked=include == "true")
        return 200, {"data": [k.as_dict() for k in keys]}

    async def patch_key(call: AdminCall):
        body = _changes(call, KEY_LIMIT_FIELDS)
        key = await service.update_key(store, call.params["id"], **body)
        await log(call, "key.update", key.id, key.customer_id, fields=sorted(body))
        return 200, key.as_dict()

    async def revoke_key(call: AdminCall):
        call.body(())
        key = await service.revoke_key(store, call.params["id"], redis_url=ctx.redis_url)
        await log(call, "key.revoke", key.id, key.customer_id)
        return 200, key.as_dict()

    async def delete_key(call: AdminCall):
        key = await service.get_key(store, call.params["id"])
        await service.delete_key(store, key.id, redis_url=ctx.redis_url)
        await log(call, "key.delete", key.id, key.customer_id)
        return 200, {"id": key.id, "deleted": True}

    app.add("POST", "/admin/keys", create_key)
    app.add("GET", "/admin/keys", list_keys)
    app.add("GET", "/admin/keys/{id}", _show(service.get_key, store))
    app.add("PATCH", "/admin/keys/{id}", patch_key)
    app.add("POST", "/admin/keys/{id}/revoke", revoke_key)
    app.add("DELETE", "/admin/keys/{id}", delete_key)

    # ---- BYOK provider keys (kraken/accounts/byok.py) -----------------------------------
    from kraken.accounts import byok

    def keyring():
        if ctx.keyring is None:
            raise AdminError("BYOK is not configured (no master key)", status=409,
                             code="byok_not_configured", param="api_key")
        return ctx.keyring

    async def set_byok(call: AdminCall):
        body = call.body(("api_key",))
        if "api_key" not in body:
            raise val.invalid("api_key", "is required")
        entry = await byok.set_key(store, keyring(), call.params["id"], call.params["provider"],
                                   body["api_key"])
        await log(call, "byok.set", entry.provider, entry.customer_id)
        return 200, _byok(entry)

    async def list_byok(call: AdminCall):
        await service.get_customer(store, call.params["id"])
        return 200, {"data": [_byok(e) for e in await byok.list_keys(store, call.params["id"])]}

    async def delete_byok(call: AdminCall):
        await byok.delete_key(store, call.params["id"], call.params["provider"])
        await log(call, "byok.delete", call.params["provider"], call.params["id"])
        return 200, {"customer_id": call.params["id"], "provider": call.params["provider"],
                     "deleted": True}

    app.add("PUT", "/admin/customers/{id}/byok/{provider}", set_byok)
    app.add("GET", "/admin/customers/{id}/byok", list_byok)
    app.add("DELETE", "/admin/customers/{id}/byok/{provider}", delete_byok)


def _byok(entry) -> dict[str, Any]:
    return {"customer_id": entry.customer_id, "provider": entry.provider,
            "key_version": entry.key_version, "created_at": entry.created_at,
            "updated_at": entry.updated_at}
