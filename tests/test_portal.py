"""The customer portal (``GET /portal`` on the client listener) in a real headless Chromium
against a real Kraken process, with accounts, an organisation and its members' keys created
through the service layer in the same SQLite file.

Each role sees only the sections its permissions allow; an action the page does not offer,
forced into the page anyway, is refused by the account API and the page shows the 403; a
developer creates and revokes a key through the page; the key never leaves the tab's memory.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import anyio
import pytest

from browserkit import CHROMEDRIVER, CHROMIUM, browser
from harness import (PROMPT_CANARY, KrakenProcess, auth_headers, db_rows, free_port,
                     kraken_mapping, running_mock, wait_rows, write_toml)
from harness import http as request
from kraken.accounts import service
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

ROLES = ("owner", "admin", "developer", "restricted")
STRIPE_KEY = "sk_test_portal_0123456789"
SECTIONS = {
    "owner": ["account", "keys", "members", "invitations", "usage", "export", "wallet", "delete"],
    "admin": ["account", "keys", "members", "invitations", "usage", "export", "delete"],
    "developer": ["account", "keys", "invitations", "usage", "export", "delete"],
    "restricted": ["account", "invitations", "export", "delete"],
}
FORCED = {  # a section the role is not shown -> (its action's form or button, the permission)
    "keys": ("#key-create button[type=submit]", "manage_own_keys"),
    "members": ("#member-add button[type=submit]", "manage_members"),
    "wallet": ("#topup button[type=submit]", "billing"),
}


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@dataclass
class World:
    port: int
    log: Path
    keys: dict[str, str]
    """role -> the plaintext key of that member of the organisation."""
    customers: dict[str, str]
    store: SqliteStore


async def _populate(store, port: int, log: Path) -> World:
    keys, customers = {}, {}
    owner = (await service.create_customer(store, f"own-{uuid.uuid4().hex[:8]}@example.com",
                                           "Owner")).id
    org = (await service.create_organisation(store, "Acme", owner)).id
    for role in ROLES:
        cid = owner if role == "owner" else (await service.create_customer(
            store, f"{role}-{uuid.uuid4().hex[:8]}@example.com", role)).id
        if role != "owner":
            await service.add_member(store, org, cid, role)
        keys[role] = (await service.create_key(store, cid, org_id=org, rounds=4)).plaintext
        customers[role] = cid
    return World(port, log, keys, customers, store)


@pytest.fixture(scope="module")
async def world(tmp_path_factory):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "tools/test installs chromium"
    tmp = tmp_path_factory.mktemp("portal")
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp, mock.port, server={"port": port})
        doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
        write_toml(tmp / "k.toml", doc)
        kp = KrakenProcess(tmp / "k.toml", port, tmp / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            store = await SqliteStore.open(str(tmp / "kraken.db"))
            try:
                yield await _populate(store, port, tmp / "kraken.log")
            finally:
                await store.close()
        finally:
            kp.kill()


# ---- driving the page (blocking Selenium, run in a thread) -----------------------------------

def _by():
    from selenium.webdriver.common.by import By
    return By


def act(driver, do) -> str:
    """Do something on the page and wait until the page says it is done; the status line."""
    from selenium.webdriver.support.ui import WebDriverWait

    By = _by()
    before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-done")
    do()
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done") != before)
    return driver.find_element(By.ID, "status").text


def sign_in(driver, key: str) -> str:
    By = _by()

    def submit():
        driver.find_element(By.ID, "key").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

    return act(driver, submit)


def sections(driver) -> list[str]:
    return [s.get_attribute("id") for s in driver.find_elements(_by().CSS_SELECTOR, "#portal > section")]


def force(driver, section: str, selector: str) -> str:
    """Put a section the page did not render into it anyway (as a tampered page would) and
    use its action: the account API decides, the page shows its answer."""
    driver.execute_script(
        "document.getElementById('portal').append("
        "document.getElementById('section-' + arguments[0]).content.cloneNode(true));", section)
    return act(driver, lambda: driver.find_element(_by().CSS_SELECTOR, selector).click())


def leftovers(driver) -> list:
    """Whatever the tab kept outside its memory: storage, cookies, the URL."""
    return [driver.execute_script("return [localStorage.length, sessionStorage.length, "
                                  "document.cookie, location.href]"), driver.get_cookies()]


def drive_role(port: int, key: str, role: str, downloads: Path) -> dict:
    seen: dict = {}
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        seen["title"] = driver.title
        seen["before"] = sections(driver)
        seen["status"] = sign_in(driver, key)
        seen["sections"] = sections(driver)
        seen["account"] = driver.find_element(_by().ID, "account").text
        if "wallet" in seen["sections"]:
            seen["balance"] = driver.find_element(_by().ID, "balance").text
            seen["topup"] = act(driver, lambda: driver.find_element(
                _by().CSS_SELECTOR, "#topup button[type=submit]").click())
        seen["refused"] = {name: force(driver, name, selector)
                           for name, (selector, _) in FORCED.items()
                           if name not in seen["sections"]}
        seen["left"] = leftovers(driver)
    finally:
        driver.quit()
    return seen


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_sees_only_what_it_may_do_and_is_refused_the_rest(world, role, tmp_path):
    seen = await anyio.to_thread.run_sync(drive_role, world.port, world.keys[role], role,
                                          tmp_path)
    assert seen["title"] == "Kraken portal" and seen["before"] == []
    assert seen["status"] == f"Signed in as {world.customers[role]} ({role})."
    assert seen["sections"] == SECTIONS[role]
    assert role in seen["account"] and world.customers[role] in seen["account"]
    forbidden = {name for name in FORCED if name not in SECTIONS[role]}
    assert set(seen["refused"]) == forbidden
    for name, status in seen["refused"].items():
        permission = FORCED[name][1]
        assert status.startswith("HTTP 403: ") and f"'{permission}'" in status, (name, status)
    if role == "owner":  # no Stripe key configured: the API's 503 is shown, not swallowed
        assert seen["balance"].startswith("$")
        assert seen["topup"].startswith("HTTP 503: ") and "not configured" in seen["topup"]
    assert seen["left"] == [[0, 0, "", f"http://127.0.0.1:{world.port}/portal"], []]


def models_status(port: int, key: str) -> int:
    """GET /v1/models with ``key`` (blocking: called from the Selenium thread)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v1/models", headers=auth_headers(key))
        return conn.getresponse().status
    finally:
        conn.close()


