"""The self-service account API (``/v1/account/...``) against a real Kraken on loopback sockets,
with accounts and keys created through the service layer in the same SQLite file.

The permission table is the spec: every (role, action) pair is tried; an allowed one is done
and audited with the caller's key id, a refused one is a 403 naming the missing permission and
changes nothing. Each route is tried with another customer's or organisation's id (404), new
keys are never wider than the calling key, a secret is shown once, and a revoked key is
refused on its next request."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from adminkit import Member, admin_doc
from harness import TEST_KEY, free_port, http, running_kraken, running_mock
from kraken import audit
from kraken.accounts import invitations, service
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

ROLES = ("owner", "admin", "developer", "restricted")
MODELS = "/v1/models"


@pytest.fixture(scope="module")
def anyio_backend():
    return ("asyncio", {"use_uvloop": True})


@dataclass
class World:
    port: int
    store: Any
    org: str
    members: dict[str, Member]
    """Org A's owner, admin, developer and restricted member, each with an org key."""
    personal: Member
    """A customer outside any organisation, with a personal key."""
    foreign_org: str
    foreign: Member
    """Org B's owner and its key: never reachable from org A's keys."""
    foreign_invitation: str
    """Org B's pending invitation of a customer of its own."""

    async def call(self, who: Member | str, method: str, path: str, body: Any = None):
        secret = who if isinstance(who, str) else who.secret
        raw = b"" if body is None else json.dumps(body).encode()
        return await http(self.port, method, path, raw,
                          {"authorization": f"Bearer {secret}",
                           "content-type": "application/json"})


async def new_customer(store, label: str) -> str:
    return (await service.create_customer(
        store, f"{label}-{uuid.uuid4().hex[:10]}@example.com", label)).id


async def new_key(store, customer_id: str, org_id: str | None, **limits: Any) -> Member:
    created = await service.create_key(store, customer_id, org_id=org_id, rounds=4, **limits)
    return Member(customer_id, created.key.id, created.plaintext)


@pytest.fixture(scope="module")
async def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("account")
    async with running_mock() as mock:
        async with running_kraken(admin_doc(tmp, mock.port, free_port())) as k:
            store = await SqliteStore.open(str(k.db_path))
            try:
                yield await populate(k.port, store)
            finally:
                await store.close()


async def populate(port: int, store) -> World:
    owner = await new_customer(store, "owner")
    org = (await service.create_organisation(store, "Acme", owner)).id
    members = {"owner": await new_key(store, owner, org)}
    for role in ROLES[1:]:
        cid = await new_customer(store, role)
        await service.add_member(store, org, cid, role)
        members[role] = await new_key(store, cid, org)
    personal = await new_key(store, await new_customer(store, "solo"), None)
    foreign_owner = await new_customer(store, "foreign")
    foreign_org = (await service.create_organisation(store, "Other", foreign_owner)).id
    foreign = await new_key(store, foreign_owner, foreign_org)
    foreign_invitation = (await invitations.invite(
        store, foreign_org, await new_customer(store, "invitee"), "developer",
        invited_by=foreign_owner)).id
    return World(port, store, org, members, personal, foreign_org, foreign, foreign_invitation)


async def audited(w: World, who: Member, action: str) -> int:
    entries = await audit.list_entries(w.store, limit=100_000)
    return sum(1 for e in entries if e.actor == f"key:{who.key_id}" and e.action == action)


def assert_error(reply, status: int, code: str, *, param: str | None = None) -> dict:
    assert reply.status == status, (reply.status, reply.body)
    error = reply.json()["error"]  # OpenAI's shape: message, type, param, code
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


# ---- the permission table as a spec ----------------------------------------------------------
# action -> (roles allowed, method, path template, body or None). "{org}" is the caller's
# organisation; "{key}" a fresh key of the caller, "{member}" a fresh developer of the org.

