"""Adding a member through the account API is an invitation the invitee answers with their own
key, against a real Kraken on loopback sockets (accounts made through the service layer in the
same SQLite file; the rules on both backends: tests/accounts/test_invitations.py).

The invitation is no membership until accepted; an unknown customer id gets the same answer
as a known one; only the invitee answers; admins list and revoke; the bounds answer 409 with
their own codes; every step is audited with the caller's key; the operator's admin API still
adds members at once.
"""
from __future__ import annotations

import pytest

from adminkit import Admin, admin_doc
from harness import free_port, running_kraken, running_mock
from kraken.accounts import invitations, service
from kraken.accounts.service import new_id
from kraken.store.sqlite import SqliteStore
from test_account_api import World, assert_error, audited, new_customer, new_key, populate

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return ("asyncio", {"use_uvloop": True})


@pytest.fixture(scope="module")
async def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("invitations")
    admin_port = free_port()
    async with running_mock() as mock:
        async with running_kraken(admin_doc(tmp, mock.port, admin_port)) as k:
            store = await SqliteStore.open(str(k.db_path))
            try:
                yield await populate(k.port, store), Admin(admin_port, k.db_path)
            finally:
                await store.close()


def members_path(w: World, *rest: str) -> str:
    return "/".join((f"/v1/account/organisations/{w.org}/members", *rest))


def invitations_path(w: World, *rest: str) -> str:
    return "/".join((f"/v1/account/organisations/{w.org}/invitations", *rest))


async def test_a_member_added_by_an_admin_is_invited_and_joins_only_on_accepting(env):
    w, _ = env
    admin = w.members["admin"]
    invitee = await new_key(w.store, await new_customer(w.store, "invitee"), None)
    reply = await w.call(admin, "POST", members_path(w),
                         {"customer_id": invitee.customer_id, "role": "developer"})
    assert reply.status == 201, reply.body
    inv = reply.json()
    assert {k: inv[k] for k in ("object", "org_id", "org_name", "customer_id", "role")} == {
        "object": "organisation.invitation", "org_id": w.org, "org_name": "Acme",
        "customer_id": invitee.customer_id, "role": "developer"}
    assert inv["id"].startswith("inv_") and inv["expires_at"] > inv["created_at"]
    listed = (await w.call(admin, "GET", members_path(w))).json()["data"]
    assert invitee.customer_id not in {m["customer_id"] for m in listed}
    assert await service.member_role(w.store, w.org, invitee.customer_id) is None

    mine = (await w.call(invitee, "GET", "/v1/account/invitations")).json()
    assert mine["data"] == [inv]
    joined = await w.call(invitee, "POST", f"/v1/account/invitations/{inv['id']}/accept")
    assert joined.status == 200, joined.body
    assert joined.json()["org_id"] == w.org and joined.json()["role"] == "developer"
    assert await service.member_role(w.store, w.org, invitee.customer_id) == "developer"
    assert (await w.call(invitee, "GET", "/v1/account/invitations")).json()["data"] == []
    assert await audited(w, admin, "invitation.create") >= 1
    assert await audited(w, invitee, "invitation.accept") == 1


async def test_an_unknown_customer_id_gets_the_answer_a_known_one_gets(env):
    w, _ = env
    admin = w.members["admin"]
    known = await new_customer(w.store, "known")
    answers = [await w.call(admin, "POST", members_path(w), {"customer_id": cid, "role": "admin"})
               for cid in (known, new_id("cus"))]
    assert [a.status for a in answers] == [201, 201]
    bodies = [a.json() for a in answers]
    assert bodies[0].keys() == bodies[1].keys()
    varying = ("id", "customer_id", "created_at", "expires_at")
    assert [{k: v for k, v in b.items() if k not in varying} for b in bodies] == [
        {k: v for k, v in bodies[0].items() if k not in varying}] * 2
    assert answers[0].headers.keys() == answers[1].headers.keys()
    again = [await w.call(admin, "POST", members_path(w), {"customer_id": b["customer_id"],
                                                           "role": "admin"}) for b in bodies]
    for reply in again:  # the same refusal too
        assert_error(reply, 409, "already_invited", param="customer_id")