def drive_developer(port: int, key: str, downloads: Path) -> dict:
    By = _by()
    seen: dict = {}
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        sign_in(driver, key)
        seen["key_field"] = driver.find_element(By.ID, "key").get_attribute("value")
        seen["tiles"] = driver.find_element(By.ID, "tiles").text
        seen["by_model"] = driver.find_element(By.ID, "by-model").text
        seen["canvases"] = len(driver.find_elements(By.CSS_SELECTOR, "#usage .chart canvas"))

        def create():
            form = driver.find_element(By.ID, "key-create")
            form.find_element(By.NAME, "name").send_keys("from the portal")
            form.find_element(By.NAME, "rpm").send_keys("30")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        seen["created"] = act(driver, create)
        seen["secret"] = driver.find_element(By.CSS_SELECTOR, "#new-secret code").text
        seen["keys_after_create"] = driver.find_element(By.ID, "key-list").text
        new_id = seen["created"].split(" ")[1]
        seen["new_id"] = new_id
        seen["works_before_revoke"] = models_status(port, seen["secret"])
        seen["revoked"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR, f"button[data-action=revoke-key][data-id='{new_id}']").click())
        seen["keys_after_revoke"] = driver.find_element(By.ID, "key-list").text
        seen["export"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR, "button[data-action=export][data-format=jsonl]").click())
        seen["left"] = leftovers(driver)
        driver.save_screenshot(str(downloads / "portal.png"))  # for a human look
        driver.refresh()
        seen["after_reload"] = sections(driver)
        seen["after_reload_open"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR, "#login button[type=submit]").click())
        seen["left_after_reload"] = leftovers(driver)
    finally:
        driver.quit()
    return seen


