"""GET /metrics: valid Prometheus exposition (checked by promtool) with live values."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from harness import PROMPT_CANARY, TEST_KEY, auth_headers, http, kraken_mapping, running_kraken, running_mock

pytestmark = pytest.mark.anyio

OK_SERIES = 'kraken_requests_total{model="mock-gpt",provider="mockai",route="chat_completions",status="200"}'


def series_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_pass_promtool_and_count_requests(tmp_path):
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            before = series_value((await http(k.port, "GET", "/metrics")).body.decode(), OK_SERIES)
            for stream in (True, False):
                body = json.dumps({"model": "mock-gpt", "stream": stream,
                                   "messages": [{"role": "user", "content": PROMPT_CANARY}]}).encode()
                assert (await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())).status == 200
            reply = await http(k.port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is installed by tools/test"
    check = subprocess.run([promtool, "check", "metrics"], input=reply.body, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert series_value(text, OK_SERIES) - before == 2  # counters are process-wide
    assert 'kraken_tokens_total{kind="completion",model="mock-gpt",provider="mockai"}' in text
    for name in ("kraken_ttfb_seconds_bucket", "kraken_latency_seconds_bucket",
                 "kraken_overhead_seconds_bucket", "kraken_meter_queue_depth",
                 "kraken_meter_flush_seconds_bucket", "kraken_active_connections",
                 "kraken_meter_records_dropped_total"):
        assert name in text, name
    assert PROMPT_CANARY not in text and TEST_KEY not in text


def test_model_labels_keep_each_providers_names_and_share_other_for_the_rest():
    """A dispatched model becomes a label value only if the operator routes to it at that
    provider; another provider's name, price-table names, client-chosen names and case
    variants share ``other``."""
    from kraken.metrics import OTHER_MODEL, ModelLabels

    label = ModelLabels({"mockai": {"mock-gpt"}, "openai": ("gpt-4o",)})
    got = [label("mockai", m) for m in ("mock-gpt", "gpt-4o", "GPT-4o", "x-1", "", None)]
    assert got == ["mock-gpt", OTHER_MODEL, OTHER_MODEL, OTHER_MODEL, "", ""]
    assert [label("openai", "gpt-4o"), label("openai", "mock-gpt"), label("", "gpt-4o")] == [
        "gpt-4o", OTHER_MODEL, OTHER_MODEL]


async def test_a_client_naming_price_table_models_grows_no_model_series(tmp_path):
    """``provider/<model>`` with every name of the price table: the provider's configured
    models (its list, [models] routes, aliases) keep their label, every other name is
    ``other``, so /metrics has the configured series only, whatever clients name."""
    from kraken.billing.pricing import PriceTable

    prices = PriceTable.load()
    named = sorted({m for kind in prices.provider_kinds for m in prices.models(kind)})
    assert "gpt-4o" in named and len(named) > 50
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, models={"team": "mockai/mock-gpt-2"},
                             aliases={"fast": "mockai/mock-gpt-3"})
        async with running_kraken(doc) as k:
            # the registry is the process's: other tests may have counted series before
            before = _mockai_requests((await http(k.port, "GET", "/metrics")).body.decode())
            for model in ["mock-gpt", "team", "fast", *(f"mockai/{m}" for m in named[:20])]:
                body = json.dumps({"model": model,
                                   "messages": [{"role": "user", "content": "hi"}]}).encode()
                reply = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
                assert reply.status == 200, (model, reply.body)
            text = (await http(k.port, "GET", "/metrics")).body.decode()
    after = _mockai_requests(text)
    counted = {series: n - before.get(series, 0.0) for series, n in after.items()}
    models = {series.split('model="', 1)[1].split('"', 1)[0]
              for series, n in counted.items() if n > 0}
    assert models == {"mock-gpt", "mock-gpt-2", "mock-gpt-3", "other"}
    assert counted[OK_SERIES.replace('"mock-gpt"', '"other"')] == 20


def _mockai_requests(text: str) -> dict[str, float]:
    """``kraken_requests_total`` series of the ``mockai`` provider -> their counts."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("kraken_requests_total{") and 'provider="mockai"' in line}
