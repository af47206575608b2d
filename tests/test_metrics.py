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


def test_model_labels_keep_the_operators_names_and_share_other_for_the_rest():
    """A dispatched model becomes a label value only if the operator named it (a configured
    route, the price table); client-chosen names and case variants share ``other``."""
    from kraken.metrics import OTHER_MODEL, ModelLabels

    label = ModelLabels({"mock-gpt"}, ("gpt-4o",))
    got = [label(m) for m in ("mock-gpt", "gpt-4o", "GPT-4o", "x-1", "x-2", "", None)]
    assert got == ["mock-gpt", "gpt-4o", OTHER_MODEL, OTHER_MODEL, OTHER_MODEL, "", ""]
