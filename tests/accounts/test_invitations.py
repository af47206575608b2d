"""Organisation invitations (kraken/accounts/invitations.py) once per backend: a fresh SQLite
file, or a fresh database on this module's real PostgreSQL.

An invitation is not a membership until its invitee accepts; an unknown customer id is
invited exactly as a known one; only the invitee answers, once; pending invitations are
bounded per organisation and per invitee, also when two hosts invite at once; expired ones
are gone; erasure deletes a customer's invitations both ways.
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from kraken.accounts import invitations, service
from kraken.accounts.service import new_id
from backends import backend, pg_server, store  # noqa: F401  (fixtures: once per backend)

pytestmark = pytest.mark.anyio


async def customer(store, label: str = "c") -> str:
    return (await service.create_customer(store, f"{label}-{uuid.uuid4().hex[:10]}@example.com",
                                          label)).id


async def organisation(store, label: str = "Acme") -> tuple[str, str]:
    """(org id, its owner's customer id)."""
    owner = await customer(store, "owner")
    return (await service.create_organisation(store, label, owner)).id, owner


async def test_an_invitation_is_no_membership_until_the_invitee_accepts(store):
    org, owner = await organisation(store)
    invitee = await customer(store, "invitee")
    inv = await invitations.invite(store, org, invitee, "admin", invited_by=owner)
    assert (inv.org_id, inv.org_name, inv.customer_id, inv.role) == (org, "Acme", invitee, "admin")
    assert inv.expires_at == pytest.approx(inv.created_at + invitations.TTL_S)
    assert await service.member_role(store, org, invitee) is None
    assert [i.id for i in await invitations.of_customer(store, invitee)] == [inv.id]
    assert [i.id for i in await invitations.of_org(store, org)] == [inv.id]

    member = await invitations.accept(store, inv.id, invitee)
    assert (member.org_id, member.customer_id, member.role) == (org, invitee, "admin")
    assert await service.member_role(store, org, invitee) == "admin"
    assert await invitations.of_customer(store, invitee) == []
    assert await invitations.of_org(store, org) == []
    with pytest.raises(service.NotFoundError):  # used once
        await invitations.accept(store, inv.id, invitee)


async def test_an_unknown_customer_id_is_invited_exactly_as_a_known_one(store):
    org, owner = await organisation(store)
    known = await invitations.invite(store, org, await customer(store), "developer",
                                     invited_by=owner)
    unknown = await invitations.invite(store, org, new_id("cus"), "developer", invited_by=owner)
    shape = lambda inv: {k: v for k, v in inv.as_dict().items()  # noqa: E731
                         if k not in ("id", "customer_id", "created_at", "expires_at")}
    assert shape(known) == shape(unknown)
    assert {i.id for i in await invitations.of_org(store, org)} == {known.id, unknown.id}
    with pytest.raises(invitations.AlreadyInvited):  # the same refusals for both
        await invitations.invite(store, org, unknown.customer_id, "admin", invited_by=owner)
    with pytest.raises(invitations.AlreadyInvited):
        await invitations.invite(store, org, known.customer_id, "admin", invited_by=owner)


async def test_a_member_is_not_invited_again(store):
    org, owner = await organisation(store)
    with pytest.raises(service.ConflictError) as refused:
        await invitations.invite(store, org, owner, "developer", invited_by=owner)
    assert refused.value.field == "customer_id" and refused.value.status == 409


async def test_only_the_invitee_answers_and_decline_or_revoke_make_no_member(store):
    org, owner = await organisation(store)
    invitee, stranger = await customer(store), await customer(store)
    first = await invitations.invite(store, org, invitee, "developer", invited_by=owner)
    for answer in (invitations.accept, invitations.decline):
        with pytest.raises(service.NotFoundError):
            await answer(store, first.id, stranger)
    assert await service.member_role(store, org, stranger) is None
    assert await invitations.decline(store, first.id, invitee) == org
    assert await service.member_role(store, org, invitee) is None
    with pytest.raises(service.NotFoundError):
        await invitations.accept(store, first.id, invitee)

    second = await invitations.invite(store, org, invitee, "developer", invited_by=owner)
    other_org, _ = await organisation(store, "Other")
    with pytest.raises(service.NotFoundError):  # another organisation's id: not theirs
        await invitations.revoke(store, other_org, second.id)
    assert await invitations.revoke(store, org, second.id) == invitee
    with pytest.raises(service.NotFoundError):
        await invitations.accept(store, second.id, invitee)
    assert await service.member_role(store, org, invitee) is None


async def test_an_expired_invitation_is_gone_and_deleted_by_the_attempt(store):
    org, owner = await organisation(store)
    invitee = await customer(store)
    now = invitations.time.time()
    async with store.transaction() as tx:
        await tx.invitations.insert(tx, "inv_lapsed", org, invitee, "admin", owner, now - 10,
                                    now - 1)
    assert await invitations.of_customer(store, invitee) == []
    with pytest.raises(service.NotFoundError):
        await invitations.accept(store, "inv_lapsed", invitee)
    assert await service.member_role(store, org, invitee) is None
    async with store.transaction() as tx:
        assert await tx.invitations.invitation(tx, "inv_lapsed") is None


async def test_accepting_as_a_member_uses_the_invitation_up(store):
    org, owner = await organisation(store)
    invitee = await customer(store)
    inv = await invitations.invite(store, org, invitee, "restricted", invited_by=owner)
    await service.add_member(store, org, invitee, "developer")  # the operator added them
    with pytest.raises(service.ConflictError):
        await invitations.accept(store, inv.id, invitee)
    assert await service.member_role(store, org, invitee) == "developer"
    assert await invitations.of_customer(store, invitee) == []


async def test_pending_invitations_are_bounded_per_organisation_and_per_invitee(store,
                                                                               monkeypatch):
    monkeypatch.setattr(invitations, "MAX_PER_ORG", 3)
    monkeypatch.setattr(invitations, "MAX_PER_INVITEE", 2)
    org, owner = await organisation(store)
    for _ in range(3):
        await invitations.invite(store, org, new_id("cus"), "developer", invited_by=owner)
    with pytest.raises(invitations.TooManyOrgInvitations) as full:
        await invitations.invite(store, org, new_id("cus"), "developer", invited_by=owner)
    assert (full.value.status, full.value.code, full.value.field) == (
        409, "too_many_org_invitations", "org_id")
    await invitations.revoke(store, org, (await invitations.of_org(store, org))[0].id)
    await invitations.invite(store, org, new_id("cus"), "developer", invited_by=owner)

    invitee = await customer(store)
    for label in ("A", "B"):
        other, other_owner = await organisation(store, label)
        await invitations.invite(store, other, invitee, "developer", invited_by=other_owner)
    third, third_owner = await organisation(store, "C")
    with pytest.raises(invitations.TooManyInviteeInvitations) as buried:
        await invitations.invite(store, third, invitee, "developer", invited_by=third_owner)
    assert (buried.value.status, buried.value.code, buried.value.field) == (
        409, "too_many_invitee_invitations", "customer_id")
    assert len(await invitations.of_customer(store, invitee)) == 2


async def test_the_bounds_hold_when_two_hosts_invite_at_once(backend, store, monkeypatch):
    """Each host counts, then inserts: without a lock per organisation and per invitee both
    would count the same pending invitations and both insert past the bound."""
    (a, by_a), (b, by_b) = [await organisation(store, label) for label in ("A", "B")]
    crowded = [await organisation(store, f"Org {n}") for n in range(4)]
    invitees = [new_id("cus") for _ in range(4)]
    other = await backend.open()  # another host on the same database
    try:
        monkeypatch.setattr(invitations, "MAX_PER_INVITEE", 1)
        per_invitee = await asyncio.gather(*(
            call for invitee in invitees for call in (
                invitations.invite(store, a, invitee, "developer", invited_by=by_a),
                invitations.invite(other, b, invitee, "developer", invited_by=by_b))),
            return_exceptions=True)
        monkeypatch.setattr(invitations, "MAX_PER_INVITEE", 20)
        monkeypatch.setattr(invitations, "MAX_PER_ORG", 1)
        per_org = await asyncio.gather(*(
            invitations.invite(db, org, new_id("cus"), "developer", invited_by=owner)
            for org, owner in crowded for db in (store, other)), return_exceptions=True)
    finally:
        await other.close()
    for results, refusal in ((per_invitee, invitations.TooManyInviteeInvitations),
                             (per_org, invitations.TooManyOrgInvitations)):
        for pair in (results[i:i + 2] for i in range(0, len(results), 2)):
            assert sorted(type(r).__name__ for r in pair) == sorted(
                ["Invitation", refusal.__name__]), results
    for invitee in invitees:
        assert len(await invitations.of_customer(store, invitee)) == 1
    for org, _ in crowded:
        assert len(await invitations.of_org(store, org)) == 1


async def test_two_answers_at_once_use_the_invitation_once(backend, store):
    org, owner = await organisation(store)
    invitee = await customer(store)
    inv = await invitations.invite(store, org, invitee, "developer", invited_by=owner)
    other = await backend.open()
    try:
        results = await asyncio.gather(invitations.accept(store, inv.id, invitee),
                                       invitations.decline(other, inv.id, invitee),
                                       return_exceptions=True)
    finally:
        await other.close()
    gone = [r for r in results if isinstance(r, service.NotFoundError)]
    assert len(gone) == 1, results
    joined = isinstance(results[0], service.Member)
    assert await service.member_role(store, org, invitee) == ("developer" if joined else None)


async def test_erasure_deletes_a_customers_invitations_both_ways(store):
    """Those it received (keyed by its id) and those it sent as an admin of an organisation
    that outlives it (keyed by ``invited_by``, which no walk of customer_id finds)."""
    from kraken.privacy.erase import erase_customer

    admin_org, admin = await organisation(store, "Admin's")
    await service.add_member(store, admin_org, await customer(store), "owner")  # stays on
    inviting_org, inviter = await organisation(store, "Inviting")
    bystander = await customer(store)
    sent = [await invitations.invite(store, admin_org, invitee, "developer", invited_by=admin)
            for invitee in (bystander, new_id("cus"))]
    received = await invitations.invite(store, inviting_org, admin, "developer",
                                        invited_by=inviter)
    kept = await invitations.invite(store, inviting_org, bystander, "developer",
                                    invited_by=inviter)

    result = await erase_customer(store, admin, actor="test")
    assert result.rows_deleted["org_invitations"] == 3
    assert [i.id for i in await invitations.of_customer(store, bystander)] == [kept.id]
    assert await invitations.of_customer(store, admin) == []
    assert await invitations.of_org(store, admin_org) == []
    assert [i.id for i in await invitations.of_org(store, inviting_org)] == [kept.id]
    assert received.id != kept.id and all(inv.org_id == admin_org for inv in sent)


async def test_a_removed_members_invitations_are_revoked_with_the_removal(store):
    """An invitation carries its sender's authority to add members: once the sender is no
    longer a member, it must not be accepted. Others' invitations, and the sender's in
    another organisation where it is still an admin, stay."""
    org, owner = await organisation(store)
    other_org, _ = await organisation(store, "Other")
    leaver = await customer(store, "leaver")
    await service.add_member(store, org, leaver, "admin")
    await service.add_member(store, other_org, leaver, "admin")
    invitee = await customer(store, "invitee")
    sent = await invitations.invite(store, org, invitee, "developer", invited_by=leaver)
    elsewhere = await invitations.invite(store, other_org, invitee, "developer",
                                         invited_by=leaver)
    kept = await invitations.invite(store, org, new_id("cus"), "developer", invited_by=owner)

    await service.remove_member(store, org, leaver)
    assert [i.id for i in await invitations.of_org(store, org)] == [kept.id]
    assert [i.id for i in await invitations.of_org(store, other_org)] == [elsewhere.id]
    with pytest.raises(service.NotFoundError):
        await invitations.accept(store, sent.id, invitee)
    assert await service.member_role(store, org, invitee) is None


async def test_a_member_demoted_below_admin_loses_the_invitations_it_sent(store):
    """Demoted to developer or restricted, the sender may no longer invite: what it sent goes
    with the demotion. An owner made admin still may, and keeps them; a refused demotion (the
    last owner) revokes nothing."""
    org, owner = await organisation(store)
    co_owner, admin = await customer(store, "co-owner"), await customer(store, "admin")
    for who, role in ((co_owner, "owner"), (admin, "admin")):
        await service.add_member(store, org, who, role)
    by = {who: await invitations.invite(store, org, new_id("cus"), "developer", invited_by=who)
          for who in (owner, co_owner, admin)}

    await service.set_member_role(store, org, co_owner, "admin")  # still manages members
    await service.set_member_role(store, org, admin, "developer")
    assert {i.id for i in await invitations.of_org(store, org)} == {by[owner].id,
                                                                    by[co_owner].id}
    await service.set_member_role(store, org, co_owner, "restricted")
    with pytest.raises(service.ValidationError):  # the last owner stays, and so does its
        await service.set_member_role(store, org, owner, "developer")  # invitation
    assert [i.id for i in await invitations.of_org(store, org)] == [by[owner].id]
