"""The documented [models] / [aliases] / [routing] syntax, read from a TOML file by a real
``kraken serve`` process in front of two mock providers."""
from __future__ import annotations

import json

import anyio
import pytest
from harness import (
    PROVIDER_KEY,
    TEST_KEY_HASH,
    KrakenProcess,
    auth_headers,
    free_port,
    http,
    running_mock,
    wait_rows,
)

pytestmark = pytest.mark.anyio

CONFIG = """
[server]
port = {port}

[store]
path = "{db}"

[meter]
flush_interval_ms = 20

[[keys]]
id = "testkey"
hash = "{hash}"
customer_id = "cust_1"

[providers.primary]
kind = "openai_compatible"
base_url = "http://127.0.0.1:{pa}/v1"
api_key = "{key}"

[providers.backup]
kind = "openai_compatible"
base_url = "http://127.0.0.1:{pb}/v1"
api_key = "{key}"

[models]
"mock-gpt" = ["primary/mock-gpt", "backup/mock-gpt"]

[models."gpt-4o"]
candidates = [
  {{ target = "primary/gpt-4o", weight = 3 }},
  {{ target = "backup/gpt-4o", weight = 1, priority = 1 }},
]

[aliases]
fast = "mock-gpt"
smart = "auto"

[prices.openai_compatible]
"mock-gpt" = {{ input = 0.15, output = 0.6 }}
"gpt-4o" = {{ input = 2.5, output = 10 }}

[routing]
max_attempts = 2
auto_models = ["mock-gpt", "gpt-4o"]
prefer = {{ code_gen = ["gpt-4o"] }}
breaker_failures = 5
breaker_cooldown_s = 30
"""


def chat(model: str, content: str = "hi") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


async def test_documented_routing_config_serves_fallback_aliases_and_auto(tmp_path):
    async with running_mock() as a, running_mock() as b:
        port = free_port()
        path = tmp_path / "kraken.toml"
        path.write_text(CONFIG.format(port=port, db=tmp_path / "kraken.db", hash=TEST_KEY_HASH,
                                      key=PROVIDER_KEY, pa=a.port, pb=b.port))
        kp = KrakenProcess(path, port, tmp_path / "kraken.log")
        await anyio.to_thread.run_sync(kp.start)
        try:
            a.fail_status = 503
            for model in ("gpt-4o", "fast"):
                r = await http(port, "POST", "/v1/chat/completions", chat(model), auth_headers())
                assert r.status == 200, r.body
            a.fail_status = None
            code = "Write a Python function:\n```python\ndef add(a, b):\n    return a + b\n```"
            for content in ("hi, how are you today?", code):
                r = await http(port, "POST", "/v1/chat/completions", chat("smart", content),
                               auth_headers())
                assert r.status == 200, r.body
            rows = await wait_rows(tmp_path / "kraken.db", 4)
            got = [(r["model_requested"], r["provider"], r["model_dispatched"], r["fallback_used"])
                   for r in rows]
            assert got[:2] == [("gpt-4o", "backup", "gpt-4o", 1), ("fast", "backup", "mock-gpt", 1)]
            assert got[2][:3] == ("smart", "backup", "mock-gpt"), "cheapest healthy route"
            assert rows[3]["task_type"] == "code_gen"
            assert got[3][:3] == ("smart", "backup", "gpt-4o"), "the task's preferred model"
            metrics = (await http(port, "GET", "/metrics")).body.decode()
            assert 'kraken_circuit_state{provider="primary"} 0.0' in metrics
            assert 'kraken_fallbacks_total{provider="primary"} 2.0' in metrics
            assert 'kraken_route_error_rate_ewma{model="gpt-4o",provider="primary"}' in metrics
        finally:
            kp.signal(15)
            await anyio.to_thread.run_sync(kp.wait)
