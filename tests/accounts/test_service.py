"""The accounts service against a real SQLite file and a real PostgreSQL database (every store
test runs once per backend): validation names the field, text is stored verbatim (SQL
metacharacters included), roles follow the table, deletion cascades and every key change leaves
a key event for the gateways."""
from __future__ import annotations

import asyncio
import json
import time

import anyio
import pytest

from kraken.accounts import service
from kraken.accounts.roles import ACTIONS, PERMISSIONS, ROLES, can, require
from kraken.accounts.keys import CHECKED_KEY_RE, check_key, checksum_ok, parse_key
from backends import backend, pg_server, store  # noqa: F401  (fixtures: once per backend)

pytestmark = pytest.mark.anyio

NASTY = [
    "Robert'); DROP TABLE customers;--",
    "\" OR 1=1 --",
    "a%_\\b; SELECT * FROM api_keys",
    "' UNION SELECT hash FROM api_keys --",
    "O'Brien \u00e9\u00e8 \U0001F419 /* */ `x`",
]


async def _field(coro) -> str:
    with pytest.raises(service.AccountError) as info:
        await coro
    return info.value.field


# -- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("email", ["", "   ", "no-at-sign", "a@b", "a@@b.com", "@b.com", "a@b..com",
                                   "a b@c.com", "a@-b.com", "x" * 250 + "@b.com", "a@b.123",
                                   "a\n@b.com"])
async def test_bad_email_is_refused_naming_the_field(store, email):
    assert await _field(service.create_customer(store, email)) == "email"


async def test_email_is_required_and_typed(store):
    assert await _field(service.create_customer(store, None)) == "email"
    assert await _field(service.create_customer(store, 42)) == "email"


async def test_email_is_normalised_and_unique_case_insensitively(store):
    cus = await service.create_customer(store, "  Ada.Lovelace@Example.ORG ")
    assert cus.email == "Ada.Lovelace@example.org"
    with pytest.raises(service.ConflictError) as info:
        await service.create_customer(store, "ada.lovelace@EXAMPLE.org")
    assert info.value.field == "email" and info.value.status == 409
    assert "Ada" not in info.value.message  # the address is not echoed back
    other = await service.create_customer(store, "other@example.org")
    with pytest.raises(service.ConflictError):
        await service.update_customer(store, other.id, email="ADA.LOVELACE@example.org")


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "x" * 201}, "name"),
    ({"name": "bell\x07"}, "name"),
    ({"name": 5}, "name"),
    ({"plan": ""}, "plan"),
    ({"plan": "a b"}, "plan"),
    ({"opted_out": "yes"}, "opted_out"),
])
async def test_customer_fields_are_validated(store, kwargs, field):
    assert await _field(service.create_customer(store, "v@example.com", **kwargs)) == field


@pytest.mark.parametrize("kwargs, field", [
    ({"rpm": -1}, "rpm"),
    ({"tpm": 1.5}, "tpm"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"token_budget": -5}, "token_budget"),
    ({"spend_budget_usd": float("nan")}, "spend_budget_usd"),
    ({"spend_budget_usd": -1}, "spend_budget_usd"),
    ({"expires_at": time.time() - 10}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"allowed_models": "mock-gpt"}, "allowed_models"),
    ({"allowed_models": []}, "allowed_models"),
    ({"allowed_models": ["ok", ""]}, "allowed_models[1]"),
    ({"allowed_models": [3]}, "allowed_models[0]"),
    ({"name": "\x00"}, "name"),
    ({"env": "prod"}, "env"),
    ({"org_id": "org_missing"}, "org_id"),
])
async def test_key_fields_are_validated(store, kwargs, field):
    cus = await service.create_customer(store, "k@example.com")
    assert await _field(service.create_key(store, cus.id, rounds=4, **kwargs)) == field
    assert await service.list_keys(store) == []


async def test_unknown_ids_are_not_found_naming_the_field(store):
    assert await _field(service.get_customer(store, "cus_nope")) == "customer_id"
    assert await _field(service.create_key(store, "cus_nope", rounds=4)) == "customer_id"
    assert await _field(service.revoke_key(store, "nope")) == "key_id"
    assert await _field(service.delete_key(store, "nope")) == "key_id"
    assert await _field(service.get_organisation(store, "org_nope")) == "org_id"
    assert await _field(service.create_organisation(store, "Acme", "cus_nope")) == "owner_id"


async def test_errors_render_as_openai_style_bodies(store):
    from kraken.errors import error_body

    with pytest.raises(service.ValidationError) as info:
        await service.create_customer(store, "broken")
    body = json.loads(error_body(info.value))
    assert info.value.status == 400
    assert body["error"]["message"].startswith("email: ")


