"""``/v1/account/organisations/{id}/members`` and ``.../invitations``: the calling key's
organisation only (any other id: 404). Admins and owners manage members; only an owner may
make, demote or remove an owner; the last owner cannot leave or be demoted (the service
refuses it). Adding a member is inviting them: the membership exists once the invitee accepts
with their own key (account_invitations.py; the rules: kraken/accounts/invitations.py), and
an id no customer has is answered as any other. Admins list and revoke pending invitations."""
from __future__ import annotations

from kraken.accounts import invitations, service
from kraken.accounts import validation as v
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller, json_body
from kraken.http.exchange import Request


class OwnersOnly(service.ForbiddenError):
    """Only an owner may grant, change or remove the owner role."""

    code = "owner_required"


def owner_only(caller: Caller, field: str,
               message: str = "only an owner may make, demote or remove an owner") -> None:
    """403 ``owner_required`` unless the caller is an owner: an admin must not be able to take
    the organisation away from its owners (account_keys applies it to owners' keys)."""
    if caller.role != "owner":
        raise OwnersOnly(field, message)


async def _member(api: AccountApi, org_id: str, customer_id: str) -> str:
    role = await service.member_role(api.store, org_id, customer_id)
    if role is None:
        raise service.NotFoundError("customer_id", "is not a member of this organisation")
    return role


async def list_members(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = api.visible_org(caller, params["id"])
    members = await service.list_members(api.store, org_id)
    return 200, {"object": "list", "data": [m.as_dict() for m in members]}


async def add_member(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Invite ``customer_id``: 201 with the pending invitation, the same for any id."""
    org_id = api.visible_org(caller, params["id"])
    body = json_body(req, ("customer_id", "role"))
    role = v.text(body.get("role"), "role", required=True, max_len=32)
    if role == "owner":
        owner_only(caller, "role")
    inv = await invitations.invite(api.store, org_id, body.get("customer_id"), role,
                                   invited_by=caller.customer_id)
    await api.audit(caller, "invitation.create", inv.org_id, inv.customer_id,
                    invitation_id=inv.id, role=inv.role)
    return 201, inv.as_dict()


async def list_invitations(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = api.visible_org(caller, params["id"])
    pending = await invitations.of_org(api.store, org_id)
    return 200, {"object": "list", "data": [inv.as_dict() for inv in pending]}


async def revoke_invitation(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = api.visible_org(caller, params["id"])
    invitee = await invitations.revoke(api.store, org_id, params["invitation"])
    await api.audit(caller, "invitation.revoke", org_id, invitee,
                    invitation_id=params["invitation"])
    return 200, {"id": params["invitation"], "org_id": org_id, "deleted": True}


async def set_role(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = api.visible_org(caller, params["id"])
    body = json_body(req, ("role",))
    role = v.text(body.get("role"), "role", required=True, max_len=32)
    if role == "owner" or await _member(api, org_id, params["customer"]) == "owner":
        owner_only(caller, "role")
    m = await service.set_member_role(api.store, org_id, params["customer"], role)
    await api.audit(caller, "member.role", m.org_id, m.customer_id, role=m.role)
    return 200, m.as_dict()


async def remove_member(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = api.visible_org(caller, params["id"])
    customer_id = params["customer"]
    if await _member(api, org_id, customer_id) == "owner":
        owner_only(caller, "customer_id")
    revoked = await service.remove_member(api.store, org_id, customer_id,
                                          redis_url=api.redis_url)
    api.gateway.verifier.evict(revoked)  # its organisation keys: refused here at once
    await api.audit(caller, "member.remove", org_id, customer_id)
    return 200, {"org_id": org_id, "customer_id": customer_id, "deleted": True}
