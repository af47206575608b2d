"""Changing one's own email address (``PATCH /v1/account`` with ``email``) waits for the consent
of the new address: against a real Kraken on loopback sockets, the mock provider and a real
local SMTP server (aiosmtpd) that keeps what it receives; the rules and the repository once
per backend (a SQLite file, a real PostgreSQL).

The request answers 202 and changes nothing; the new address gets a link (or, if it already
has an account, a notice) and the caller's answer is byte for byte the same either way; the
address changes only through the link, once; the name still changes at once; requests per
customer are bounded alike for taken and free addresses; without mail the change is refused
and nothing changes; a mail server that is down leaves no link; neither the token nor an
address reaches the audit log, a log line, a metric or (for the token) the database.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

from harness import free_port, http, kraken_mapping, running_kraken, running_mock
from kraken.accounts import email_change, service
from kraken.accounts.links import new_token, token_hash
from kraken.store.sqlite import SqliteStore
from smtpkit import smtp, smtp_server  # noqa: F401 (smtp: a fixture)

pytestmark = pytest.mark.anyio

CONFIRM = "/v1/account/email/confirm"
BASE = "https://kraken.example.com"
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
LINK_RE = re.compile(r"(https?://\S+/v1/account/email/confirm\?token=([A-Za-z0-9_-]+))")


@pytest.fixture(scope="module")
def anyio_backend():
    return ("asyncio", {"use_uvloop": True})


def mail_section(smtp_port: int, **extra) -> dict:
    """Mail set up for links, sign-up left off (its default)."""
    return {"host": "127.0.0.1", "port": smtp_port, "starttls": False,
            "from_address": "kraken@example.com", "base_url": BASE, **extra}


def address() -> str:
    return f"person-{uuid.uuid4().hex[:12]}@example.com"


class Account:
    """A customer of a running Kraken, with a personal key, over the account API."""

    def __init__(self, port: int, customer_id: str, secret: str, key_id: str) -> None:
        self.port, self.customer_id, self.secret, self.key_id = port, customer_id, secret, key_id

    async def call(self, method: str, path: str, body=None):
        raw = b"" if body is None else json.dumps(body).encode()
        return await http(self.port, method, path, raw,
                          {**JSON, "authorization": f"Bearer {self.secret}"})

    async def profile(self) -> dict:
        return (await self.call("GET", "/v1/account")).json()


async def new_account(port: int, db: Path, email: str | None = None) -> Account:
    store = await SqliteStore.open(str(db))
    try:
        cus = await service.create_customer(store, email or address(), "Before")
        key = await service.create_key(store, cus.id, rounds=4)
    finally:
        await store.close()
    return Account(port, cus.id, key.plaintext, key.key.id)


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def link_of(msg) -> tuple[str, str]:
    found = LINK_RE.search(msg.get_content())
    assert found, msg.get_content()
    return found.group(1), found.group(2)


@pytest.fixture(scope="module")
async def world(tmp_path_factory, smtp):
    port, sink = smtp
    tmp = tmp_path_factory.mktemp("email-change")
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp, mock.port,
                                                 email=mail_section(port))) as k:
            yield k, sink


async def test_a_new_address_applies_only_through_the_link_mailed_to_it(world, caplog):
    caplog.set_level(logging.DEBUG, logger="kraken")
    k, sink = world
    me = await new_account(k.port, k.db_path)
    old, new = (await me.profile())["email"], address()

    asked = await me.call("PATCH", "/v1/account", {"email": new})
    assert asked.status == 202, asked.body
    answer = asked.json()
    assert answer["status"] == "pending" and answer["customer"]["email"] == old
    assert (await me.profile())["email"] == old  # nothing changed yet

    msg = await sink.next_for(new)
    assert msg["From"] == "kraken@example.com" and not sink.to(old)
    link, token = link_of(msg)
    assert link.startswith(f"{BASE}{CONFIRM}?token=")
    target = link.removeprefix(BASE)

    pages = [await http(k.port, "GET", target) for _ in range(2)]  # a mail scanner's GETs
    for page in pages:
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert b"method=post" in page.body and page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
    assert (await me.profile())["email"] == old  # the GETs used nothing up

    done = await http(k.port, "POST", CONFIRM, urlencode({"token": token}).encode(), FORM)
    assert done.status == 200, done.body
    assert new.encode() in done.body and "set-cookie" not in done.headers
    assert (await me.profile())["email"] == new

    again = await http(k.port, "POST", CONFIRM, json.dumps({"token": token}).encode(), JSON)
    page_after = await http(k.port, "GET", target)
    for refused in (again, page_after):
        assert refused.status == 410
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("email_change_link_gone", "token")
        assert token.encode() not in refused.body

    db = k.db_path
    assert rows(db, "SELECT COUNT(*) FROM email_change_links WHERE customer_id = ?",
                (me.customer_id,)) == [(0,)]
    audit = rows(db, "SELECT actor, action, target, subject, detail FROM audit_log "
                     "WHERE subject = ? ORDER BY seq", (me.customer_id,))
    assert [(a, act) for a, act, _, _, _ in audit] == [
        (f"key:{me.key_id}", "customer.email_change_request"),
        ("email-link", "customer.email_change")]
    assert all(t == s == me.customer_id for _, _, t, s, _ in audit)
    metrics = (await http(k.port, "GET", "/metrics")).body
    for secret_text in (token, new, old):
        assert all(secret_text not in entry[4] for entry in audit)
        assert secret_text.encode() not in metrics
        assert secret_text not in caplog.text
    for path in db.parent.iterdir():  # the database, its WAL and the journal
        if path.is_file():
            assert token.encode() not in path.read_bytes()


async def test_the_old_address_is_told_of_the_change_without_naming_the_new_one(world):
    """Whoever held the old address learns that the account's address changed, and whom to
    ask if it was not them; the new address is never in that mail (it may be an intruder's,
    and the old holder's mailbox may be read by others)."""
    k, sink = world
    me = await new_account(k.port, k.db_path)
    old, new = (await me.profile())["email"], address()
    assert (await me.call("PATCH", "/v1/account", {"email": new})).status == 202
    _, token = link_of(await sink.next_for(new))
    assert not sink.to(old)  # nothing yet: the address has not changed
    done = await http(k.port, "POST", CONFIRM, json.dumps({"token": token}).encode(), JSON)
    assert done.status == 200, done.body

    notice = await sink.next_for(old)
    text = notice.get_content()
    assert notice["From"] == "kraken@example.com"
    assert "changed" in notice["Subject"].lower()
    assert "email address was changed to another address" in text and "operator" in text
    assert new not in notice.as_string() and LINK_RE.search(text) is None
    assert len(sink.to(old)) == 1 and len(sink.to(new)) == 1  # one notice; the link alone


async def test_a_taken_address_gets_the_same_answer_and_a_notice_not_a_link(world):
    k, sink = world
    me = await new_account(k.port, k.db_path)
    other = await new_account(k.port, k.db_path)
    taken = (await other.profile())["email"]
    free = address()
    replies = [await me.call("PATCH", "/v1/account", {"email": mail}) for mail in (free, taken)]
    assert (replies[0].status, replies[0].body) == (replies[1].status, replies[1].body)
    assert replies[1].status == 202

    notice = await sink.next_for(taken)
    assert "already belongs to a Kraken account" in notice.get_content()
    assert LINK_RE.search(notice.get_content()) is None
    assert LINK_RE.search((await sink.next_for(free)).get_content()) is not None
    # The same rows either way (the notice's token is never sent): nothing to tell them apart.
    assert rows(k.db_path, "SELECT COUNT(*) FROM email_change_links WHERE customer_id = ?",
                (me.customer_id,)) == [(2,)]
    assert (await me.profile())["email"] != taken
    assert (await other.profile())["email"] == taken


async def test_the_name_changes_at_once_the_email_only_once_confirmed(world):
    k, sink = world
    me = await new_account(k.port, k.db_path)
    old, new = (await me.profile())["email"], address()
    reply = await me.call("PATCH", "/v1/account", {"name": "After", "email": new})
    assert reply.status == 202 and reply.json()["customer"]["name"] == "After"
    profile = await me.profile()
    assert (profile["name"], profile["email"]) == ("After", old)
    renamed = await me.call("PATCH", "/v1/account", {"name": "Only the name"})
    assert renamed.status == 200 and renamed.json()["name"] == "Only the name"
    _, token = link_of(await sink.next_for(new))
    done = await http(k.port, "POST", CONFIRM, json.dumps({"token": token}).encode(), JSON)
    assert done.status == 200 and done.json()["email"] == new
    assert (await me.profile())["email"] == new


async def test_requests_are_bounded_per_customer_alike_for_taken_and_free_addresses(world):
    """Each request mails someone: a key may not mail without bound. Taken addresses count as
    free ones do, so the bound tells nothing about which addresses have an account."""
    k, sink = world
    me = await new_account(k.port, k.db_path)
    taken = (await (await new_account(k.port, k.db_path)).profile())["email"]
    mails = [taken] + [address() for _ in range(email_change.MAX_PENDING)]
    replies = [await me.call("PATCH", "/v1/account", {"email": mail}) for mail in mails]
    assert [r.status for r in replies] == [202] * email_change.MAX_PENDING + [429]
    error = replies[-1].json()["error"]
    assert error["code"] == "too_many_email_changes"
    assert 1 <= int(replies[-1].headers["retry-after"]) <= 900
    assert mails[-1].encode() not in replies[-1].body and not sink.to(mails[-1])


@pytest.mark.parametrize("body, param", [({"email": "not-an-address"}, "email"),
                                         ({"email": 7}, "email"),
                                         ({"email": "x" * 300 + "@example.com"}, "email"),
                                         ({"name": "ok", "email": "nope"}, "email"),
                                         ({"email": "a@example.com", "name": 7}, "name")])
async def test_a_bad_value_is_a_400_and_changes_nothing(world, body, param):
    k, sink = world
    me = await new_account(k.port, k.db_path)
    before, mails = await me.profile(), len(sink.messages)
    reply = await me.call("PATCH", "/v1/account", body)
    assert reply.status == 400 and reply.json()["error"]["param"] == param
    assert b"xxxxxxxxxx" not in reply.body and b"not-an-address" not in reply.body
    assert await me.profile() == before and len(sink.messages) == mails


async def test_the_current_address_is_refused(world):
    k, _ = world
    me = await new_account(k.port, k.db_path)
    current = (await me.profile())["email"]
    reply = await me.call("PATCH", "/v1/account", {"email": current.upper()})
    assert reply.status == 400 and reply.json()["error"]["param"] == "email"


async def test_a_malformed_or_unknown_token_is_refused(world):
    k, _ = world
    bad = await http(k.port, "POST", CONFIRM, json.dumps({"token": "../etc"}).encode(), JSON)
    unknown = await http(k.port, "POST", CONFIRM, json.dumps({"token": "A" * 43}).encode(), JSON)
    assert bad.status == 400 and bad.json()["error"]["param"] == "token"
    assert unknown.status == 410
    assert (await http(k.port, "DELETE", CONFIRM)).status == 405


async def test_without_mail_an_email_change_is_refused_and_nothing_changes(tmp_path):
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            me = await new_account(k.port, k.db_path)
            before = await me.profile()
            refused = await me.call("PATCH", "/v1/account",
                                    {"email": address(), "name": "Not applied either"})
            after = await me.profile()
            renamed = await me.call("PATCH", "/v1/account", {"name": "Renamed"})
            confirm = await http(k.port, "POST", CONFIRM, json.dumps({"token": "A" * 43}).encode(),
                                 JSON)
            links = rows(k.db_path, "SELECT COUNT(*) FROM email_change_links")
    assert refused.status == 503
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("email_change_unavailable", "email")
    assert "operator" in error["message"]
    assert after == before and links == [(0,)]
    assert renamed.status == 200 and renamed.json()["name"] == "Renamed"
    assert confirm.status == 404  # no mail, no links: the route is absent


@pytest.mark.parametrize("half, missing", [({"from_address": "kraken@example.com"}, "base_url"),
                                           ({"base_url": BASE}, "from_address"),
                                           ({"from_address": "not an address", "base_url": BASE},
                                            "from_address")])
def test_mail_half_set_up_stops_kraken_at_load_naming_what_is_missing(tmp_path, half, missing):
    """A sender or a base URL means links are meant to be mailed: the rest must be there, or
    the first customer changing their address would find out instead of the operator."""
    from kraken import config

    with pytest.raises(config.ConfigError) as refused:
        config.from_mapping(kraken_mapping(tmp_path, 9, email=half), "<test>", env={})
    assert f"email.{missing}" in str(refused.value)
    assert not config.from_mapping(kraken_mapping(tmp_path, 9), "<test>", env={}).email.sends_links


async def test_a_mail_server_that_is_down_is_a_503_and_leaves_no_link(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="kraken")
    new = address()
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port,
                                                 email=mail_section(free_port()))) as k:
            me = await new_account(k.port, k.db_path)
            down = await me.call("PATCH", "/v1/account", {"email": new})
            links = rows(k.db_path, "SELECT COUNT(*) FROM email_change_links")
            still = (await me.profile())["email"]
    assert down.status == 503 and down.json()["error"]["code"] == "email_unavailable"
    assert new.encode() not in down.body and new not in caplog.text
    assert links == [(0,)] and still != new