async def test_only_the_invitee_answers_and_declining_makes_no_member(env):
    w, _ = env
    invitee = await new_key(w.store, await new_customer(w.store, "invitee"), None)
    inv = (await w.call(w.members["owner"], "POST", members_path(w),
                        {"customer_id": invitee.customer_id, "role": "restricted"})).json()
    for stranger in (w.personal, w.members["admin"], w.foreign):
        for answer in ("accept", "decline"):
            reply = await w.call(stranger, "POST", f"/v1/account/invitations/{inv['id']}/{answer}")
            assert_error(reply, 404, "not_found", param="invitation_id")
        mine = (await w.call(stranger, "GET", "/v1/account/invitations")).json()["data"]
        assert inv["id"] not in {i["id"] for i in mine}
    declined = await w.call(invitee, "POST", f"/v1/account/invitations/{inv['id']}/decline")
    assert declined.status == 200 and declined.json()["declined"] is True
    late = await w.call(invitee, "POST", f"/v1/account/invitations/{inv['id']}/accept")
    assert_error(late, 404, "not_found", param="invitation_id")
    assert await service.member_role(w.store, w.org, invitee.customer_id) is None
    assert await audited(w, invitee, "invitation.decline") == 1


async def test_admins_list_and_revoke_their_organisations_pending_invitations(env):
    w, _ = env
    admin = w.members["admin"]
    invitee = await new_key(w.store, await new_customer(w.store, "invitee"), None)
    inv = (await w.call(admin, "POST", members_path(w),
                        {"customer_id": invitee.customer_id, "role": "developer"})).json()
    pending = (await w.call(admin, "GET", invitations_path(w))).json()["data"]
    assert inv in pending and {i["org_id"] for i in pending} == {w.org}
    revoked = await w.call(admin, "DELETE", invitations_path(w, inv["id"]))
    assert revoked.status == 200 and revoked.json()["deleted"] is True
    assert inv["id"] not in {i["id"] for i in
                             (await w.call(admin, "GET", invitations_path(w))).json()["data"]}
    assert_error(await w.call(admin, "DELETE", invitations_path(w, inv["id"])), 404, "not_found")
    refused = await w.call(invitee, "POST", f"/v1/account/invitations/{inv['id']}/accept")
    assert_error(refused, 404, "not_found")
    assert await audited(w, admin, "invitation.revoke") >= 1


async def test_only_an_owner_invites_an_owner(env):
    w, _ = env
    target = await new_customer(w.store, "would-be-owner")
    reply = await w.call(w.members["admin"], "POST", members_path(w),
                         {"customer_id": target, "role": "owner"})
    assert_error(reply, 403, "owner_required", param="role")
    assert await invitations.of_customer(w.store, target) == []
    reply = await w.call(w.members["owner"], "POST", members_path(w),
                         {"customer_id": target, "role": "owner"})
    assert reply.status == 201 and reply.json()["role"] == "owner"


async def test_the_bounds_answer_409_naming_what_is_full(env, monkeypatch):
    w, _ = env
    owner = await new_customer(w.store, "busy-owner")
    org = (await service.create_organisation(w.store, "Busy", owner)).id
    key = await new_key(w.store, owner, org)
    path = f"/v1/account/organisations/{org}/members"
    monkeypatch.setattr(invitations, "MAX_PER_ORG", 2)
    made = [await w.call(key, "POST", path, {"customer_id": new_id("cus"), "role": "developer"})
            for _ in range(2)]
    assert [r.status for r in made] == [201, 201]
    full = await w.call(key, "POST", path, {"customer_id": new_id("cus"), "role": "developer"})
    error = assert_error(full, 409, "too_many_org_invitations", param="org_id")
    assert "2" in error["message"]

    monkeypatch.setattr(invitations, "MAX_PER_ORG", 100)
    monkeypatch.setattr(invitations, "MAX_PER_INVITEE", 1)
    invitee = new_id("cus")
    first = await w.call(w.members["owner"], "POST", members_path(w),
                         {"customer_id": invitee, "role": "developer"})
    assert first.status == 201
    buried = await w.call(key, "POST", path, {"customer_id": invitee, "role": "developer"})
    assert_error(buried, 409, "too_many_invitee_invitations", param="customer_id")


async def test_the_operators_admin_api_still_adds_members_at_once(env):
    w, admin_api = env
    target = await new_customer(w.store, "direct")
    added = await admin_api.ok("POST", f"/admin/organisations/{w.org}/members",
                               {"customer_id": target, "role": "developer"}, 201)
    assert added["customer_id"] == target and added["role"] == "developer"
    assert await service.member_role(w.store, w.org, target) == "developer"
    assert await invitations.of_customer(w.store, target) == []