async def test_developer_creates_and_revokes_a_key_and_the_tab_forgets_it(world, tmp_path):
    key = world.keys["developer"]
    body = json.dumps({"model": "mock-gpt",
                       "messages": [{"role": "user", "content": PROMPT_CANARY}]}).encode()
    db = world.log.parent / "kraken.db"
    before = len(db_rows(db))
    for _ in range(2):
        reply = await request(world.port, "POST", "/v1/chat/completions", body, auth_headers(key))
        assert reply.status == 200
    await wait_rows(db, before + 2)
    seen = await anyio.to_thread.run_sync(drive_developer, world.port, key, tmp_path)
    assert seen["key_field"] == ""  # memory only: not left in the form
    assert "Requests" in seen["tiles"] and "mock-gpt" in seen["by_model"]
    assert seen["canvases"] == 4
    assert seen["created"].startswith("Key ") and seen["created"].endswith(" created.")
    assert seen["secret"].startswith("kr_") and seen["new_id"] in seen["keys_after_create"]
    assert "from the portal" in seen["keys_after_create"]
    assert seen["revoked"] == f"Key {seen['new_id']} revoked."
    row = [r for r in seen["keys_after_revoke"].splitlines() if seen["new_id"] in r]
    assert row and "revoked" in row[0]
    assert seen["works_before_revoke"] == 200
    refused = await request(world.port, "GET", "/v1/models", headers=auth_headers(seen["secret"]))
    assert refused.status == 401  # revoked through the page: the API refuses the key
    assert seen["export"].startswith("Export downloaded")
    exported = (tmp_path / f"{world.customers['developer']}.jsonl").read_text()
    assert PROMPT_CANARY not in exported and world.customers["developer"] in exported
    url = f"http://127.0.0.1:{world.port}/portal"
    assert seen["left"] == [[0, 0, "", url], []]
    assert seen["after_reload"] == [] and seen["after_reload_open"] == "Enter a Kraken API key."
    assert seen["left_after_reload"] == [[0, 0, "", url], []]
    logged = world.log.read_text()
    assert key not in logged and seen["secret"] not in logged and PROMPT_CANARY not in logged


def drive_key_pages(port: int, key: str, downloads: Path) -> dict:
    By = _by()
    seen: dict = {}
    driver = browser(downloads)

    def shown() -> list[str]:
        return [tr.find_element(By.CSS_SELECTOR, "td").text
                for tr in driver.find_elements(By.CSS_SELECTOR, "#key-list tr")[1:]]

    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        sign_in(driver, key)
        more = driver.find_element(By.ID, "more-keys")
        seen["first"], seen["more_offered"] = shown(), more.is_displayed()
        seen["status"] = act(driver, more.click)
        seen["all"], seen["more_after"] = shown(), more.is_displayed()
        seen["revoked"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR, "button[data-action=revoke-key]").click())
        seen["after_change"], seen["more_again"] = shown(), more.is_displayed()
    finally:
        driver.quit()
    return seen


async def test_the_key_list_loads_a_page_and_more_on_demand(world, tmp_path):
    """More keys than a page: the first page is shown with "Load more", which adds the next
    page below it (not the whole list at once); a change shows the first page again."""
    cid = (await service.create_customer(world.store, f"many-{uuid.uuid4().hex[:8]}@example.com",
                                         "Many")).id
    keys = [await service.create_key(world.store, cid, rounds=4) for _ in range(105)]
    seen = await anyio.to_thread.run_sync(drive_key_pages, world.port, keys[0].plaintext,
                                          tmp_path)
    newest_first = [k.key.id for k in reversed(keys)]
    assert seen["first"] == newest_first[:100] and seen["more_offered"]
    assert seen["status"] == "5 more keys shown (105 in all)."
    assert seen["all"] == newest_first and not seen["more_after"]
    assert seen["revoked"] == f"Key {newest_first[0]} revoked."
    assert seen["after_change"] == newest_first[:100] and seen["more_again"]


