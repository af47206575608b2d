"""The usage page on the admin listener, in a real headless Chromium (Debian ``chromium``
and ``chromium-driver``, driven by Selenium) against a real Kraken process.

Charts must show data: a screenshot of each chart holds pixels in its series' colours,
and the same chart for a customer without requests holds none.
"""
from __future__ import annotations

import io
import json
import shutil
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from browserkit import CHROMEDRIVER, CHROMIUM, browser
from harness import (PROMPT_CANARY, TEST_KEY, KrakenProcess, auth_headers, free_port, http,
                     kraken_mapping, running_mock, wait_rows, write_toml)
from kraken.admin.token import generate_token, hash_token
from kraken.accounts.keys import generate_key, hash_key
from kraken.store.record import FIELD_NAMES

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = generate_token()
OTHER_KEY = generate_key("otherkey", env="test")
REQUESTS_BLUE = (0x25, 0x63, 0xEB)  # usage.js COLORS.requests
TTFB_P95 = (0xB4, 0x53, 0x09)       # usage.js COLORS.p95ttfb (drawn last)
COST_CYAN = (0x08, 0x91, 0xB2)      # usage.js COLORS.cost
UNPRICED = "mockai/free-llama"      # a model without a price: its cost is unknown


def color_pixels(png: bytes, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    from PIL import Image

    raw = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    r, g, b = rgb
    return sum(1 for i in range(0, len(raw), 3)
               if abs(raw[i] - r) <= tolerance and abs(raw[i + 1] - g) <= tolerance
               and abs(raw[i + 2] - b) <= tolerance)


LATER_COLUMNS = {"byok": False, "key_id": "testkey"}
"""Record fields added by other features, with the values a plain managed request has."""


def history(db: Path, customer: str, n: int) -> None:
    """Older records (the last hour) so the charts have several points to draw."""
    now = time.time()
    rows = []
    for i in range(n):
        rows.append({"ts": now - 3000 + i * 300, "request_id": f"req_hist{customer}{i:04d}",
                     "customer_id": customer, "model_requested": "mock-gpt",
                     "model_dispatched": "mock-gpt", "provider": "mockai", "prompt_tokens": 10 + i,
                     "completion_tokens": 20 + i, "cached_tokens": 0, "reasoning_tokens": 0,
                     "latency_ms": 100.0 + 10 * i, "ttfb_ms": 40.0 + 5 * i, "task_type": "chat",
                     "cost_usd": 0.001 * (i + 1), "kraken_fee_usd": 0.0, "fallback_used": i % 3 == 0,
                     "error_type": "upstream_error" if i == 4 else None,
                     "status": 502 if i == 4 else 200})
    conn = sqlite3.connect(db)
    try:
        cols = ", ".join(FIELD_NAMES)
        marks = ", ".join("?" for _ in FIELD_NAMES)
        conn.executemany(f"INSERT INTO requests ({cols}) VALUES ({marks})",
                         [tuple(r.get(f, LATER_COLUMNS.get(f)) for f in FIELD_NAMES) for r in rows])
        conn.commit()
    finally:
        conn.close()


def show(driver, credential: str, customer: str = "", hours: str = "1") -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    driver.find_element(By.ID, "credential").send_keys(credential)
    field = driver.find_element(By.ID, "customer")
    field.clear()
    field.send_keys(customer)
    Select(driver.find_element(By.ID, "hours")).select_by_value(hours)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    WebDriverWait(driver, 15).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before
        or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    return driver.find_element(By.ID, "status").text


def charts(driver) -> dict[str, bytes]:
    """A screenshot of each chart's canvas (the plot only, without the legend's swatches)."""
    from selenium.webdriver.common.by import By

    return {name: driver.find_element(By.CSS_SELECTOR, f"#chart-{name} canvas").screenshot_as_png
            for name in ("requests", "latency", "cost")}


def drive(admin_port: int, downloads: Path) -> dict:
    """Everything the browser sees, gathered in one thread (Selenium is blocking)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    seen: dict = {}
    driver = browser(downloads)
    try:
        driver.get(f"http://127.0.0.1:{admin_port}/usage")
        seen["title"] = driver.title
        seen["wrong"] = show(driver, "kr_test_nobody_" + "x" * 30)
        seen["wrong_report_hidden"] = not driver.find_element(By.ID, "report").is_displayed()

        seen["key_status"] = show(driver, TEST_KEY)
        seen["credential_field"] = driver.find_element(By.ID, "credential").get_attribute("value")
        seen["tiles"] = driver.find_element(By.ID, "tiles").text
        seen["by_model"] = driver.find_element(By.ID, "by-model").text
        seen["charts"] = charts(driver)
        driver.save_screenshot(str(downloads.parent / "usage-page.png"))  # for a human look
        seen["storage"] = driver.execute_script(
            "return [localStorage.length, sessionStorage.length, document.cookie]")
        seen["cookies"] = driver.get_cookies()
        driver.find_element(By.ID, "export-jsonl").click()
        WebDriverWait(driver, 15).until(lambda d: list(downloads.glob("cust_1.jsonl")))
        seen["forbidden"] = show(driver, "", customer="cust_2")  # the key is kept in memory

        seen["admin_status"] = show(driver, ADMIN_TOKEN)
        seen["admin_by_model"] = driver.find_element(By.ID, "by-model").text
        seen["empty_status"] = show(driver, "", customer="nobody")
        seen["empty_charts"] = charts(driver)
        driver.find_element(By.ID, "forget").click()
        seen["after_forget"] = show(driver, "")
    finally:
        driver.quit()
    return seen


async def test_usage_page_in_headless_chromium(tmp_path):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "tools/test installs chromium"
    async with running_mock() as mock:
        port, admin_port = free_port(), free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port},
                             admin={"host": "127.0.0.1", "port": admin_port,
                                    "token_hash": hash_token(ADMIN_TOKEN)})
        doc["keys"].append({"id": "otherkey", "hash": hash_key(OTHER_KEY, rounds=4),
                            "customer_id": "cust_2"})
        doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            msgs = [{"role": "user", "content": PROMPT_CANARY}]
            for key, body in ((TEST_KEY, {}), (TEST_KEY, {"stream": True}),
                              (TEST_KEY, {"mock": {"status": 500}}), (OTHER_KEY, {}),
                              (OTHER_KEY, {"model": UNPRICED})):
                await http(port, "POST", "/v1/chat/completions",
                           json.dumps({"model": "mock-gpt", "messages": msgs, **body}).encode(),
                           auth_headers(key))
            await wait_rows(tmp_path / "kraken.db", 5)
            history(tmp_path / "kraken.db", "cust_1", 10)
            downloads = tmp_path / "downloads"
            downloads.mkdir()
            seen = await anyio.to_thread.run_sync(drive, admin_port, downloads)
        finally:
            kp.kill()
    assert seen["title"] == "Kraken usage"
    assert "API key or the admin token" in seen["wrong"] and seen["wrong_report_hidden"]
    assert seen["key_status"] == "Showing customer cust_1, 13 requests."  # 3 live + 10 older
    assert seen["credential_field"] == ""  # memory only: not left in the form
    assert "mock-gpt" in seen["by_model"] and "Fallbacks" in seen["tiles"]
    assert seen["storage"] == [0, 0, ""] and seen["cookies"] == []
    for name, colour in (("requests", REQUESTS_BLUE), ("latency", TTFB_P95), ("cost", COST_CYAN)):
        drawn = color_pixels(seen["charts"][name], colour)
        empty = color_pixels(seen["empty_charts"][name], colour)
        assert drawn > 50 and empty < 5, (name, drawn, empty)
    assert "own customer" in seen["forbidden"]
    assert seen["admin_status"] == "Showing all customers, 15 requests."
    rows = {line.split(" ")[0]: line for line in seen["admin_by_model"].splitlines()}
    assert "unknown (1 unpriced)" in rows[UNPRICED], rows  # not $0: the model has no price
    assert "$" in rows["mock-gpt"] and "unknown" not in rows["mock-gpt"], rows
    assert "unknown" not in seen["by_model"]  # cust_1: a failed request costs nothing
    assert seen["empty_status"] == "Showing customer nobody, 0 requests."
    assert "Enter a Kraken API key" in seen["after_forget"]
    export = (downloads / "cust_1.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in export]
    requests = [r for r in records if r.get("record_type", r.get("type")) == "request"]
    assert len(requests) == 13 and all(r["customer_id"] == "cust_1" for r in requests)
    everything = (tmp_path / "kraken.log").read_text() + "\n".join(export)
    assert PROMPT_CANARY not in everything and TEST_KEY not in everything


async def test_page_is_public_but_data_needs_a_credential_scoped_to_its_customer(tmp_path):
    async with running_mock() as mock:
        port, admin_port = free_port(), free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port},
                             admin={"host": "127.0.0.1", "port": admin_port,
                                    "token_hash": hash_token(ADMIN_TOKEN)})
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            page = await http(admin_port, "GET", "/usage")
            script = await http(admin_port, "GET", "/usage/uplot.js")
            anonymous = await http(admin_port, "GET", "/usage/data")
            wrong = await http(admin_port, "GET", "/usage/data", headers=auth_headers("kr_test_x_" + "y" * 30))
            own = await http(admin_port, "GET", "/usage/data?hours=1", headers=auth_headers())
            other = await http(admin_port, "GET", "/usage/data?customer=cust_2", headers=auth_headers())
            bad_range = await http(admin_port, "GET", "/usage/data?hours=5", headers=auth_headers())
            post = await http(admin_port, "POST", "/usage", b"{}")
            admin_api = await http(admin_port, "GET", "/admin/usage", headers=auth_headers())
        finally:
            kp.kill()
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert all("set-cookie" not in r.headers for r in (page, script, own))
    assert script.status == 200 and b"uPlot" in script.body
    assert anonymous.status == 401 and wrong.status == 401
    assert own.status == 200 and own.json()["customer"] == "cust_1"
    assert other.status == 403 and other.json()["error"]["param"] == "customer"
    assert bad_range.status == 400 and bad_range.json()["error"]["param"] == "hours"
    assert post.status == 405
    assert admin_api.status == 401  # an API key opens the page's data, never the admin API