# -- SQL metacharacters are data ---------------------------------------------------------------

@pytest.mark.parametrize("nasty", NASTY)
async def test_sql_metacharacters_in_every_text_field_are_stored_verbatim(store, backend, nasty):
    local = "".join(c for c in nasty if c.isascii() and (c.isalnum() or c in "'%_")) or "x"
    email = f"{local[:60]}@example.com"
    cus = await service.create_customer(store, email, nasty, plan="p_1.x-y")
    assert (await service.get_customer(store, cus.id)).name == nasty
    assert (await service.find_customer_by_email(store, email)).id == cus.id
    org = await service.create_organisation(store, nasty, cus.id)
    assert (await service.get_organisation(store, org.id)).name == nasty
    created = await service.create_key(store, cus.id, name=nasty, org_id=org.id,
                                       allowed_models=[nasty, "mock-gpt"], rounds=4)
    key = await service.get_key(store, created.key.id)
    assert key.name == nasty and key.allowed_models == (nasty, "mock-gpt")
    # Lookups by a hostile "id" find nothing and break nothing.
    assert await _field(service.get_customer(store, nasty)) == "customer_id"
    assert await _field(service.revoke_key(store, nasty)) == "key_id"
    assert await service.list_keys(store, customer_id=nasty) == []
    tables = await backend.tables(store)
    assert {"customers", "organisations", "members", "api_keys", "key_events"} <= tables
    assert await store.fetch_all("SELECT COUNT(*) FROM customers") == [(1,)]


# -- roles ---------------------------------------------------------------------------------