# ---- the rules and the repository, on SQLite and on PostgreSQL ------------------------------

from backends import backend, pg_server, store  # noqa: E402,F401  (fixtures)


async def new_link(store, customer_id: str, mail: str, ttl_s: float = 600.0) -> str:
    token = new_token()
    now = email_change.time.time()
    async with store.transaction() as tx:
        await tx.email_changes.insert(tx, token_hash(token), customer_id, mail, now, now + ttl_s)
    return token


@pytest.fixture
def mail(smtp):
    """The ``[email]`` settings of this module's SMTP server, for ``confirm``'s notice."""
    from kraken.config.sections import EmailConfig

    return EmailConfig(**mail_section(smtp[0]))


async def test_concurrent_confirms_on_two_connections_change_the_address_once(backend, store,
                                                                             mail):
    cus = await service.create_customer(store, address())
    new = address()
    token = await new_link(store, cus.id, new)
    stale = await new_link(store, cus.id, address())  # an older request: moot once one applies
    other = await backend.open()  # another process or host on the same database
    try:
        results = await asyncio.gather(email_change.confirm(store, mail, token),
                                       email_change.confirm(other, mail, token),
                                       return_exceptions=True)
    finally:
        await other.close()
    changed = [r for r in results if isinstance(r, service.Customer)]
    gone = [r for r in results if isinstance(r, email_change.LinkGone)]
    assert len(changed) == 1 and len(gone) == 1, results
    assert changed[0].email == new == (await service.get_customer(store, cus.id)).email
    with pytest.raises(email_change.LinkGone):
        await email_change.confirm(store, mail, stale)
    for name, blob in await backend.blobs(store):
        assert token.encode() not in blob, name


