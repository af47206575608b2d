"""Admin routes for customers, organisations and their members (Kraken API keys and BYOK
keys: routes_keys.py). Each change is written to the audit log: who, what, which target,
field names only (never values, never secrets)."""
from __future__ import annotations

from kraken.accounts import service
from kraken.admin import paging
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.route_group import Route, RouteGroup, changes
from kraken.admin.server import AdminApp, AdminCall

CUSTOMER_FIELDS = ("email", "name", "plan", "opted_out")


class AccountRoutes(RouteGroup):
    """Customers, organisations and members."""

    def routes(self) -> list[Route]:
        return [
            ("POST", "/admin/customers", self.create_customer),
            ("GET", "/admin/customers", self.list_customers),
            ("GET", "/admin/customers/{id}", self.show_customer),
            ("PATCH", "/admin/customers/{id}", self.patch_customer),
            ("POST", "/admin/customers/{id}/object", self.object_),
            ("POST", "/admin/organisations", self.create_org),
            ("GET", "/admin/organisations", self.list_orgs),
            ("GET", "/admin/organisations/{id}", self.get_org),
            ("PATCH", "/admin/organisations/{id}", self.patch_org),
            ("DELETE", "/admin/organisations/{id}", self.delete_org),
            ("GET", "/admin/organisations/{id}/members", self.list_members),
            ("POST", "/admin/organisations/{id}/members", self.add_member),
            ("PATCH", "/admin/organisations/{id}/members/{customer}", self.set_role),
            ("DELETE", "/admin/organisations/{id}/members/{customer}", self.remove_member),
        ]

    # ---- customers ---------------------------------------------------------------------
    async def create_customer(self, call: AdminCall):
        body = call.body(CUSTOMER_FIELDS)
        if "email" not in body:
            raise val.invalid("email", "is required")
        kwargs = {k: body[k] for k in ("plan", "opted_out") if k in body}
        cus = await service.create_customer(self.store, body["email"], body.get("name"), **kwargs)
        await self._audit(call, "customer.create", cus.id, cus.id, fields=sorted(body))
        return 201, cus.as_dict()

    async def list_customers(self, call: AdminCall):
        q = call.query(("limit", "after"))
        size = paging.limit(q.get("limit"), most=10_000)
        after = val.ident(q.get("after"), "after", required=False)
        rows = await service.list_customers(self.store, limit=size, after=after)
        if len(rows) == size:  # one more past the page says whether there is a next one
            rows += await service.list_customers(self.store, limit=1, after=rows[-1].id)
        return 200, paging.page(rows, size, lambda c: c.id, lambda c: c.as_dict())

    async def show_customer(self, call: AdminCall):
        return 200, (await service.get_customer(self.store, call.params["id"])).as_dict()

    async def patch_customer(self, call: AdminCall):
        body = changes(call, CUSTOMER_FIELDS)
        cus = await service.update_customer(self.store, call.params["id"], **body)
        await self._audit(call, "customer.update", cus.id, cus.id, fields=sorted(body))
        return 200, cus.as_dict()

    async def object_(self, call: AdminCall):
        """Right to object: leave this customer's metadata out of routing statistics."""
        body = call.body(("opted_out",))
        opted = val.boolean(body, "opted_out")
        opted = True if opted is None else opted
        cus = await service.update_customer(self.store, call.params["id"], opted_out=opted)
        await self._audit(call, "customer.object", cus.id, cus.id, opted_out=opted)
        return 200, cus.as_dict()

    # ---- organisations -----------------------------------------------------------------
    async def create_org(self, call: AdminCall):
        body = call.body(("name", "owner_id"))
        owner = val.text(body, "owner_id", required=True, max_len=64)
        name = val.text(body, "name", required=True)
        org = await service.create_organisation(self.store, name, owner)
        await self._audit(call, "organisation.create", org.id, owner)
        return 201, org.as_dict()

    async def list_orgs(self, call: AdminCall):
        q = call.query(("customer", "limit", "after"))
        customer = val.ident(q.get("customer"), "customer", required=False)
        size = paging.limit(q.get("limit"))
        orgs = await service.list_organisations(
            self.store, customer_id=customer, limit=size + 1,
            after=val.ident(q.get("after"), "after", required=False))
        return 200, paging.page(orgs, size, lambda o: o.id, lambda o: o.as_dict())

    async def get_org(self, call: AdminCall):
        org = await service.get_organisation(self.store, call.params["id"])
        members = await service.list_members(self.store, org.id)
        return 200, {**org.as_dict(), "members": [m.as_dict() for m in members]}

    async def patch_org(self, call: AdminCall):
        body = call.body(("name",))
        name = val.text(body, "name", required=True)
        org = await service.rename_organisation(self.store, call.params["id"], name)
        await self._audit(call, "organisation.update", org.id, None, fields=["name"])
        return 200, org.as_dict()

    async def delete_org(self, call: AdminCall):
        await service.delete_organisation(self.store, call.params["id"])
        await self._audit(call, "organisation.delete", call.params["id"], None)
        return 200, {"id": call.params["id"], "deleted": True}

    # ---- members -----------------------------------------------------------------------
    async def list_members(self, call: AdminCall):
        q = call.query(("limit", "after"))
        size = paging.limit(q.get("limit"))
        await service.get_organisation(self.store, call.params["id"])
        members = await service.list_members(
            self.store, call.params["id"], limit=size + 1,
            after=val.ident(q.get("after"), "after", required=False))
        return 200, paging.page(members, size, lambda m: m.customer_id, lambda m: m.as_dict())

    async def add_member(self, call: AdminCall):
        body = call.body(("customer_id", "role"))
        cid = val.text(body, "customer_id", required=True, max_len=64)
        role = val.text(body, "role", required=True, max_len=32)
        m = await service.add_member(self.store, call.params["id"], cid, role)
        await self._audit(call, "member.add", m.org_id, m.customer_id, role=m.role)
        return 201, m.as_dict()

    async def set_role(self, call: AdminCall):
        body = call.body(("role",))
        role = val.text(body, "role", required=True, max_len=32)
        m = await service.set_member_role(self.store, call.params["id"], call.params["customer"],
                                          role)
        await self._audit(call, "member.role", m.org_id, m.customer_id, role=m.role)
        return 200, m.as_dict()

    async def remove_member(self, call: AdminCall):
        await service.remove_member(self.store, call.params["id"], call.params["customer"],
                                    redis_url=self.ctx.redis_url)
        await self._audit(call, "member.remove", call.params["id"], call.params["customer"])
        return 200, {"org_id": call.params["id"], "customer_id": call.params["customer"],
                     "deleted": True}


def register(app: AdminApp, ctx: AdminContext) -> None:
    AccountRoutes(ctx).bind(app)