EXPECTED = {
    "restricted": {"call_models"},
    "developer": {"call_models", "manage_own_keys", "read_own_usage"},
    "admin": {"call_models", "manage_own_keys", "read_own_usage", "manage_members",
              "manage_keys", "manage_byok", "manage_limits", "read_usage"},
    "owner": set(ACTIONS),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_roles_matrix(role, action):
    assert can(role, action) is (action in EXPECTED[role])
    if action in EXPECTED[role]:
        require(role, action)
    else:
        with pytest.raises(service.ForbiddenError) as info:
            require(role, action)
        assert info.value.status == 403


def test_no_role_may_do_nothing_and_unknown_actions_raise():
    assert not any(can(None, a) or can("superuser", a) for a in ACTIONS)
    with pytest.raises(ValueError):
        can("owner", "launch_missiles")
    assert set(PERMISSIONS) == set(ROLES)


async def test_members_and_the_last_owner(store):
    owner = await service.create_customer(store, "owner@example.com")
    dev = await service.create_customer(store, "dev@example.com")
    org = await service.create_organisation(store, "Acme", owner.id)
    assert await service.member_role(store, org.id, owner.id) == "owner"
    assert await _field(service.add_member(store, org.id, dev.id, "root")) == "role"
    await service.add_member(store, org.id, dev.id, "developer")
    assert await _field(service.add_member(store, org.id, dev.id, "admin")) == "customer_id"
    assert can(await service.member_role(store, org.id, dev.id), "manage_own_keys")
    assert not can(await service.member_role(store, org.id, dev.id), "manage_members")
    assert await _field(service.set_member_role(store, org.id, owner.id, "admin")) == "role"
    assert await _field(service.remove_member(store, org.id, owner.id)) == "customer_id"
    await service.set_member_role(store, org.id, dev.id, "owner")
    await service.set_member_role(store, org.id, owner.id, "restricted")
    assert [(m.customer_id, m.role) for m in await service.list_members(store, org.id)] == \
        [(owner.id, "restricted"), (dev.id, "owner")]
    await service.remove_member(store, org.id, owner.id)
    assert await service.member_role(store, org.id, owner.id) is None
    assert [o.id for o in await service.list_organisations(store, customer_id=dev.id)] == [org.id]


async def test_removing_a_member_revokes_its_keys_in_that_organisation_only(store):
    """The removed member's organisation keys acted with the role it lost; its personal keys
    and its keys in another organisation are its own."""
    owner = await service.create_customer(store, "boss@example.com")
    leaver = await service.create_customer(store, "leaver@example.com")
    org = await service.create_organisation(store, "Acme", owner.id)
    other = await service.create_organisation(store, "Other", leaver.id)
    await service.add_member(store, org.id, leaver.id, "developer")
    in_org = [(await service.create_key(store, leaver.id, org_id=org.id, rounds=4)).key.id
              for _ in range(2)]
    kept = [(await service.create_key(store, leaver.id, org_id=o, rounds=4)).key.id
            for o in (None, other.id)]
    kept.append((await service.create_key(store, owner.id, org_id=org.id, rounds=4)).key.id)
    assert sorted(await service.remove_member(store, org.id, leaver.id)) == sorted(in_org)
    assert [(await service.get_key(store, k)).status() for k in in_org] == ["revoked"] * 2
    assert [(await service.get_key(store, k)).status() for k in kept] == ["active"] * 3


# -- keys ------------------------------------------------------------------------------------

async def test_key_is_returned_once_and_stored_only_as_a_hash(store, backend):
    cus = await service.create_customer(store, "h@example.com")
    created = await service.create_key(store, cus.id, rounds=4)
    secret = created.plaintext
    assert CHECKED_KEY_RE.fullmatch(secret) and checksum_ok(secret)
    assert parse_key(secret)[0] == created.key.id
    assert secret not in repr(created)
    listed = await service.list_keys(store, customer_id=cus.id)
    assert listed == [created.key]
    assert "hash" not in created.key.as_dict() and "$2b$" not in json.dumps(
        [k.as_dict() for k in listed])
    ((stored,),) = await store.fetch_all("SELECT hash FROM api_keys")
    assert stored.startswith("$2b$04$") and check_key(secret, stored)
    for name, blob in await backend.blobs(store):
        assert secret.encode() not in blob, name


async def test_revoke_update_delete_and_status(store):
    cus = await service.create_customer(store, "s@example.com")
    created = await service.create_key(store, cus.id, expires_at=time.time() + 3600, rounds=4)
    kid = created.key.id
    assert created.key.status() == "active"
    assert created.key.status(now=time.time() + 7200) == "expired"
    updated = await service.update_key(store, kid, rpm=7, allowed_models=["a", "a", "b"],
                                       expires_at=None)
    assert (updated.rpm, updated.allowed_models, updated.expires_at) == (7, ("a", "b"), None)
    first = await service.revoke_key(store, kid)
    again = await service.revoke_key(store, kid)
    assert first.status() == "revoked" and again.revoked_at == first.revoked_at
    assert await service.list_keys(store, include_revoked=False) == []
    await service.delete_key(store, kid)
    assert await service.list_keys(store) == []


async def test_every_key_change_leaves_a_key_event(store):
    cus = await service.create_customer(store, "e@example.com")
    a = (await service.create_key(store, cus.id, rounds=4)).key.id
    b = (await service.create_key(store, cus.id, rounds=4)).key.id

    async def events() -> list[str]:
        return [r[0] for r in await store.fetch_all("SELECT key_id FROM key_events ORDER BY seq")]

    assert await events() == []  # creating a key evicts nothing
    await service.update_key(store, a, rpm=1)
    await service.revoke_key(store, a)
    await service.update_customer(store, cus.id, plan="gold")
    assert (await events())[:2] == [a, a] and sorted((await events())[2:]) == sorted([a, b])
    await service.update_customer(store, cus.id, name="only the name")  # no cache impact
    assert len(await events()) == 4
    await service.delete_customer(store, cus.id)
    assert sorted((await events())[4:]) == sorted([a, b])


async def test_deleting_a_customer_cascades_to_keys_and_memberships(store, backend):
    cus = await service.create_customer(store, "gone@example.com", "Gone")
    stays = await service.create_customer(store, "stays@example.com")
    solo = await service.create_organisation(store, "Solo", cus.id)
    shared = await service.create_organisation(store, "Shared", stays.id)
    await service.add_member(store, shared.id, cus.id, "admin")
    await service.create_key(store, cus.id, org_id=shared.id, rounds=4)
    keep = await service.create_key(store, stays.id, rounds=4)
    await service.delete_customer(store, cus.id)
    assert await _field(service.get_customer(store, cus.id)) == "customer_id"
    assert await service.list_keys(store) == [keep.key]
    assert [m.customer_id for m in await service.list_members(store, shared.id)] == [stays.id]
    assert await _field(service.get_organisation(store, solo.id)) == "org_id"  # no member left
    assert await store.fetch_all(backend.sql("SELECT COUNT(*) FROM members WHERE customer_id = ?"),
                                 (cus.id,)) == [(0,)]
    assert await _field(service.delete_customer(store, cus.id)) == "customer_id"


async def test_the_same_address_created_at_once_on_two_hosts_is_one_customer(store, backend):
    """On PostgreSQL both may pass the pre-check; the unique index on lower(email) refuses one."""
    other = await backend.open()
    try:
        results = await asyncio.gather(
            *(service.create_customer(s, "race@Example.com") for s in (store, other) * 3),
            return_exceptions=True)
    finally:
        await other.close()
    created = [r for r in results if isinstance(r, service.Customer)]
    assert len(created) == 1
    assert all(isinstance(r, service.ConflictError) and r.field == "email"
               for r in results if r not in created)
    assert await store.fetch_all("SELECT COUNT(*) FROM customers") == [(1,)]


async def race(backend, attempts: list, held: tuple[str, str]) -> list:
    """Run ``attempts`` (on several hosts' stores) at once; their results or exceptions.

    On PostgreSQL the row every attempt's insert references (``held``: table, id) is locked
    meanwhile, until all of them wait on a lock: each has counted by then, or queued for the
    cap's own lock, and none has inserted. That is the interleaving which lets a
    count-then-insert cap be exceeded, made certain rather than likely. (SQLite's single
    writer runs them one after another whatever is held.)"""
    if backend.name != "postgres":
        return await asyncio.gather(*attempts, return_exceptions=True)
    import asyncpg

    holder, observer = await asyncpg.connect(backend.target), await asyncpg.connect(backend.target)
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               "AND wait_event_type = 'Lock'")
    try:
        async with holder.transaction():
            await holder.execute(f"SELECT 1 FROM {held[0]} WHERE id = $1 FOR UPDATE", held[1])
            running = asyncio.ensure_future(asyncio.gather(*attempts, return_exceptions=True))
            with anyio.fail_after(30):
                while await observer.fetchval(waiting) < len(attempts):
                    await asyncio.sleep(0.01)
    finally:  # the row is released, whatever happened
        await holder.close()
        await observer.close()
    return await running