SPEC: dict[str, tuple[frozenset[str], str, str, Any]] = {
    "read_profile": (frozenset(ROLES), "GET", "/v1/account", None),
    "rectify_profile": (frozenset(ROLES), "PATCH", "/v1/account", {"name": "Renamed"}),
    "list_keys": (frozenset(ROLES[:3]), "GET", "/v1/account/keys", None),
    "create_key": (frozenset(ROLES[:3]), "POST", "/v1/account/keys", {"name": "ci"}),
    "revoke_key": (frozenset(ROLES[:3]), "POST", "/v1/account/keys/{key}/revoke", None),
    "delete_key": (frozenset(ROLES[:3]), "DELETE", "/v1/account/keys/{key}", None),
    "list_members": (frozenset(ROLES[:2]), "GET", "/v1/account/organisations/{org}/members",
                     None),
    "add_member": (frozenset(ROLES[:2]), "POST", "/v1/account/organisations/{org}/members",
                   {"customer_id": "{outsider}", "role": "developer"}),
    "list_invitations": (frozenset(ROLES[:2]), "GET",
                         "/v1/account/organisations/{org}/invitations", None),
    "revoke_invitation": (frozenset(ROLES[:2]), "DELETE",
                          "/v1/account/organisations/{org}/invitations/{invitation}", None),
    "my_invitations": (frozenset(ROLES), "GET", "/v1/account/invitations", None),
    "accept_invitation": (frozenset(ROLES), "POST", "/v1/account/invitations/{mine}/accept",
                          None),
    "decline_invitation": (frozenset(ROLES), "POST", "/v1/account/invitations/{mine}/decline",
                           None),
    "set_role": (frozenset(ROLES[:2]), "PATCH",
                 "/v1/account/organisations/{org}/members/{member}", {"role": "restricted"}),
    "remove_member": (frozenset(ROLES[:2]), "DELETE",
                      "/v1/account/organisations/{org}/members/{member}", None),
    "read_wallet": (frozenset({"owner"}), "GET", "/v1/account/wallet", None),
}
PERMISSION = {"list_keys": "manage_own_keys", "create_key": "manage_own_keys",
              "revoke_key": "manage_own_keys", "delete_key": "manage_own_keys",
              "list_members": "manage_members", "add_member": "manage_members",
              "set_role": "manage_members", "remove_member": "manage_members",
              "list_invitations": "manage_members", "revoke_invitation": "manage_members",
              "read_wallet": "billing"}
AUDIT = {"rectify_profile": "customer.update", "create_key": "key.create",
         "revoke_key": "key.revoke", "delete_key": "key.delete",
         "add_member": "invitation.create", "set_role": "member.role",
         "remove_member": "member.remove", "revoke_invitation": "invitation.revoke",
         "accept_invitation": "invitation.accept", "decline_invitation": "invitation.decline"}


async def fixtures_for(w: World, caller: Member, action: str = "") -> dict[str, str]:
    """Fresh targets for one case, so every case starts from the same state: a member of the
    org, a key of the caller, an outsider; for the invitation cases, a pending invitation of
    the org ("invitation") or one addressed to the caller by another org ("mine")."""
    member = await new_customer(w.store, "member")
    await service.add_member(w.store, w.org, member, "developer")
    own_key = await new_key(w.store, caller.customer_id, w.org)
    names = {"org": w.org, "key": own_key.key_id, "member": member,
             "outsider": await new_customer(w.store, "outsider")}
    if action == "revoke_invitation":
        names["invitation"] = (await invitations.invite(
            w.store, w.org, names["outsider"], "developer",
            invited_by=w.members["owner"].customer_id)).id
    if action in ("accept_invitation", "decline_invitation"):
        host = await new_customer(w.store, "host")
        host_org = (await service.create_organisation(w.store, "Host", host)).id
        names["mine"] = (await invitations.invite(w.store, host_org, caller.customer_id,
                                                  "restricted", invited_by=host)).id
    return names


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