async def test_page_and_files_have_strict_headers_and_set_no_cookie(world):
    page = await request(world.port, "GET", "/portal")
    files = [await request(world.port, "GET", f"/portal/{name}")
             for name in ("app.js", "common.js", "uplot.js", "uplot.css", "page.css", "portal.css")]
    missing = await request(world.port, "GET", "/portal/secrets.txt")
    post = await request(world.port, "POST", "/portal", b"{}")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    for reply in (page, *files):
        assert reply.status == 200
        h = reply.headers
        assert "script-src 'self';" in h["content-security-policy"]
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["cache-control"] == "no-store" and "set-cookie" not in h
    assert b"<script>" not in page.body  # no inline script: the CSP would block it
    assert b"KrakenPage" in files[1].body and b"uPlot" in files[2].body
    assert missing.status == 404 and post.status == 405


async def test_usage_series_has_the_usage_routes_scope_and_permission(world):
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    db = world.log.parent / "kraken.db"
    before = len(db_rows(db))  # every record has landed before the two reads are compared
    reply = await request(world.port, "POST", "/v1/chat/completions", body.encode(),
                          auth_headers(world.keys["restricted"]))
    assert reply.status == 200
    await wait_rows(db, before + 1)
    refused = await request(world.port, "GET", "/v1/account/usage/series?hours=1",
                            headers=auth_headers(world.keys["restricted"]))
    assert refused.status == 403 and "'read_own_usage'" in refused.json()["error"]["message"]
    for role, scope in (("developer", "customer"), ("admin", "organisation")):
        headers = auth_headers(world.keys[role])
        over = (await request(world.port, "GET", "/v1/account/usage/series?hours=1",
                              headers=headers)).json()
        total = (await request(world.port, "GET", "/v1/account/usage", headers=headers)).json()
        assert over["scope"] == total["scope"] == scope and over["bucket_s"] == 60
        counted = sum(n or 0 for n in over["series"]["requests"])
        assert counted == (total["total"] or {}).get("requests", 0), (role, over, total)
        assert counted >= 1 or role == "developer"  # the organisation has the request above
    bad = await request(world.port, "GET", "/v1/account/usage/series?hours=5",
                        headers=auth_headers(world.keys["developer"]))
    assert bad.status == 400


def drive_deletion(port: int, key: str, downloads: Path) -> dict:
    By = _by()
    seen: dict = {}
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        sign_in(driver, key)
        seen["sections"] = sections(driver)
        delete = (By.CSS_SELECTOR, "button[data-action=delete-account]")
        seen["unconfirmed"] = act(driver, lambda: driver.find_element(*delete).click())
        driver.find_element(By.ID, "delete-confirm").click()
        seen["deleted"] = act(driver, lambda: driver.find_element(*delete).click())
        seen["after"] = sections(driver)
    finally:
        driver.quit()
    return seen


async def test_a_personal_key_deletes_its_account_through_the_page(world, tmp_path):
    cid = (await service.create_customer(world.store, f"solo-{uuid.uuid4().hex[:8]}@example.com",
                                         "Solo")).id
    key = (await service.create_key(world.store, cid, rounds=4)).plaintext
    seen = await anyio.to_thread.run_sync(drive_deletion, world.port, key, tmp_path)
    # A personal key is its own account's owner, but has no organisation: no members section.
    assert seen["sections"] == ["account", "keys", "invitations", "usage", "export", "wallet",
                                "delete"]
    assert seen["unconfirmed"] == "Tick the box to confirm the deletion."
    assert seen["deleted"] == "Account deleted; the key is gone with it." and seen["after"] == []
    gone = await request(world.port, "GET", "/v1/account", headers=auth_headers(key))
    assert gone.status == 401


