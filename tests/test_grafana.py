"""tools/grafana/kraken.json queries only series a running Kraken really exports.

Every PromQL expression is parsed (promql-parser); every metric name it selects must be a
series name in Kraken's /metrics (``_total``/``_bucket``/``_sum``/``_count`` included, as
Prometheus stores them), and every label it filters or groups by must exist on that series.
"""
from __future__ import annotations

import json
from pathlib import Path

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import (PROMPT_CANARY, TEST_KEY, auth_headers, free_port, http, kraken_mapping,
                     running_kraken, running_mock)
from kraken.accounts.keys import generate_key, hash_key

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).resolve().parent.parent / "tools" / "grafana" / "kraken.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
LIMITED_KEY = generate_key("limited", env="test")


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target, with Grafana's interval variables filled."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def selectors(expr: str) -> list[tuple[str, set[str], set[str]]]:
    """(metric name, labels matched, labels grouped by) for each series selector in ``expr``."""
    found: list[tuple[str, set[str], set[str]]] = []
    grouping: list[set[str]] = [set()]

    def labels_of(node) -> set[str]:
        modifier = getattr(node, "modifier", None)
        return set(getattr(modifier, "labels", None) or [])

    def pre(node) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            grouping.append(grouping[-1] | labels_of(node))
        elif isinstance(node, promql_parser.VectorSelector):
            matched = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            found.append((node.name, matched, set(grouping[-1])))

    def post(node) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            grouping.pop()

    promql_parser.walk(promql_parser.parse(expr), pre, post)
    return found


def exported(metrics_text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Series names Kraken declares (TYPE lines, with Prometheus suffixes) and labels seen per name."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        for sample in family.samples:
            names.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


def problems(exprs: list[tuple[str, str]], names: set[str], labels: dict[str, set[str]]) -> list[str]:
    out = []
    for title, expr in exprs:
        for name, matched, grouped in selectors(expr):
            if name not in names:
                out.append(f"{title}: {name} is not exported")
            elif name in labels:  # series exist: their labels are known
                for label in sorted((matched | grouped) - labels[name]):
                    out.append(f"{title}: {name} has no label {label!r}")
    return out


def test_every_expression_parses_and_covers_the_issue_list():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 25
    used = {name for _, expr in exprs for name, _, _ in selectors(expr)}
    for wanted in ("kraken_requests_total", "kraken_ttfb_seconds_bucket", "kraken_latency_seconds_bucket",
                   "kraken_overhead_seconds_bucket", "kraken_tokens_total", "kraken_cost_usd_total",
                   "kraken_active_streams", "kraken_meter_queue_depth", "kraken_meter_flush_seconds_bucket",
                   "kraken_rate_limited_total", "kraken_fallbacks_total", "kraken_handler_starts_waiting"):
        assert wanted in used, wanted
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
            assert selectors(inner)[0][0] == "kraken_requests_total"


def test_the_check_catches_wrong_names_and_labels():
    """The live check below must be able to fail: a histogram queried without _bucket, a
    counter without _total, a typo and an unknown label are all reported."""
    text = ("# HELP kraken_ttfb_seconds x\n# TYPE kraken_ttfb_seconds histogram\n"
            'kraken_ttfb_seconds_bucket{le="1.0",provider="p"} 1.0\n'
            'kraken_ttfb_seconds_sum{provider="p"} 0.1\nkraken_ttfb_seconds_count{provider="p"} 1.0\n'
            "# HELP kraken_requests_total x\n# TYPE kraken_requests_total counter\n"
            'kraken_requests_total{provider="p"} 1.0\n')
    names, labels = exported(text)
    bad = [("a", "histogram_quantile(0.5, sum by (le) (rate(kraken_ttfb_seconds[5m])))"),
           ("b", "rate(kraken_requests[5m])"),
           ("c", "rate(kraken_request_total[5m])"),
           ("d", 'sum by (status) (rate(kraken_requests_total{provider="p"}[5m]))')]
    assert len(problems(bad, names, labels)) == 4
    good = [("e", "histogram_quantile(0.5, sum by (le, provider) (rate(kraken_ttfb_seconds_bucket[5m])))"),
            ("f", "sum by (provider) (rate(kraken_requests_total[5m]))")]
    assert problems(good, names, labels) == []
    with pytest.raises(ValueError):
        selectors("sum(rate(kraken_requests_total[5m])")


async def test_dashboard_queries_only_series_a_running_kraken_exports(tmp_path):
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port)
        doc["keys"].append({"id": "limited", "hash": hash_key(LIMITED_KEY, rounds=4),
                            "customer_id": "cust_2", "rpm": 1})
        doc["providers"]["mockai"]["models"] = ["mock-gpt", "gpt-4o"]
        doc["providers"]["down"] = {"kind": "openai_compatible", "models": ["mock-gpt"],
                                    "base_url": f"http://127.0.0.1:{free_port()}/v1",
                                    "connect_timeout_s": 2.0}
        doc["models"] = {"fast": ["down/mock-gpt", "mockai/mock-gpt"]}
        doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
        async with running_kraken(doc) as k:
            msgs = [{"role": "user", "content": PROMPT_CANARY}]
            for body, key, want in (
                ({"model": "mock-gpt", "messages": msgs}, TEST_KEY, 200),
                ({"model": "mock-gpt", "messages": msgs, "stream": True}, TEST_KEY, 200),
                ({"model": "mockai/gpt-4o", "messages": msgs}, TEST_KEY, 200),  # unpriced
                ({"model": "mock-gpt", "messages": msgs, "mock": {"status": 500}}, TEST_KEY, 502),
                ({"model": "fast", "messages": msgs}, TEST_KEY, 200),  # fallback from "down"
                ({"model": "mock-gpt", "messages": msgs}, LIMITED_KEY, 200),
                ({"model": "mock-gpt", "messages": msgs}, LIMITED_KEY, 429),
                ({"model": "mock-gpt", "messages": msgs}, TEST_KEY[:-2] + "zz", 401),
            ):
                reply = await http(k.port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                                   auth_headers(key))
                assert reply.status == want, (body, reply.body)
            text = (await http(k.port, "GET", "/metrics")).body.decode()
    names, labels = exported(text)
    assert problems(exprs, names, labels) == []
    used = {name for _, expr in exprs for name, _, _ in selectors(expr)}
    without_series = sorted(used - set(labels))
    # Only metrics that need a broken store or a full queue to move may lack series here.
    assert set(without_series) <= {"kraken_store_errors_total"}, without_series
