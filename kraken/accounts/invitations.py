"""Organisation invitations: a customer joins an organisation only by their own consent.

An organisation's admin invites a customer id (``invite``); the membership exists only once
that customer accepts with their own key (``accept``). They may decline, the organisation
may revoke, and an invitation nobody answers lapses after ``TTL_S``. An invitation holds its
sender's authority: a sender removed from the organisation or demoted below admin takes the
invitations it sent with it (``service.remove_member``, ``service.set_member_role``). An id
no customer has is invited like any other (stored, listed, counted, lapsing unanswered), so
the answer never tells whether an id exists. Pending invitations are bounded per organisation
and per invitee (409 naming which), so no one can be buried in invitations nor a table grown
without bound.
The operator's admin API still adds members directly (``service.add_member``): the operator
is trusted. Rows are ``store.invitations`` (kraken/store/invitations_sql.py); an erasure
deletes every invitation to or from the customer (``delete_involving_in``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kraken.accounts import validation as v
from kraken.accounts.roles import role as _role
from kraken.accounts.service import (MAX_MEMBERS, Member, new_id, room_for_member_in,
                                     too_many_members)

TTL_S = 7 * 86_400.0
"""An invitation lapses a week after it was made."""
MAX_PER_ORG = 100
"""Pending invitations one organisation may have."""
MAX_PER_INVITEE = 20
"""Pending invitations one customer id may have, from all organisations together."""


class TooManyOrgInvitations(v.ConflictError):
    """The organisation has ``MAX_PER_ORG`` pending invitations: revoke some first."""

    code = "too_many_org_invitations"


class TooManyInviteeInvitations(v.ConflictError):
    """The invitee has ``MAX_PER_INVITEE`` pending invitations: they must answer some first."""

    code = "too_many_invitee_invitations"


class AlreadyInvited(v.ConflictError):
    """The organisation already has a pending invitation for this customer id."""

    code = "already_invited"


@dataclass(frozen=True, slots=True)
class Invitation:
    """A pending offer of membership (who invited is kept for erasure, never shown)."""

    id: str
    org_id: str
    org_name: str
    customer_id: str
    role: str
    created_at: float
    expires_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"object": "organisation.invitation", "id": self.id, "org_id": self.org_id,
                "org_name": self.org_name, "customer_id": self.customer_id, "role": self.role,
                "created_at": self.created_at, "expires_at": self.expires_at}


def _invitation(row: tuple) -> Invitation:
    """An ``INVITATION_COLS`` row (its ``invited_by`` left out)."""
    return Invitation(row[0], row[1], row[2], row[3], row[4], float(row[6]), float(row[7]))


def _gone() -> v.NotFoundError:
    return v.NotFoundError("invitation_id", "no such pending invitation (answered, revoked "
                                            "or expired)")


async def invite(store, org_id: str, customer_id: object, role: object, *,
                 invited_by: str) -> Invitation:
    """A pending invitation of ``customer_id`` into the organisation, whether or not such a
    customer exists; 409 if already a member, already invited, or a bound is reached."""
    org_id = v.identifier(org_id, "org_id")
    customer_id = v.identifier(customer_id, "customer_id")
    role = _role(role)
    now = time.time()
    invitation_id = new_id("inv")
    async with store.transaction() as tx:
        pending = tx.invitations
        await pending.lock(tx, org_id, customer_id)
        await pending.purge(tx, now)
        org = await tx.accounts.organisation(tx, org_id)
        if org is None:
            raise v.NotFoundError("org_id", "no such organisation")
        if await tx.accounts.is_member(tx, org_id, customer_id):
            raise v.ConflictError("customer_id", "is already a member")
        if await tx.accounts.member_count(tx, org_id) >= MAX_MEMBERS:  # accept's check is exact
            raise too_many_members("org_id")
        if await pending.invited(tx, org_id, customer_id):
            raise AlreadyInvited("customer_id", "already has a pending invitation from this "
                                                "organisation (revoke it to invite again)")
        if await pending.count_of_org(tx, org_id, now) >= MAX_PER_ORG:
            raise TooManyOrgInvitations("org_id", f"has {MAX_PER_ORG} pending invitations, "
                                                  "the most it may have: revoke some first")
        if await pending.count_of_customer(tx, customer_id, now) >= MAX_PER_INVITEE:
            raise TooManyInviteeInvitations(
                "customer_id", f"has {MAX_PER_INVITEE} pending invitations, the most one "
                               "customer may have: try again once they answered some")
        await pending.insert(tx, invitation_id, org_id, customer_id, role, invited_by, now,
                             now + TTL_S)
    return Invitation(invitation_id, org_id, org[1], customer_id, role, now, now + TTL_S)


async def of_org(store, org_id: str) -> list[Invitation]:
    """The organisation's pending invitations, oldest first."""
    rows = await store.invitations.of_org(store, v.identifier(org_id, "org_id"), time.time())
    return [_invitation(r) for r in rows]


async def of_customer(store, customer_id: str) -> list[Invitation]:
    """The pending invitations addressed to the customer, oldest first."""
    rows = await store.invitations.of_customer(store, v.identifier(customer_id, "customer_id"),
                                               time.time())
    return [_invitation(r) for r in rows]


async def accept(store, invitation_id: object, customer_id: str) -> Member:
    """The customer's answer yes: the membership, and the invitation used up. 404 for an
    invitation that is not this customer's or no longer pending; 409 if already a member."""
    invitation_id = v.identifier(invitation_id, "invitation_id")
    now = time.time()
    async with store.transaction() as tx:
        taken = await tx.invitations.take(tx, invitation_id, customer_id)
        live = taken is not None and taken[2] > now
        member = live and await tx.accounts.is_member(tx, taken[0], customer_id)
        if live and not member:  # full: rolled back, the invitation waits for room
            await room_for_member_in(tx, taken[0], "org_id")
            await tx.accounts.insert_member(tx, taken[0], customer_id, taken[1], now)
    if not live:  # committed all the same: an expired invitation is deleted by the attempt
        raise _gone()
    if member:
        raise v.ConflictError("invitation_id", "you are already a member of this organisation")
    return Member(taken[0], customer_id, taken[1], now)


async def decline(store, invitation_id: object, customer_id: str) -> str:
    """The customer's answer no: the invitation deleted; its organisation's id. 404 as for
    ``accept``."""
    invitation_id = v.identifier(invitation_id, "invitation_id")
    async with store.transaction() as tx:
        taken = await tx.invitations.take(tx, invitation_id, customer_id)
    if taken is None or taken[2] <= time.time():
        raise _gone()
    return taken[0]


async def revoke(store, org_id: str, invitation_id: object) -> str:
    """The organisation withdraws its invitation; the invitee's id (404 if the organisation
    has no such pending invitation)."""
    org_id = v.identifier(org_id, "org_id")
    invitation_id = v.identifier(invitation_id, "invitation_id")
    async with store.transaction() as tx:
        await tx.invitations.purge(tx, time.time())
        invitee = await tx.invitations.revoke(tx, invitation_id, org_id)
    if invitee is None:
        raise _gone()
    return invitee


async def delete_involving_in(tx, customer_id: str) -> int:
    """Inside the caller's transaction (erasure): every invitation to or from the customer."""
    return await tx.invitations.delete_involving(tx, v.identifier(customer_id, "customer_id"))
