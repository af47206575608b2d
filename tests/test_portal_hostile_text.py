"""Text a member controls reaches another member's portal as text, never as markup.

An organisation's developer names a key with HTML; the owner's portal lists every key of the
organisation, so that name is drawn in the tab that holds the owner's API key. The page must
put it into the DOM as text (``textContent``), not parse it: the CSP would block an inline
handler, but an injected element (a form, a link styled over a button) needs no script.
"""
from __future__ import annotations

import json
import shutil
import uuid

import anyio
import pytest

from browserkit import CHROMEDRIVER, CHROMIUM, browser
from harness import KrakenProcess, auth_headers, free_port, kraken_mapping, write_toml
from harness import http as request
from kraken.accounts import service
from kraken.store.sqlite import SqliteStore
from test_portal import act, sign_in

pytestmark = pytest.mark.anyio

PAYLOAD = "<img id=injected src=x onerror=window.pwned=1><b>bold</b>"


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def drive_owner(port: int, key: str, downloads) -> dict:
    from selenium.webdriver.common.by import By

    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{port}/portal")
        seen = {"status": sign_in(driver, key)}
        keys = driver.find_element(By.ID, "key-list")
        seen["names"] = [td.text for td in keys.find_elements(By.CSS_SELECTOR, "td:nth-child(2)")]
        seen["markup"] = len(driver.find_elements(By.CSS_SELECTOR, "#injected, #key-list b"))
        seen["pwned"] = driver.execute_script("return window.pwned === undefined ? null : 1")
        # The revoke button in the hostile name's row still acts on that key.
        row = [tr for tr in keys.find_elements(By.TAG_NAME, "tr")[1:]
               if tr.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text == PAYLOAD]
        seen["revoked"] = row and act(driver, row[0].find_element(
            By.CSS_SELECTOR, "button[data-action=revoke-key]").click)
        seen["title"] = driver.title
    finally:
        driver.quit()
    return seen


async def test_a_members_key_name_is_shown_as_text_in_the_owners_portal(tmp_path):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "tools/test installs chromium"
    port = free_port()
    write_toml(tmp_path / "k.toml", kraken_mapping(tmp_path, 9, server={"port": port}))
    kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
    try:
        await anyio.to_thread.run_sync(kp.start)
        store = await SqliteStore.open(str(tmp_path / "kraken.db"))
        try:
            owner = (await service.create_customer(
                store, f"own-{uuid.uuid4().hex[:8]}@example.com", "Owner")).id
            org = (await service.create_organisation(store, "Acme", owner)).id
            dev = (await service.create_customer(
                store, f"dev-{uuid.uuid4().hex[:8]}@example.com", "Dev")).id
            await service.add_member(store, org, dev, "developer")
            owner_key = (await service.create_key(store, owner, org_id=org, rounds=4)).plaintext
            dev_key = (await service.create_key(store, dev, org_id=org, rounds=4)).plaintext
        finally:
            await store.close()
        # The developer names a key through the account API, as any member may.
        made = await request(port, "POST", "/v1/account/keys",
                             json.dumps({"name": PAYLOAD}).encode(),
                             {**auth_headers(dev_key), "content-type": "application/json"})
        assert made.status == 201, made.body
        hostile = made.json()["key"]["id"]
        seen = await anyio.to_thread.run_sync(drive_owner, port, owner_key, tmp_path)
    finally:
        kp.kill()
    assert seen["status"] == f"Signed in as {owner} (owner)."
    assert seen["markup"] == 0 and seen["pwned"] is None  # no element made from the name
    assert PAYLOAD in seen["names"]  # drawn literally, as the member typed it
    assert seen["revoked"] == f"Key {hostile} revoked." and seen["title"] == "Kraken portal"
