"""Admin routes for Kraken API keys (and their limits) and BYOK provider keys
(kraken/accounts/byok.py). Each change is written to the audit log: who, what, which target,
field names only (never values, never secrets)."""
from __future__ import annotations

from typing import Any

from kraken.accounts import byok, service
from kraken.admin import paging
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.errors import ByokNotConfigured
from kraken.admin.route_group import Route, RouteGroup, changes
from kraken.admin.server import AdminApp, AdminCall

KEY_LIMIT_FIELDS = ("name", "expires_at", "allowed_models", "rpm", "tpm", "max_concurrent",
                    "token_budget", "spend_budget_usd")


class KeyRoutes(RouteGroup):
    """Kraken API keys and customers' own provider keys (BYOK)."""

    def routes(self) -> list[Route]:
        return [
            ("POST", "/admin/keys", self.create_key),
            ("GET", "/admin/keys", self.list_keys),
            ("GET", "/admin/keys/{id}", self.show_key),
            ("PATCH", "/admin/keys/{id}", self.patch_key),
            ("POST", "/admin/keys/{id}/revoke", self.revoke_key),
            ("DELETE", "/admin/keys/{id}", self.delete_key),
            ("PUT", "/admin/customers/{id}/byok/{provider}", self.set_byok),
            ("GET", "/admin/customers/{id}/byok", self.list_byok),
            ("DELETE", "/admin/customers/{id}/byok/{provider}", self.delete_byok),
        ]

    # ---- Kraken API keys and their limits ----------------------------------------------
    async def create_key(self, call: AdminCall):
        body = call.body(("customer_id", "org_id", "env", *KEY_LIMIT_FIELDS))
        cid = val.text(body, "customer_id", required=True, max_len=64)
        kwargs = {k: body[k] for k in ("org_id", "env", *KEY_LIMIT_FIELDS) if k in body}
        created = await service.create_key(self.store, cid, **kwargs)
        key = created.key
        await self._audit(call, "key.create", key.id, key.customer_id, fields=sorted(kwargs))
        # The only time the secret leaves Kraken: this response, never a log or a row.
        return 201, {"key": key.as_dict(), "secret": created.plaintext}

    async def list_keys(self, call: AdminCall):
        q = call.query(("customer", "org", "include_revoked", "limit", "after"))
        include = val.choice(q.get("include_revoked"), "include_revoked", ("true", "false"), "true")
        size = paging.limit(q.get("limit"))
        keys = await service.list_keys(
            self.store, customer_id=val.ident(q.get("customer"), "customer", required=False),
            org_id=val.ident(q.get("org"), "org", required=False),
            include_revoked=include == "true", limit=size + 1,
            after=val.ident(q.get("after"), "after", required=False))
        return 200, paging.page(keys, size, lambda k: k.id, lambda k: k.as_dict())

    async def show_key(self, call: AdminCall):
        return 200, (await service.get_key(self.store, call.params["id"])).as_dict()

    async def patch_key(self, call: AdminCall):
        body = changes(call, KEY_LIMIT_FIELDS)
        key = await service.update_key(self.store, call.params["id"], **body)
        await self._audit(call, "key.update", key.id, key.customer_id, fields=sorted(body))
        return 200, key.as_dict()

    async def revoke_key(self, call: AdminCall):
        call.body(())
        key = await service.revoke_key(self.store, call.params["id"],
                                       redis_url=self.ctx.redis_url)
        await self._audit(call, "key.revoke", key.id, key.customer_id)
        return 200, key.as_dict()

    async def delete_key(self, call: AdminCall):
        key = await service.get_key(self.store, call.params["id"])
        await service.delete_key(self.store, key.id, redis_url=self.ctx.redis_url)
        await self._audit(call, "key.delete", key.id, key.customer_id)
        return 200, {"id": key.id, "deleted": True}

    # ---- BYOK provider keys ------------------------------------------------------------
    def _keyring(self):
        if self.ctx.keyring is None:
            raise ByokNotConfigured("BYOK is not configured (no master key)", param="api_key")
        return self.ctx.keyring

    async def set_byok(self, call: AdminCall):
        body = call.body(("api_key",))
        if "api_key" not in body:
            raise val.invalid("api_key", "is required")
        entry = await byok.set_key(self.store, self._keyring(), call.params["id"],
                                   call.params["provider"], body["api_key"])
        await self._audit(call, "byok.set", entry.provider, entry.customer_id)
        return 200, _byok(entry)

    async def list_byok(self, call: AdminCall):
        await service.get_customer(self.store, call.params["id"])
        return 200, {"data": [_byok(e) for e in await byok.list_keys(self.store, call.params["id"])]}

    async def delete_byok(self, call: AdminCall):
        await byok.delete_key(self.store, call.params["id"], call.params["provider"])
        await self._audit(call, "byok.delete", call.params["provider"], call.params["id"])
        return 200, {"customer_id": call.params["id"], "provider": call.params["provider"],
                     "deleted": True}


def _byok(entry) -> dict[str, Any]:
    """A BYOK entry as the API shows it: never the key, only which provider and when."""
    return {"customer_id": entry.customer_id, "provider": entry.provider,
            "key_version": entry.key_version, "created_at": entry.created_at,
            "updated_at": entry.updated_at}


def register(app: AdminApp, ctx: AdminContext) -> None:
    KeyRoutes(ctx).bind(app)