async def hosts_on(backend, store, n: int = 4) -> list:
    """``store`` and ``n - 1`` other stores on its database (2 connections each), as hosts."""
    return [store, *[await backend.open() for _ in range(n - 1)]]


async def test_the_key_cap_holds_when_hosts_create_keys_at_once(store, backend):
    """The account API's cap on a customer's own keys: each host counts, then inserts. On
    PostgreSQL (READ COMMITTED) all would count the same keys and all insert past the cap
    without a lock per customer."""
    cap, racers = 3, 8
    cus = await service.create_customer(store, "keys-race@example.com")
    await service.create_key(store, cus.id, rounds=4)
    hosts = await hosts_on(backend, store)
    try:
        results = await race(backend, [service.create_key(s, cus.id, rounds=4, max_keys=cap)
                                       for s in hosts * (racers // len(hosts))],
                             ("customers", cus.id))
    finally:
        for other in hosts[1:]:
            await other.close()
    made = [r for r in results if isinstance(r, service.CreatedKey)]
    refused = [r for r in results if isinstance(r, service.TooManyKeys)]
    assert (len(made), len(refused)) == (cap - 1, racers - cap + 1), results
    assert (refused[0].code, refused[0].status, refused[0].field) == ("too_many_keys", 409, "key")
    assert len(await service.list_keys(store, customer_id=cus.id)) == cap


async def test_the_member_cap_holds_when_hosts_add_and_accept_at_once(store, backend,
                                                                     monkeypatch):
    """The organisation's member cap, reached at once by the operator adding members and by
    invitees accepting, on several hosts: exactly the room left is filled, every other
    attempt is 409 too_many_members."""
    from kraken.accounts import invitations

    cap, racers = 3, 8
    owner = await service.create_customer(store, "members-race@example.com")
    org = (await service.create_organisation(store, "Race", owner.id)).id
    people = [(await service.create_customer(store, f"p{i}-race@example.com")).id
              for i in range(racers)]
    invited = [await invitations.invite(store, org, cid, "developer", invited_by=owner.id)
               for cid in people[racers // 2:]]
    monkeypatch.setattr(service, "MAX_MEMBERS", cap)
    monkeypatch.setattr(invitations, "MAX_MEMBERS", cap)
    hosts = await hosts_on(backend, store)
    try:
        results = await race(backend, [
            *(service.add_member(s, org, cid, "developer")
              for s, cid in zip(hosts, people[:racers // 2])),
            *(invitations.accept(s, inv.id, inv.customer_id)
              for s, inv in zip(hosts[::-1], invited))], ("organisations", org))
    finally:
        for other in hosts[1:]:
            await other.close()
    joined = [r for r in results if isinstance(r, service.Member)]
    refused = [r for r in results if isinstance(r, service.TooManyMembers)]
    assert (len(joined), len(refused)) == (cap - 1, racers - cap + 1), results
    assert len(await service.list_members(store, org)) == cap


# -- pages (the admin API's ?limit=&after=) -----------------------------------------------------

async def _pages(fetch, size: int, cursor) -> list:
    """Every row of ``fetch(limit, after)`` walked ``size`` at a time."""
    rows, after = [], None
    while True:
        page = await fetch(size, after)
        rows += page
        if len(page) < size:
            return rows
        after = cursor(page[-1])


async def test_pages_of_keys_organisations_and_members_keep_the_order_and_skip_nothing(store):
    """Keys are newest first and members oldest first: rows created in the same instant are
    ordered by id, so a page ending inside such a tie neither repeats nor loses a row."""
    owner = await service.create_customer(store, "pages@example.com")
    org = await service.create_organisation(store, "Pages", owner.id)
    for i in range(6):
        cus = await service.create_customer(store, f"m{i}@example.com")
        await service.add_member(store, org.id, cus.id, "developer")
        await service.create_key(store, owner.id, org_id=org.id, rounds=4)
        await service.create_organisation(store, f"org {i}", owner.id)
    async with store.transaction() as tx:  # one instant for all
        await tx.execute("UPDATE api_keys SET created_at = 1000.0")
        await tx.execute("UPDATE members SET created_at = 2000.0 WHERE role = 'developer'")
    everything = await service.list_keys(store, customer_id=owner.id)
    paged = await _pages(lambda n, after: service.list_keys(
        store, customer_id=owner.id, limit=n, after=after), 4, lambda k: k.id)
    assert paged == everything and [k.id for k in paged] == sorted(k.id for k in paged)
    members = await service.list_members(store, org.id)
    assert await _pages(lambda n, after: service.list_members(
        store, org.id, limit=n, after=after), 2, lambda m: m.customer_id) == members
    orgs = await service.list_organisations(store, customer_id=owner.id)
    assert len(orgs) == 7 and await _pages(lambda n, after: service.list_organisations(
        store, customer_id=owner.id, limit=n, after=after), 3, lambda o: o.id) == orgs
    assert await _pages(lambda n, after: service.list_organisations(
        store, limit=n, after=after), 5, lambda o: o.id) == orgs
    assert await _field(service.list_keys(store, limit=2, after="nosuchkey")) == "after"
    assert await _field(service.list_members(store, org.id, limit=2, after=owner.id + "x")) \
        == "after"


@pytest.mark.parametrize("second", ["demote", "remove"])
async def test_two_hosts_taking_away_both_owners_at_once_leave_one(pg_server, second):  # noqa: F811
    """PostgreSQL: each transaction counts the owners, then changes its own member. Host A is
    held right after its count while host B does the same to the other owner: B must wait for
    A and then find it is the last owner (READ COMMITTED would let both count two)."""
    from kraken.store.accounts_sql import AccountsRepository
    from kraken.store.postgres import PostgresStore

    dsn = pg_server.create_database()
    a, b = [await PostgresStore.open(dsn, pool_size=2) for _ in range(2)]
    try:
        one = await service.create_customer(a, "one@example.com")
        two = await service.create_customer(a, "two@example.com")
        org = await service.create_organisation(a, "Acme", one.id)
        await service.add_member(a, org.id, two.id, "owner")
        counted, b_done = asyncio.Event(), asyncio.Event()
        real_owners = AccountsRepository.owners

        async def owners(self, db, org_id):  # host A's count, then held until B waits or ends
            n = await real_owners(self, db, org_id)
            if not counted.is_set():
                counted.set()
                async with asyncio.timeout(10):
                    while not b_done.is_set() and not await b.fetch_all(
                            "SELECT 1 FROM pg_locks WHERE NOT granted"):
                        await asyncio.sleep(0.01)
            return n

        AccountsRepository.owners = owners
        try:
            first = asyncio.ensure_future(service.set_member_role(a, org.id, one.id, "admin"))
            await counted.wait()
            try:
                if second == "demote":
                    await service.set_member_role(b, org.id, two.id, "developer")
                else:
                    await service.remove_member(b, org.id, two.id)
            except service.ValidationError as exc:
                refused = exc
            else:
                refused = None
            finally:
                b_done.set()
            await first
        finally:
            AccountsRepository.owners = real_owners
        assert refused is not None and "last owner" in str(refused)
        assert [(m.customer_id, m.role) for m in await service.list_members(a, org.id)
                if m.role == "owner"] == [(two.id, "owner")]
    finally:
        await a.close()
        await b.close()