async def state(w: World, caller: Member, names: dict[str, str]) -> tuple:
    """Everything a case may change: the caller's profile, keys, organisations and
    invitations, and the org's members and invitations."""
    cus = await service.get_customer(w.store, caller.customer_id)
    keys = await service.list_keys(w.store, org_id=w.org)
    members = await service.list_members(w.store, w.org)
    orgs = await service.list_organisations(w.store, customer_id=caller.customer_id)
    invited = [*await invitations.of_org(w.store, w.org),
               *await invitations.of_customer(w.store, caller.customer_id)]
    return (cus.as_dict(), sorted((k.id, k.status()) for k in keys),
            sorted((m.customer_id, m.role) for m in members), sorted(o.id for o in orgs),
            sorted(i.id for i in invited))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(SPEC))
async def test_permission_table(world: World, role: str, action: str):
    allowed, method, template, body = SPEC[action]
    caller = world.members[role]
    names = await fixtures_for(world, caller, action)
    before = await state(world, caller, names)
    audits = await audited(world, caller, AUDIT.get(action, "-"))
    reply = await world.call(caller, method, fill(template, names), fill(body, names))
    if role in allowed:
        assert reply.status in (200, 201), (reply.status, reply.body)
        if action == "add_member":  # an invitation, not (yet) a membership
            assert reply.json()["object"] == "organisation.invitation"
            assert await service.member_role(world.store, world.org, names["outsider"]) is None
        if action in AUDIT:
            assert await state(world, caller, names) != before
            assert await audited(world, caller, AUDIT[action]) == audits + 1
    else:
        error = assert_error(reply, 403, "forbidden", param="role")
        assert f"'{PERMISSION[action]}'" in error["message"]
        assert await state(world, caller, names) == before
        assert await audited(world, caller, AUDIT.get(action, "-")) == audits


async def test_allowed_answers_show_what_was_done(world: World):
    dev = world.members["developer"]
    me = (await world.call(dev, "GET", "/v1/account")).json()
    assert me["id"] == dev.customer_id and me["key"] == {
        "id": dev.key_id, "org_id": world.org, "role": "developer"}
    own = (await world.call(dev, "GET", "/v1/account/keys")).json()["data"]
    assert own and {k["customer_id"] for k in own} == {dev.customer_id}
    org_wide = (await world.call(world.members["admin"], "GET", "/v1/account/keys")).json()
    assert {k["org_id"] for k in org_wide["data"]} == {world.org}
    assert {m.customer_id for m in world.members.values()} <= {
        k["customer_id"] for k in org_wide["data"]}
    wallet = (await world.call(world.members["owner"], "GET", "/v1/account/wallet")).json()
    assert wallet["customer_id"] == world.members["owner"].customer_id
    assert wallet["balance_micros"] == 0 and wallet["transactions"] == []


# ---- never another customer's or organisation's data ----------------------------------------

def foreign_routes(w: World, foreign_key: str) -> list[tuple[str, str, Any]]:
    org, owner = w.foreign_org, w.foreign.customer_id
    members = f"/v1/account/organisations/{org}/members"
    return [
        ("POST", f"/v1/account/keys/{foreign_key}/revoke", None),
        ("DELETE", f"/v1/account/keys/{foreign_key}", None),
        ("GET", members, None),
        ("POST", members, {"customer_id": w.members["admin"].customer_id, "role": "admin"}),
        ("PATCH", f"{members}/{owner}", {"role": "restricted"}),
        ("DELETE", f"{members}/{owner}", None),
        ("GET", f"/v1/account/organisations/{org}/invitations", None),
        ("DELETE", f"/v1/account/organisations/{org}/invitations/{w.foreign_invitation}", None),
    ]


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_foreign_ids_are_not_found_and_nothing_changes(world: World, role: str):
    caller = world.members[role]
    foreign_key = (await new_key(world.store, world.foreign.customer_id, world.foreign_org)).key_id
    for method, path, body in foreign_routes(world, foreign_key):
        reply = await world.call(caller, method, path, body)
        assert_error(reply, 404, "not_found")
    assert (await service.get_key(world.store, foreign_key)).status() == "active"
    assert [(m.customer_id, m.role) for m in await service.list_members(
        world.store, world.foreign_org)] == [(world.foreign.customer_id, "owner")]
    assert [i.id for i in await invitations.of_org(world.store, world.foreign_org)] == [
        world.foreign_invitation]
    listed = (await world.call(caller, "GET", "/v1/account/keys")).json()["data"]
    assert foreign_key not in {k["id"] for k in listed}


