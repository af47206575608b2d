"""Self-service sign-up by one-time email link (``[email] signup = true``), against a real Kraken
on loopback sockets, the mock provider and a real local SMTP server (aiosmtpd) that keeps what
it receives.

The link arrives by email, its GET uses nothing up, its POST creates the account once (a
second use, an expired link and a concurrent second confirm are refused), the key calls a
model, requests are limited per address and per client, the route is absent unless enabled,
a mail server that is down leaves no usable link, and neither the token, the address nor the
key reaches a log line, a metric, an error body or (for the token) the database.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest

from harness import free_port, http, kraken_mapping, running_kraken, running_mock, wait_for
from kraken.accounts import service
from smtpkit import smtp, smtp_server  # noqa: F401 (smtp: a fixture)

pytestmark = pytest.mark.anyio

SIGNUP = "/v1/account/signup"
CONFIRM = "/v1/account/signup/confirm"
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
LINK_RE = re.compile(r"(https?://\S+/v1/account/signup/confirm\?token=([A-Za-z0-9_-]+))")
PER_EMAIL, PER_IP = 3, 5


@pytest.fixture(scope="module")
def anyio_backend():
    return ("asyncio", {"use_uvloop": True})


def email_section(smtp_port: int, **extra) -> dict:
    return {"signup": True, "host": "127.0.0.1", "port": smtp_port, "starttls": False,
            "from_address": "kraken@example.com", "base_url": "https://kraken.example.com",
            "per_email_per_hour": PER_EMAIL, "per_ip_per_hour": PER_IP, **extra}


@asynccontextmanager
async def kraken(tmp: Path, mock_port: int, **sections):
    async with running_kraken(kraken_mapping(tmp, mock_port, **sections)) as k:
        yield k


@pytest.fixture(scope="module")
async def world(tmp_path_factory, smtp):
    port, sink = smtp
    tmp = tmp_path_factory.mktemp("signup")
    async with running_mock() as mock:
        async with kraken(tmp, mock.port, email=email_section(port)) as k:
            yield k, sink


_sources = iter(range(2, 250))


def source() -> str:
    """A client address of its own for each test (the per-address limit stays out of the way)."""
    return f"127.0.0.{next(_sources)}"


def address() -> str:
    return f"new-{uuid.uuid4().hex[:12]}@example.com"


async def ask(port: int, mail: str, src: str):
    return await http(port, "POST", SIGNUP, json.dumps({"email": mail}).encode(), JSON,
                      source=src)


def link_of(msg) -> tuple[str, str]:
    found = LINK_RE.search(msg.get_content())
    assert found, msg.get_content()
    return found.group(1), found.group(2)


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def assert_no_cookie(*replies) -> None:
    for reply in replies:
        assert "set-cookie" not in {h.lower() for h in reply.headers}


async def test_signup_is_absent_unless_enabled(tmp_path, smtp):
    port, sink = smtp
    before = len(sink.messages)
    async with running_mock() as mock:  # [email] fully set up, signup left at its default
        settings = {k: v for k, v in email_section(port).items() if k != "signup"}
        async with kraken(tmp_path, mock.port, email=settings) as k:
            asked = await ask(k.port, address(), source())
            page = await http(k.port, "GET", CONFIRM + "?token=" + "a" * 43)
            tables = rows(k.db_path, "SELECT name FROM sqlite_master WHERE name = 'signup_links'")
    assert asked.status == 404 and asked.json()["error"]["code"] == "not_found"
    assert page.status == 404
    assert len(sink.messages) == before
    assert tables == [("signup_links",)]  # the schema is there; only the route is off


async def test_link_arrives_works_once_and_its_key_calls_a_model(world, caplog):
    caplog.set_level(logging.DEBUG, logger="kraken")
    k, sink = world
    mail, src = address(), source()
    asked = await ask(k.port, mail, src)
    assert asked.status == 202 and asked.json()["status"] == "accepted"
    msg = await sink.next_for(mail)
    assert msg["From"] == "kraken@example.com"
    link, token = link_of(msg)
    assert link.startswith("https://kraken.example.com/v1/account/signup/confirm?token=")
    assert len(token) >= 22  # at least 128 bits, URL-safe base64
    target = link.removeprefix("https://kraken.example.com")

    # A mail scanner's GET shows a page and uses nothing up.
    pages = [await http(k.port, "GET", target, source=src) for _ in range(2)]
    for page in pages:
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert b"method=post" in page.body and page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"

    made = await http(k.port, "POST", CONFIRM, urlencode({"token": token}).encode(), FORM,
                      source=src)
    assert made.status == 201, made.body
    secret = re.search(rb"<code>(kr_[^<]+)</code>", made.body).group(1).decode()
    customer = re.search(rb"<code>(cus_[a-z0-9]+)</code>", made.body).group(1).decode()

    chat = await http(k.port, "POST", "/v1/chat/completions", json.dumps(
        {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {**JSON, "authorization": f"Bearer {secret}"}, source=src)
    assert chat.status == 200 and chat.json()["choices"]

    again = await http(k.port, "POST", CONFIRM, urlencode({"token": token}).encode(), FORM,
                       source=src)
    page_after = await http(k.port, "GET", target, source=src)
    for refused in (again, page_after):
        assert refused.status == 410
        assert refused.json()["error"]["code"] == "signup_link_gone"
        assert refused.json()["error"]["param"] == "token"
        assert token.encode() not in refused.body
    assert_no_cookie(asked, *pages, made, again, page_after)

    db = k.db_path
    assert rows(db, "SELECT id, email FROM customers WHERE id = ?", (customer,)) == [
        (customer, mail)]
    assert rows(db, "SELECT name FROM api_keys WHERE customer_id = ?", (customer,)) == [
        ("signup",)]
    assert rows(db, "SELECT COUNT(*) FROM signup_links") == [(0,)]
    audit = rows(db, "SELECT actor, target, subject, detail FROM audit_log "
                     "WHERE action = 'customer.signup'")
    assert [(a, t, s) for a, t, s, _ in audit] == [("signup", customer, customer)]
    assert mail not in audit[0][3] and secret not in audit[0][3]
    metrics = (await http(k.port, "GET", "/metrics")).body
    logs = caplog.text
    for secret_text in (token, mail, secret):
        assert secret_text.encode() not in metrics
        assert secret_text not in logs
    for path in db.parent.iterdir():  # the database, its WAL and the journal
        if path.is_file():
            assert token.encode() not in path.read_bytes()


async def test_an_address_with_an_account_gets_the_same_answer_and_no_link(world):
    k, sink = world
    mail = address()
    from kraken.store.sqlite import SqliteStore

    store = await SqliteStore.open(str(k.db_path))
    try:
        await service.create_customer(store, mail)
    finally:
        await store.close()
    fresh = await ask(k.port, address(), source())
    known = await ask(k.port, mail, source())
    assert (known.status, known.body) == (fresh.status, fresh.body)
    notice = await sink.next_for(mail)
    assert "already has one" in notice.get_content()
    assert LINK_RE.search(notice.get_content()) is None
    assert rows(k.db_path, "SELECT COUNT(*) FROM signup_links WHERE email = ?", (mail,)) == [
        (0,)]


async def test_two_concurrent_confirms_make_one_account(world):
    k, sink = world
    mail, src = address(), source()
    assert (await ask(k.port, mail, src)).status == 202
    _, token = link_of(await sink.next_for(mail))
    body = json.dumps({"token": token}).encode()
    replies = await asyncio.gather(*(http(k.port, "POST", CONFIRM, body, JSON, source=src)
                                     for _ in range(2)))
    assert sorted(r.status for r in replies) == [201, 410]
    made = next(r for r in replies if r.status == 201).json()
    assert made["customer"]["email"] == mail and made["secret"].startswith("kr_live_")
    assert made["key"]["customer_id"] == made["customer"]["id"]
    assert rows(k.db_path, "SELECT COUNT(*) FROM customers WHERE email = ?", (mail,)) == [(1,)]
    assert rows(k.db_path, "SELECT COUNT(*) FROM api_keys WHERE customer_id = ?",
                (made["customer"]["id"],)) == [(1,)]
    assert_no_cookie(*replies)


async def test_an_expired_link_is_refused_and_erased(tmp_path, smtp):
    port, sink = smtp
    mail, src = address(), source()
    async with running_mock() as mock:
        async with kraken(tmp_path, mock.port, email=email_section(port, link_ttl_s=3.0)) as k:
            assert (await ask(k.port, mail, src)).status == 202
            _, token = link_of(await sink.next_for(mail))
            page = f"{CONFIRM}?token={token}"
            assert (await http(k.port, "GET", page, source=src)).status == 200  # live at first
            with anyio.fail_after(15):  # polled until the TTL has passed, no fixed sleep
                while (await http(k.port, "GET", page, source=src)).status != 410:
                    await asyncio.sleep(0.05)
            assert rows(k.db_path, "SELECT COUNT(*) FROM signup_links") == [(0,)]  # erased
            late = await http(k.port, "POST", CONFIRM, json.dumps({"token": token}).encode(),
                              JSON, source=src)
            assert late.status == 410 and late.json()["error"]["code"] == "signup_link_gone"
            assert rows(k.db_path, "SELECT COUNT(*) FROM customers WHERE email = ?",
                        (mail,)) == [(0,)]


async def test_requests_are_limited_per_email_and_per_client_address(world):
    k, sink = world
    mail = address()
    answers = [await ask(k.port, mail, source()) for _ in range(PER_EMAIL + 1)]
    assert [a.status for a in answers] == [202] * PER_EMAIL + [429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert refused.json()["error"]["code"] == "signup_rate_limited"
    assert mail.encode() not in refused.body
    assert len(await wait_for(lambda: len(sink.to(mail)) >= PER_EMAIL and sink.to(mail))) \
        == PER_EMAIL

    src = source()
    per_client = [(await ask(k.port, address(), src)).status for _ in range(PER_IP + 1)]
    assert per_client == [202] * PER_IP + [429]
    assert (await ask(k.port, address(), source())).status == 202  # another client: served


async def test_the_limits_are_shared_through_redis_and_keep_no_address_in_clear(tmp_path, smtp):
    from redis import Redis

    from redis_server import redis_server

    port, sink = smtp
    mail = address()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with redis_server(tmp_path / "redis") as redis:
        limits = {"backend": "redis", "redis_url": redis.url,
                  "ip_salt": "a-test-salt-of-32-bytes-exactly!", "redis_timeout_s": 5.0}
        async with running_mock() as mock:
            async with kraken(tmp_path / "a", mock.port, email=email_section(port),
                              limits=limits) as a, \
                    kraken(tmp_path / "b", mock.port, email=email_section(port),
                           limits=limits) as b:
                first = [await ask(a.port, mail, source()) for _ in range(PER_EMAIL - 1)]
                at_b = [await ask(b.port, mail, source()) for _ in range(2)]
        client = Redis.from_url(redis.url)
        try:
            stored = [key.decode() for key in client.keys("*")]
        finally:
            client.close()
    assert [r.status for r in first + at_b] == [202] * PER_EMAIL + [429]
    assert int(at_b[-1].headers["retry-after"]) > 0
    assert stored and all(k.startswith("kraken:signup:") for k in stored)
    assert not any(mail in k or "127.0.0." in k for k in stored)


async def test_a_mail_server_that_is_down_is_a_503_and_leaves_no_link(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="kraken")
    mail = address()
    async with running_mock() as mock:
        async with kraken(tmp_path, mock.port, email=email_section(free_port())) as k:
            down = await ask(k.port, mail, source())
            links = rows(k.db_path, "SELECT COUNT(*) FROM signup_links")
    assert down.status == 503
    error = down.json()["error"]
    assert error["code"] == "email_unavailable" and "could not be sent" in error["message"]
    assert mail.encode() not in down.body and mail not in caplog.text
    assert links == [(0,)]


@pytest.mark.parametrize("body", [
    {"email": "not-an-address"},
    {"email": "x" * 300 + "@example.com"},
    {"email": 7},
    {},
])
async def test_a_bad_address_is_a_400_naming_email(world, body):
    k, _ = world
    reply = await http(k.port, "POST", SIGNUP, json.dumps(body).encode(), JSON, source=source())
    assert reply.status == 400
    assert reply.json()["error"]["param"] == "email"
    assert b"xxxxxxxxxx" not in reply.body and b"not-an-address" not in reply.body


async def test_a_malformed_or_unknown_token_is_refused(world):
    k, _ = world
    bad = await http(k.port, "POST", CONFIRM, json.dumps({"token": "../etc"}).encode(), JSON)
    unknown = await http(k.port, "POST", CONFIRM, json.dumps({"token": "A" * 43}).encode(),
                         JSON)
    assert bad.status == 400 and bad.json()["error"]["param"] == "token"
    assert unknown.status == 410
    assert (await http(k.port, "DELETE", CONFIRM)).status == 405
    assert (await http(k.port, "GET", SIGNUP)).status == 405


# ---- the repository and the confirmation, on SQLite and on PostgreSQL -----------------------

from backends import backend, pg_server, store  # noqa: E402,F401  (fixtures)
from kraken.accounts import signup  # noqa: E402


async def new_link(store, mail: str, ttl_s: float = 600.0) -> str:
    token = signup.secrets.token_urlsafe(signup.TOKEN_BYTES)
    now = signup.time.time()
    async with store.transaction() as tx:
        await tx.signup.insert(tx, signup.token_hash(token), mail, now, now + ttl_s)
    return token


async def test_a_link_row_is_used_once_and_expired_rows_are_purged(store):
    mail = address()
    token = await new_link(store, mail)
    digest = signup.token_hash(token)
    now = signup.time.time()
    assert await store.signup.live(store, digest, now)
    async with store.transaction() as tx:
        first = await tx.signup.consume(tx, digest)
        second = await tx.signup.consume(tx, digest)
    assert first is not None and first[0] == mail and first[1] > now
    assert second is None and not await store.signup.live(store, digest, now)

    stale = signup.token_hash(await new_link(store, address(), ttl_s=-1.0))
    kept = signup.token_hash(await new_link(store, address()))
    assert not await store.signup.live(store, stale, now)
    async with store.transaction() as tx:
        assert await tx.signup.purge(tx, signup.time.time()) == 1
        assert await tx.signup.consume(tx, stale) is None
    assert await store.signup.live(store, kept, now)


async def test_concurrent_confirms_on_two_connections_make_one_account(backend, store):
    mail = address()
    token = await new_link(store, mail)
    other = await backend.open()  # another process or host on the same database
    try:
        results = await asyncio.gather(signup.confirm(store, token, rounds=4),
                                       signup.confirm(other, token, rounds=4),
                                       return_exceptions=True)
    finally:
        await other.close()
    made = [r for r in results if isinstance(r, signup.SignedUp)]
    gone = [r for r in results if isinstance(r, signup.LinkGone)]
    assert len(made) == 1 and len(gone) == 1, results
    assert made[0].customer.email == mail
    found = await service.find_customer_by_email(store, mail)
    assert found is not None and found.id == made[0].customer.id
    keys = await service.list_keys(store, customer_id=found.id)
    assert [k.id for k in keys] == [made[0].key.key.id]
    with pytest.raises(signup.LinkGone):
        await signup.confirm(store, token, rounds=4)
    for name, blob in await backend.blobs(store):
        assert token.encode() not in blob, name


async def test_an_expired_link_is_gone_and_deleted_by_the_attempt(store):
    mail = address()
    token = await new_link(store, mail, ttl_s=-1.0)
    with pytest.raises(signup.LinkGone):
        await signup.confirm(store, token, rounds=4)
    assert await service.find_customer_by_email(store, mail) is None
    async with store.transaction() as tx:
        assert await tx.signup.consume(tx, signup.token_hash(token)) is None
