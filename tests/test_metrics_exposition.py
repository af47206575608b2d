"""kraken/metrics_core.py writes the exposition prometheus_client wrote, byte for byte.

Kraken's own metric classes replaced prometheus_client on the hot path (issue 13); dashboards,
alerts and ``kraken top`` read the same names, HELP, TYPE, labels and buckets as before.
"""
from __future__ import annotations

import math

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kraken import metrics, metrics_core
from kraken.metrics_core import CONTENT_TYPE, Counter, Family, Gauge, Histogram, Registry

prometheus_client.disable_created_metrics()  # Kraken never served *_created series

EXPECTED = r'''# HELP demo_requests_total Requests "answered", by route.
# TYPE demo_requests_total counter
demo_requests_total{route="chat",status="200"} 3.0
demo_requests_total{route="a\"b\\c\nd",status="500"} 1.0
# HELP demo_dropped_total Never incremented.
# TYPE demo_dropped_total counter
demo_dropped_total 0.0
# HELP demo_unused_total A family with labels and no series yet.
# TYPE demo_unused_total counter
# HELP demo_active Open things.\nSecond line \\ backslash.
# TYPE demo_active gauge
demo_active 1.0
# HELP demo_depth Read at scrape time.
# TYPE demo_depth gauge
demo_depth 7.0
# HELP demo_seconds Time taken.
# TYPE demo_seconds histogram
demo_seconds_bucket{le="0.001",provider="p1"} 1.0
demo_seconds_bucket{le="0.5",provider="p1"} 2.0
demo_seconds_bucket{le="1.0",provider="p1"} 2.0
demo_seconds_bucket{le="30.0",provider="p1"} 3.0
demo_seconds_bucket{le="+Inf",provider="p1"} 4.0
demo_seconds_count{provider="p1"} 4.0
demo_seconds_sum{provider="p1"} 100.5005
# HELP demo_big A gauge holding awkward floats.
# TYPE demo_big gauge
demo_big{kind="big"} 1.2345678e+07
demo_big{kind="inf"} +Inf
demo_big{kind="nan"} NaN
demo_big{kind="small"} 1e-07
'''


def demo_families(module, registry) -> tuple:
    """The same families from either library (``module``: prometheus_client or metrics_core)."""
    requests = module.Counter("demo_requests_total", 'Requests "answered", by route.',
                              ("route", "status"), registry=registry)
    dropped = module.Counter("demo_dropped_total", "Never incremented.", registry=registry)
    module.Counter("demo_unused", "A family with labels and no series yet.", ("reason",),
                   registry=registry)
    active = module.Gauge("demo_active", "Open things.\nSecond line \\ backslash.",
                          registry=registry)
    depth = module.Gauge("demo_depth", "Read at scrape time.", registry=registry)
    seconds = module.Histogram("demo_seconds", "Time taken.", ("provider",),
                               buckets=(0.001, 0.5, 1, 30), registry=registry)
    big = module.Gauge("demo_big", "A gauge holding awkward floats.", ("kind",), registry=registry)
    return requests, dropped, active, depth, seconds, big


def drive(families) -> None:
    requests, dropped, active, depth, seconds, big = families
    for _ in range(3):
        requests.labels("chat", 200).inc()
    requests.labels('a"b\\c\nd', "500").inc()
    active.inc(2)
    active.dec()
    depth.set_function(lambda: 7)
    for value in (0.0005, 0.5, 30, 70):
        seconds.labels("p1").observe(value)
    for kind, value in (("big", 12345678), ("inf", math.inf), ("nan", math.nan),
                        ("small", 1e-7)):
        big.labels(kind).set(value)


def test_exposition_of_known_increments_is_the_expected_text():
    registry = Registry()
    drive(demo_families(metrics_core, registry))
    assert registry.exposition().decode() == EXPECTED


def test_prometheus_client_writes_the_same_text_for_the_same_increments():
    """The expected text above is prometheus_client's own answer, not a transcription."""
    registry = CollectorRegistry(auto_describe=True)
    drive(demo_families(prometheus_client, registry))
    assert generate_latest(registry).decode() == EXPECTED


def mirror(family: Family, registry) -> object:
    """``family``'s definition in prometheus_client (same name, HELP, labels, buckets)."""
    name = family.name + family._series_suffix
    if isinstance(family, Histogram):
        return prometheus_client.Histogram(name, family.documentation, family.labelnames,
                                           buckets=family._bounds, registry=registry)
    kind = prometheus_client.Counter if isinstance(family, Counter) else prometheus_client.Gauge
    return kind(name, family.documentation, family.labelnames, registry=registry)


def test_every_kraken_metric_exposes_as_prometheus_client_did():
    """Each of Kraken's definitions, copied into both libraries and driven the same way (two
    series per labelled family, values of each kind), gives identical /metrics text."""
    ours, theirs = Registry(), CollectorRegistry(auto_describe=True)
    for family in metrics.REGISTRY.collect():
        copy = type(family)(family.name + family._series_suffix, family.documentation,
                            family.labelnames, registry=ours,
                            **({"buckets": family._bounds} if isinstance(family, Histogram) else {}))
        pair = (copy, mirror(family, theirs))
        for n, value in enumerate((0.0003, 2.5)):
            for side in pair:
                series = side.labels(*(f"v{n}-{i}" for i, _ in enumerate(family.labelnames))) \
                    if family.labelnames else side
                if isinstance(family, Histogram):
                    series.observe(value)
                elif isinstance(family, Counter):
                    series.inc(value)
                else:
                    series.set(value)
    assert ours.exposition() == generate_latest(theirs)
    assert ours.exposition().count(b"# TYPE ") == len(list(metrics.REGISTRY.collect())) > 40


def test_metrics_module_serves_the_content_type_prometheus_client_served():
    assert CONTENT_TYPE == prometheus_client.CONTENT_TYPE_LATEST
    content_type, body = metrics.exposition()
    assert content_type == CONTENT_TYPE.encode()
    assert b"# TYPE kraken_requests_total counter\n" in body


def test_a_labelled_family_must_be_given_its_labels_first():
    registry = Registry()
    counter = Counter("demo_total", "Demo.", ("reason",), registry=registry)
    with pytest.raises(ValueError):
        counter.inc()
    with pytest.raises(ValueError):
        counter.labels("a", "b")
    with pytest.raises(ValueError):
        Counter("demo_total", "Again.", registry=registry)
    with pytest.raises(ValueError):
        counter.labels("a").inc(-1)


def test_a_series_is_one_object_and_readable_by_name():
    registry = Registry()
    counter = Counter("demo_total", "Demo.", ("reason",), registry=registry)
    assert counter.labels("a") is counter.labels("a")
    counter.labels("a").inc(2)
    hist = Histogram("demo_seconds", "Demo.", buckets=(1, 2), registry=registry)
    hist.observe(1.5)
    assert registry.get_sample_value("demo_total", {"reason": "a"}) == 2.0
    assert registry.get_sample_value("demo_seconds_bucket", {"le": "1.0"}) == 0.0
    assert registry.get_sample_value("demo_seconds_bucket", {"le": "2.0"}) == 1.0
    assert registry.get_sample_value("demo_seconds_count") == 1.0
    assert registry.get_sample_value("demo_total", {"reason": "b"}) is None
    gauge = Gauge("demo_level", "Demo.", registry=registry)
    gauge.set(4)
    assert gauge._value.get() == 4.0 and counter.labels("a")._value.get() == 2.0