async def test_a_developer_cannot_touch_another_members_key(world: World):
    admin_key = await new_key(world.store, world.members["admin"].customer_id, world.org)
    dev = world.members["developer"]
    for method, path in (("POST", f"/v1/account/keys/{admin_key.key_id}/revoke"),
                         ("DELETE", f"/v1/account/keys/{admin_key.key_id}")):
        assert_error(await world.call(dev, method, path), 404, "not_found")
    assert (await service.get_key(world.store, admin_key.key_id)).status() == "active"


async def test_a_removed_members_organisation_keys_stop_working(world: World):
    """Removal takes the member's role away, and with it call_models: its keys in the
    organisation must stop calling models (this process at once), not only lose the account
    API. Its personal key is its own and keeps working."""
    leaver = await new_customer(world.store, "leaver")
    await service.add_member(world.store, world.org, leaver, "developer")
    org_key = await new_key(world.store, leaver, world.org)
    own_key = await new_key(world.store, leaver, None)
    assert (await world.call(org_key, "GET", MODELS)).status == 200  # verified and cached
    reply = await world.call(world.members["admin"], "DELETE",
                             f"/v1/account/organisations/{world.org}/members/{leaver}")
    assert reply.status == 200, reply.body
    assert (await world.call(org_key, "GET", MODELS)).status == 401
    assert (await service.get_key(world.store, org_key.key_id)).status() == "revoked"
    assert (await world.call(own_key, "GET", MODELS)).status == 200


async def test_a_personal_key_reaches_no_organisation(world: World):
    solo = world.personal
    assert_error(await world.call(solo, "GET", f"/v1/account/organisations/{world.org}/members"),
                 404, "not_found")
    keys = (await world.call(solo, "GET", "/v1/account/keys")).json()["data"]
    assert [k["id"] for k in keys] == [solo.key_id]


async def test_a_config_file_key_has_no_account_and_no_key_is_unauthorised(world: World):
    assert_error(await world.call(TEST_KEY, "GET", "/v1/account"), 403, "no_account")
    reply = await http(world.port, "GET", "/v1/account")
    assert reply.status == 401


async def test_owners_are_protected_from_admins_and_the_last_owner_stays(world: World):
    org = world.org
    members = f"/v1/account/organisations/{org}/members"
    owner = world.members["owner"]
    admin = world.members["admin"]
    assert_error(await world.call(admin, "DELETE", f"{members}/{owner.customer_id}"),
                 403, "owner_required")
    assert_error(await world.call(admin, "PATCH", f"{members}/{owner.customer_id}",
                                  {"role": "developer"}), 403, "owner_required")
    assert_error(await world.call(admin, "PATCH", f"{members}/{admin.customer_id}",
                                  {"role": "owner"}), 403, "owner_required")
    assert_error(await world.call(owner, "DELETE", f"{members}/{owner.customer_id}"),
                 400, "invalid_value", param="customer_id")
    assert await service.member_role(world.store, org, owner.customer_id) == "owner"
    assert await service.member_role(world.store, org, admin.customer_id) == "admin"


