"""``/v1/account/invitations``: the organisation invitations addressed to the caller's
customer, and their answers. Only the invitee answers, with any of their own keys: accepting
makes the membership (with the invited role), declining deletes the invitation. Another
customer's invitation, or one no longer pending, is 404 (the rules:
kraken/accounts/invitations.py)."""
from __future__ import annotations

from kraken.accounts import invitations
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller
from kraken.http.exchange import Request


async def list_mine(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    pending = await invitations.of_customer(api.store, caller.customer_id)
    return 200, {"object": "list", "data": [inv.as_dict() for inv in pending]}


async def accept(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Join the organisation: 200 with the membership."""
    m = await invitations.accept(api.store, params["id"], caller.customer_id)
    await api.audit(caller, "invitation.accept", m.org_id, m.customer_id,
                    invitation_id=params["id"], role=m.role)
    return 200, m.as_dict()


async def decline(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    org_id = await invitations.decline(api.store, params["id"], caller.customer_id)
    await api.audit(caller, "invitation.decline", org_id, caller.customer_id,
                    invitation_id=params["id"])
    return 200, {"id": params["id"], "org_id": org_id, "declined": True}
