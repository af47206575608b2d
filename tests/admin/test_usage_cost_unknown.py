"""The usage API (``/admin/usage``) and the usage page's data (``/usage/data``) show a cost
that is not known as unknown (null), never as $0, and count as ``unpriced`` only requests
that reported usage but have no price: a failed request of a priced model costs nothing."""
from __future__ import annotations

import json

import pytest
from adminkit import BEARER, admin_kraken
from harness import auth_headers, http, wait_rows

pytestmark = pytest.mark.anyio

PRICES = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}


def chat(model: str, **extra) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       **extra}).encode()


async def test_unpriced_cost_is_unknown_and_failures_are_not_unpriced(tmp_path):
    async with admin_kraken(tmp_path, prices=PRICES) as (admin, k):
        for body in (chat("mock-gpt"), chat("mock-gpt", mock={"status": 500}),
                     chat("mockai/free-llama"), chat("mockai/free-llama")):
            await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
        rows = await wait_rows(k.db_path, 4)
        by_model = {r["group"]: r for r in
                    (await admin.ok("GET", "/admin/usage?group_by=model"))["data"]}
        by_customer = (await admin.ok("GET", "/admin/usage?group_by=customer"))["data"]
        page = await http(admin.port, "GET", "/usage/data?hours=1", headers=BEARER)
        own = await http(admin.port, "GET", "/usage/data?hours=1", headers=auth_headers())
    assert sorted((r["model_requested"], r["status"], r["cost_usd"] is None) for r in rows) == [
        ("mock-gpt", 200, False), ("mock-gpt", 502, True),
        ("mockai/free-llama", 200, True), ("mockai/free-llama", 200, True)]
    priced, free = by_model["mock-gpt"], by_model["mockai/free-llama"]
    assert priced["unpriced"] == 0 and priced["cost_usd"] > 0 and priced["errors"] == 1
    assert free["unpriced"] == 2 and free["cost_usd"] is None and free["kraken_fee_usd"] is None
    (everyone,) = by_customer  # a total that includes unknown costs is itself unknown
    assert everyone["unpriced"] == 2 and everyone["cost_usd"] is None
    for reply in (page, own):
        assert reply.status == 200, reply.body
        data = reply.json()
        models = {r["group"]: r for r in data["by_model"]}
        assert models["mockai/free-llama"]["cost_usd"] is None
        assert models["mockai/free-llama"]["unpriced"] == 2
        assert models["mock-gpt"]["cost_usd"] > 0 and models["mock-gpt"]["unpriced"] == 0
        assert data["total"]["cost_usd"] is None and data["total"]["unpriced"] == 2