async def test_an_owners_keys_are_protected_from_admins(world: World):
    """Revoking or deleting every key of every owner would leave the organisation with no one
    able to manage it: an owner's organisation key, like its role, only an owner may change.
    The refused attempt changes nothing (the key keeps calling models); an owner's succeeds."""
    owner = world.members["owner"]
    admin = world.members["admin"]
    co_owner = await new_customer(world.store, "co-owner")
    await service.add_member(world.store, world.org, co_owner, "owner")
    for target in (owner, await new_key(world.store, co_owner, world.org)):
        assert (await world.call(target, "GET", MODELS)).status == 200  # verified and cached
        for method, path in (("POST", f"/v1/account/keys/{target.key_id}/revoke"),
                             ("DELETE", f"/v1/account/keys/{target.key_id}")):
            assert_error(await world.call(admin, method, path), 403, "owner_required",
                         param="key_id")
        assert (await service.get_key(world.store, target.key_id)).status() == "active"
        assert (await world.call(target, "GET", MODELS)).status == 200
    admins_own = await new_key(world.store, admin.customer_id, world.org)
    reply = await world.call(admin, "POST", f"/v1/account/keys/{admins_own.key_id}/revoke")
    assert reply.status == 200, reply.body  # admins keep every right over non-owners' keys
    spare = await new_key(world.store, co_owner, world.org)
    reply = await world.call(owner, "POST", f"/v1/account/keys/{spare.key_id}/revoke")
    assert reply.status == 200, reply.body
    assert (await world.call(spare, "GET", MODELS)).status == 401
    assert (await world.call(owner, "DELETE", f"/v1/account/keys/{spare.key_id}")).status == 200


# ---- new keys: never wider than the caller's, the secret shown once -------------------------

CAPS = {"rpm": 10, "tpm": 1000, "max_concurrent": 2, "allowed_models": ["mock-gpt"],
        "token_budget": 5000, "spend_budget_usd": 5.0}


@pytest.mark.parametrize("field, wider", [
    ("rpm", 11), ("rpm", 0), ("tpm", 1001), ("max_concurrent", 3),
    ("allowed_models", ["mock-gpt", "gpt-4o"]), ("allowed_models", None),
    ("token_budget", 5001), ("token_budget", None), ("spend_budget_usd", 5.5),
    ("spend_budget_usd", None),
])
async def test_a_new_key_is_never_wider_than_the_callers(world: World, field: str, wider: Any):
    dev = world.members["developer"]
    caller = await new_key(world.store, dev.customer_id, world.org, **CAPS)
    before = len(await service.list_keys(world.store, customer_id=dev.customer_id))
    reply = await world.call(caller, "POST", "/v1/account/keys", {field: wider})
    assert_error(reply, 403, "wider_than_caller", param=field)
    assert len(await service.list_keys(world.store, customer_id=dev.customer_id)) == before


async def test_a_new_key_inherits_the_callers_bounds_and_may_narrow_them(world: World):
    dev = world.members["developer"]
    caller = await new_key(world.store, dev.customer_id, world.org, **CAPS)
    reply = await world.call(caller, "POST", "/v1/account/keys", {"rpm": 5, "token_budget": 10})
    assert reply.status == 201, reply.body
    key = reply.json()["key"]
    assert (key["rpm"], key["tpm"], key["max_concurrent"]) == (5, 1000, 2)
    assert key["allowed_models"] == ["mock-gpt"] and key["token_budget"] == 10
    assert key["spend_budget_usd"] == 5.0
    assert (key["customer_id"], key["org_id"]) == (dev.customer_id, world.org)


async def test_the_secret_is_shown_once_and_never_again(world: World):
    dev = world.members["developer"]
    reply = await world.call(dev, "POST", "/v1/account/keys", {"name": "once"})
    assert reply.status == 201 and reply.headers["cache-control"] == "no-store"
    created = reply.json()
    secret, key_id = created["secret"], created["key"]["id"]
    assert (await world.call(secret, "GET", MODELS)).status == 200  # the secret works
    for path in ("/v1/account", "/v1/account/keys"):
        for who in (dev, world.members["owner"]):
            seen = await world.call(who, "GET", path)
            assert seen.status == 200 and secret.encode() not in seen.body
    entries = await audit.list_entries(world.store, limit=100_000)
    assert all(secret not in json.dumps(e.to_dict()) for e in entries)
    assert key_id in {k["id"] for k in
                      (await world.call(dev, "GET", "/v1/account/keys")).json()["data"]}