def drive_members(port: int, key: str, newcomer: tuple[str, str], stranger: str,
                  downloads: Path) -> dict:
    """The admin invites ``newcomer`` (customer id, key) and ``stranger`` (an id no customer
    has) through the page and revokes the stranger's invitation; the newcomer signs in and
    accepts; the admin then changes the newcomer's role and removes them."""
    By = _by()
    seen: dict = {}
    newcomer_id, newcomer_key = newcomer
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        sign_in(driver, key)

        def invite(customer_id: str):
            form = driver.find_element(By.ID, "member-add")
            form.find_element(By.NAME, "customer_id").send_keys(customer_id)
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        seen["invited"] = act(driver, lambda: invite(newcomer_id))
        seen["invited_stranger"] = act(driver, lambda: invite(stranger))
        seen["pending"] = driver.find_element(By.ID, "invitation-list").text
        seen["members_before"] = driver.find_element(By.ID, "member-list").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#invitation-list tr")[1:]
        stranger_row = next(tr for tr in rows if stranger in tr.text)
        seen["revoked"] = act(driver, lambda: stranger_row.find_element(
            By.CSS_SELECTOR, "button[data-action=revoke-invitation]").click())
        seen["pending_after_revoke"] = driver.find_element(By.ID, "invitation-list").text

        driver.find_element(By.ID, "forget").click()  # the newcomer, in the same tab
        sign_in(driver, newcomer_key)
        seen["newcomer_sections"] = sections(driver)
        seen["offered"] = driver.find_element(By.ID, "my-invitations").text
        seen["accepted"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR, "button[data-action=accept-invitation]").click())
        seen["offered_after"] = driver.find_element(By.ID, "my-invitations").text

        driver.find_element(By.ID, "forget").click()  # the admin again
        sign_in(driver, key)

        def set_role(role: str):
            from selenium.webdriver.support.ui import Select

            Select(driver.find_element(By.CSS_SELECTOR, f"select[data-role-of='{newcomer_id}']")
                   ).select_by_value(role)
            return act(driver, lambda: driver.find_element(
                By.CSS_SELECTOR,
                f"button[data-action=set-role][data-customer='{newcomer_id}']").click())

        seen["restricted"] = set_role("restricted")
        seen["owner"] = set_role("owner")  # only an owner makes an owner: the API says 403
        seen["roles"] = {tr.find_element(By.CSS_SELECTOR, "td:nth-child(1)").text:
                         tr.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text
                         for tr in driver.find_elements(By.CSS_SELECTOR, "#member-list tr")[1:]}
        seen["removed"] = act(driver, lambda: driver.find_element(
            By.CSS_SELECTOR,
            f"button[data-action=remove-member][data-customer='{newcomer_id}']").click())
        seen["list_after"] = driver.find_element(By.ID, "member-list").text
    finally:
        driver.quit()
    return seen


async def test_an_admin_invites_and_manages_members_and_roles_through_the_page(world, tmp_path):
    newcomer = (await service.create_customer(
        world.store, f"new-{uuid.uuid4().hex[:8]}@example.com", "New")).id
    newcomer_key = (await service.create_key(world.store, newcomer, rounds=4)).plaintext
    stranger = service.new_id("cus")
    seen = await anyio.to_thread.run_sync(drive_members, world.port, world.keys["admin"],
                                          (newcomer, newcomer_key), stranger, tmp_path)
    for who, status in ((newcomer, seen["invited"]), (stranger, seen["invited_stranger"])):
        assert status == f"Invited {who} as developer; they join once they accept."
    assert newcomer in seen["pending"] and stranger in seen["pending"]
    assert newcomer not in seen["members_before"]  # invited is not a member
    assert seen["revoked"].startswith("Invitation inv_") and seen["revoked"].endswith(" revoked.")
    assert stranger not in seen["pending_after_revoke"] and newcomer in seen["pending_after_revoke"]
    assert seen["newcomer_sections"] == ["account", "keys", "invitations", "usage", "export",
                                         "wallet", "delete"]
    assert "Acme" in seen["offered"] and "developer" in seen["offered"]
    assert seen["accepted"] == "Joined Acme as developer."
    assert "Acme" not in seen["offered_after"]
    assert seen["restricted"] == f"{newcomer} is now restricted."
    assert seen["owner"].startswith("HTTP 403: ") and "owner" in seen["owner"]
    assert seen["roles"][newcomer] == "restricted" and len(seen["roles"]) == 5
    assert seen["removed"] == f"{newcomer} removed." and newcomer not in seen["list_after"]