async def test_a_notice_that_cannot_be_sent_undoes_nothing_and_logs_one_line(store, caplog):
    """The change is committed before the old address is mailed: a mail server that is down
    then costs the notice, not the change; one warning line says so, naming no address."""
    from kraken.config.sections import EmailConfig

    caplog.set_level(logging.DEBUG, logger="kraken")
    cus = await service.create_customer(store, address())
    new = address()
    token = await new_link(store, cus.id, new)
    down = EmailConfig(**mail_section(free_port()))  # nothing listens there
    caplog.clear()
    changed = await email_change.confirm(store, down, token)
    assert changed.email == new == (await service.get_customer(store, cus.id)).email
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
    assert "notice" in lines[0].getMessage()
    assert cus.email not in caplog.text and new not in caplog.text
    with pytest.raises(email_change.LinkGone):  # used, as any confirmed link
        await email_change.confirm(store, down, token)


async def test_the_bound_holds_when_two_hosts_take_requests_at_once(backend, store, smtp,
                                                                   monkeypatch):
    """Each host counts the customer's live links, then inserts one: without a lock per
    customer both would count none and both mail a link past the bound."""
    from kraken.config.sections import EmailConfig

    monkeypatch.setattr(email_change, "MAX_PENDING", 1)
    cfg = EmailConfig(**mail_section(smtp[0]))
    customers = [(await service.create_customer(store, address())).id for _ in range(5)]
    other = await backend.open()  # another host on the same database
    try:
        results = await asyncio.gather(
            *(email_change.request(db, cfg, cid, address())
              for cid in customers for db in (store, other)), return_exceptions=True)
    finally:
        await other.close()
    for at, cid in enumerate(customers):
        assert sorted(type(r).__name__ for r in results[2 * at:2 * at + 2]) == [
            "NoneType", "TooManyEmailChanges"], results
        assert len(await store.email_changes.pending(store, cid, 0.0)) == 1