@pytest.mark.parametrize("how", ["revoke", "delete"])
async def test_a_revoked_or_deleted_key_is_refused_on_its_next_request(world: World, how: str):
    dev = world.members["developer"]
    created = (await world.call(dev, "POST", "/v1/account/keys", {"name": how})).json()
    secret, key_id = created["secret"], created["key"]["id"]
    assert (await world.call(secret, "GET", MODELS)).status == 200  # verified and cached
    method, path = (("POST", f"/v1/account/keys/{key_id}/revoke") if how == "revoke"
                    else ("DELETE", f"/v1/account/keys/{key_id}"))
    assert (await world.call(world.members["admin"], method, path)).status == 200
    assert (await world.call(secret, "GET", MODELS)).status == 401
    assert (await world.call(secret, "GET", "/v1/account")).status == 401
    assert await audited(world, world.members["admin"], f"key.{how}") >= 1


async def walk(w: World, who: Member, size: int | None = None) -> tuple[list[dict], int]:
    """Every key ``who`` may list, page after page; (the keys, how many pages)."""
    keys, after, pages = [], None, 0
    while True:
        query = "&".join(f"{k}={v}" for k, v in (("limit", size), ("after", after)) if v)
        reply = await w.call(who, "GET", "/v1/account/keys" + ("?" + query if query else ""))
        assert reply.status == 200, reply.body
        page = reply.json()
        pages += 1
        assert page["object"] == "list" and len(page["data"]) <= (size or 100)
        keys += page["data"]
        if not page["has_more"]:
            assert page["next_after"] is None
            return keys, pages
        assert page["next_after"] == page["data"][-1]["id"]
        after = page["next_after"]


