"""CPU of one request's metric updates: Kraken's own classes against prometheus_client.

A non-stream request makes about a dozen metric calls (connection gauge, request counter, three
histograms, token counters, cost, auth cache ...). This times that set on the same families
defined in both libraries, interleaved, and prints microseconds per request for each.

    .venv/bin/python bench/metrics_ops.py --requests 200000 --rounds 5
"""
from __future__ import annotations

import argparse
import functools
import time

import prometheus_client

from kraken import metrics_core

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1, 2.5, 5, 10, 30, 60)


def one_request_ops(module, registry) -> functools.partial:
    """A function doing one request's metric calls, the way kraken's call sites make them."""
    requests = module.Counter("b_requests_total", "d", ("route", "provider", "model", "status"),
                              registry=registry)
    ttfb = module.Histogram("b_ttfb_seconds", "d", ("provider",), buckets=_BUCKETS, registry=registry)
    latency = module.Histogram("b_latency_seconds", "d", ("provider",), buckets=_BUCKETS,
                               registry=registry)
    overhead = module.Histogram("b_overhead_seconds", "d", buckets=_BUCKETS, registry=registry)
    tokens = module.Counter("b_tokens_total", "d", ("provider", "model", "kind"), registry=registry)
    cost = module.Counter("b_cost_usd_total", "d", ("provider", "model"), registry=registry)
    connections = module.Gauge("b_active_connections", "d", registry=registry)
    auth = module.Counter("b_auth_cache_total", "d", ("outcome",), registry=registry)
    series = (requests.labels("chat", "p", "m", "200"), ttfb.labels("p"), latency.labels("p"),
              overhead, tokens.labels("p", "m", "prompt"), tokens.labels("p", "m", "completion"),
              cost.labels("p", "m"), connections, auth.labels("hit"))
    return functools.partial(_ops, *series)


def _ops(req, ttfb, latency, overhead, prompt, completion, cost, conns, auth) -> None:
    conns.inc()
    auth.inc()
    req.inc()
    ttfb.observe(0.0031)
    latency.observe(0.0042)
    overhead.observe(0.00021)
    prompt.inc(12)
    completion.inc(30)
    cost.inc(0.000123)
    conns.dec()


def per_request_us(ops, requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        ops()
    return (time.process_time() - start) / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    prometheus_client.disable_created_metrics()
    sides = {"prometheus_client": one_request_ops(prometheus_client,
                                                  prometheus_client.CollectorRegistry()),
             "kraken.metrics_core": one_request_ops(metrics_core, metrics_core.Registry())}
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, ops in sides.items():
            figures[name].append(per_request_us(ops, args.requests))
    for name, values in figures.items():
        print(f"{name:22} µs per request's metric calls: "
              + " / ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