class StripeStandIn:
    """Stripe's ``POST /v1/checkout/sessions`` (form-encoded, Bearer secret key) answering a
    session whose ``url`` is its own ``GET /pay/<id>`` page, so the browser's redirect stays on
    loopback."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except asyncio.IncompleteReadError:  # a browser's spare connection, closed unused
            writer.close()
            return
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if lines[0].startswith("POST /v1/checkout/sessions ") \
                and headers.get("authorization") == f"Bearer {STRIPE_KEY}":
            form = await reader.readexactly(int(headers["content-length"]))
            self.forms.append(dict(parse_qsl(form.decode())))
            n = len(self.forms)
            body, ctype = json.dumps({"id": f"cs_test_{n}", "object": "checkout.session",
                                      "url": f"http://127.0.0.1:{self.port}/pay/cs_test_{n}"}
                                     ).encode(), "application/json"
        else:
            body, ctype = b"<!doctype html><title>Stripe stand-in</title><p>pay", "text/html"
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}"
                     "\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()


def drive_topup(port: int, key: str, pay_base: str, downloads: Path) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    By = _by()
    seen: dict = {}
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        sign_in(driver, key)
        amount = driver.find_element(By.CSS_SELECTOR, "#topup input[name=amount_usd]")
        amount.clear()
        amount.send_keys("25")
        driver.find_element(By.CSS_SELECTOR, "#topup button[type=submit]").click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url.startswith(pay_base))
        seen["url"], seen["title"] = driver.current_url, driver.title
        seen["cookies"] = driver.get_cookies()
    finally:
        driver.quit()
    return seen


async def test_an_owner_tops_up_through_a_stripe_checkout_redirect(tmp_path):
    stripe = StripeStandIn()
    server = await asyncio.start_server(stripe.handle, "127.0.0.1", 0)
    stripe.port = server.sockets[0].getsockname()[1]
    port = free_port()
    doc = kraken_mapping(tmp_path, 9, server={"port": port}, stripe={
        "api_key": STRIPE_KEY, "api_base": f"http://127.0.0.1:{stripe.port}"})
    write_toml(tmp_path / "k.toml", doc)
    kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
    try:
        await anyio.to_thread.run_sync(kp.start)
        store = await SqliteStore.open(str(tmp_path / "kraken.db"))
        try:
            cid = (await service.create_customer(store, "payer@example.com", "Payer")).id
            key = (await service.create_key(store, cid, rounds=4)).plaintext
        finally:
            await store.close()
        pay_base = f"http://127.0.0.1:{stripe.port}/pay/"
        seen = await anyio.to_thread.run_sync(drive_topup, port, key, pay_base, tmp_path)
    finally:
        kp.kill()
        server.close()
        await server.wait_closed()
    assert seen["url"] == pay_base + "cs_test_1" and seen["title"] == "Stripe stand-in"
    assert key not in seen["url"] and seen["cookies"] == []
    [form] = stripe.forms
    assert form["line_items[0][price_data][unit_amount]"] == "2500"
    assert form["client_reference_id"] == cid
    assert form["success_url"] == form["cancel_url"] == f"http://127.0.0.1:{port}/portal"