async def test_an_admins_key_list_is_paged_and_the_pages_are_the_whole_list(world: World):
    """An organisation's admins list every member's keys (members x up to 1000 keys): one
    page of ``limit`` (default 100) at a time, with ``has_more`` and ``next_after`` as the
    admin API pages, never the whole list in one answer. Each scope pages its own keys."""
    dev = world.members["developer"]
    held = len(await service.list_keys(world.store, org_id=world.org))
    for n in range(max(5, 106 - held)):  # more than a page, some the developer's own
        await new_key(world.store, (dev if n % 2 else world.members["admin"]).customer_id,
                      world.org)
    org_keys = [k.id for k in await service.list_keys(world.store, org_id=world.org)]
    first = (await world.call(world.members["admin"], "GET", "/v1/account/keys")).json()
    assert len(first["data"]) == 100 and first["has_more"] is True
    for size in (None, 7, 1000):
        keys, pages = await walk(world, world.members["admin"], size)
        assert [k["id"] for k in keys] == org_keys  # newest first, nothing twice or skipped
        assert pages == -(-len(org_keys) // (size or 100))
    own = [k.id for k in await service.list_keys(world.store, customer_id=dev.customer_id,
                                                  org_id=world.org)]
    assert [k["id"] for k in (await walk(world, dev, 3))[0]] == own
    solo = world.personal  # its own personal keys only, though its customer may have others
    assert [k["id"] for k in (await walk(world, solo, 1))[0]] == [solo.key_id]


async def test_a_bad_page_query_is_a_400_naming_it(world: World):
    """``limit`` outside 1-1000, an unknown parameter, or an ``after`` that is not a key the
    caller may list (another organisation's answers exactly as a key that never was)."""
    admin = world.members["admin"]
    foreign = (await new_key(world.store, world.foreign.customer_id, world.foreign_org)).key_id
    cases = [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
             ("limit=-5", "limit"), ("page=2", "page"), (f"after={foreign}", "after"),
             ("after=key_nosuchkey", "after")]
    bodies = {}
    for query, param in cases:
        reply = await world.call(admin, "GET", f"/v1/account/keys?{query}")
        bodies[query] = assert_error(reply, 400, "invalid_value", param=param)
    assert bodies[f"after={foreign}"]["message"] == bodies["after=key_nosuchkey"]["message"]
    assert all(foreign not in error["message"] for error in bodies.values())


async def test_unknown_paths_and_methods_answer_in_openai_shape(world: World):
    owner = world.members["owner"]
    assert_error(await world.call(owner, "GET", "/v1/account/nothing"), 404, "not_found")
    reply = await world.call(owner, "PUT", "/v1/account")
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "GET, PATCH, DELETE"
    assert_error(await world.call(owner, "PATCH", "/v1/account", {"plan": "free"}),
                 400, "invalid_value", param="plan")


async def test_bad_values_are_400_naming_the_field(world: World):
    dev = world.members["developer"]
    caller = await new_key(world.store, dev.customer_id, world.org, **CAPS)
    for field, value in (("token_budget", "lots"), ("rpm", -1), ("name", 7)):
        reply = await world.call(caller, "POST", "/v1/account/keys", {field: value})
        assert_error(reply, 400, "invalid_value", param=field)
    assert_error(await world.call(dev, "PATCH", "/v1/account", {"email": "not-an-address"}),
                 400, "invalid_value", param="email")


async def test_a_customer_makes_at_most_max_keys_of_its_own(world: World):
    """Each self-made key was a new row in every later listing (built whole in one answer) and
    in the organisation's usage filter: one key holder could grow them without bound."""
    from kraken.gateway.endpoints.account_keys import MAX_KEYS

    cid = await new_customer(world.store, "hoarder")
    mine = await new_key(world.store, cid, None)
    for _ in range(MAX_KEYS - 2):
        await new_key(world.store, cid, None)
    reply = await world.call(mine, "POST", "/v1/account/keys", {"name": "last"})
    assert reply.status == 201, reply.body
    reply = await world.call(mine, "POST", "/v1/account/keys", {"name": "one too many"})
    error = assert_error(reply, 409, "too_many_keys", param="key")
    assert str(MAX_KEYS) in error["message"]
    listed = (await world.call(mine, "GET", f"/v1/account/keys?limit={MAX_KEYS}")).json()["data"]
    assert len(listed) == MAX_KEYS
    await world.call(mine, "DELETE", f"/v1/account/keys/{listed[0]['id']}")  # the newest
    assert (await world.call(mine, "POST", "/v1/account/keys", {})).status == 201


async def test_a_busy_database_is_503_store_busy_with_retry_after_not_a_500(tmp_path, caplog):
    """Another writer holding SQLite's lock past [store] busy_timeout_ms (an operator's sqlite3
    shell, a long CLI command) is not Kraken's fault: 503 store_busy with Retry-After in
    OpenAI's shape, one warning line and no traceback, nothing changed; the same call succeeds
    once the lock is released (as the admin API answers it)."""
    import logging
    import sqlite3

    caplog.set_level(logging.DEBUG, logger="kraken")
    async with running_mock() as mock:
        doc = admin_doc(tmp_path, mock.port, free_port(), store={"busy_timeout_ms": 100})
        async with running_kraken(doc) as k:
            store = await SqliteStore.open(str(k.db_path))
            try:
                me = await new_key(store, await new_customer(store, "busy"), None)
            finally:
                await store.close()
            w = World(k.port, None, "", {}, me, "", me, "")
            caplog.clear()
            holder = sqlite3.connect(k.db_path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                busy = await w.call(me, "PATCH", "/v1/account", {"name": "While busy"})
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
            after = (await w.call(me, "GET", "/v1/account")).json()
            done = await w.call(me, "PATCH", "/v1/account", {"name": "Once free"})
    error = assert_error(busy, 503, "store_busy")
    assert error["type"] == "server_error" and busy.headers["retry-after"] == "1"
    assert after["name"] == "busy"
    assert [r.getMessage() for r in logged if "busy" in r.getMessage()] and all(
        r.exc_info is None for r in logged), [r.getMessage() for r in logged]
    assert done.status == 200 and done.json()["name"] == "Once free"