async def test_an_address_taken_since_the_request_is_refused_and_the_link_used_up(store, mail):
    cus = await service.create_customer(store, address())
    new = address()
    token = await new_link(store, cus.id, new)
    await service.create_customer(store, new.upper())  # signed up meanwhile (any case)
    with pytest.raises(service.ConflictError) as refused:
        await email_change.confirm(store, mail, token)
    assert refused.value.field == "email"
    assert (await service.get_customer(store, cus.id)).email == cus.email
    with pytest.raises(email_change.LinkGone):
        await email_change.confirm(store, mail, token)


async def test_an_expired_link_is_gone_and_deleted_by_the_attempt(store, mail):
    cus = await service.create_customer(store, address())
    token = await new_link(store, cus.id, address(), ttl_s=-1.0)
    assert not await email_change.link_live(store, token)
    with pytest.raises(email_change.LinkGone):
        await email_change.confirm(store, mail, token)
    async with store.transaction() as tx:
        assert await tx.email_changes.consume(tx, token_hash(token)) is None
    assert (await service.get_customer(store, cus.id)).email == cus.email


async def test_erasure_deletes_the_customers_pending_changes(store, mail):
    from kraken.privacy.erase import erase_customer

    cus = await service.create_customer(store, address())
    keep = await service.create_customer(store, address())
    await new_link(store, cus.id, address())
    kept = await new_link(store, keep.id, address())
    result = await erase_customer(store, cus.id, actor="test")
    assert result.rows_deleted["email_change_links"] == 1
    assert await store.email_changes.pending(store, cus.id, 0.0) == []
    assert len(await store.email_changes.pending(store, keep.id, 0.0)) == 1
    assert (await email_change.confirm(store, mail, kept)).id == keep.id
