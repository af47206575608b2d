"""kraken.metrics_core's series: the Python definitions and, where the extension was built, the
versions whose inc, dec and observe are C (kraken/csrc/series.c) answer the same, call for call."""
from __future__ import annotations

import gc
import math
import weakref

import pytest

from kraken import metrics_core, speedups

BUILT = speedups.native("CounterCore") is not None
BOUNDS = (0.005, 0.1, 1.0, 2.5, math.inf)
LE = tuple(metrics_core.go_float(b) for b in BOUNDS)
PAIRS = [
    ("counter", metrics_core.PyCounterValue, metrics_core.CounterValue),
    ("gauge", metrics_core.PyGaugeValue, metrics_core.GaugeValue),
]


def _both(python_version: type, serving: type) -> list[type]:
    return [python_version, serving]


@pytest.mark.parametrize("kind, python_version, serving", PAIRS)
def test_counters_and_gauges_move_alike(kind, python_version, serving):
    seen = []
    for version in _both(python_version, serving):
        value = version()
        trail = [value.get()]
        for amount in (None, 2, 0.25, 1e9, 0, True):
            value.inc() if amount is None else value.inc(amount)
            trail.append(value.get())
        if kind == "gauge":
            value.dec()
            value.dec(3.5)
            trail.append(value.get())
            value.set(7)
            trail.append(value.get())
            value.set_function(lambda: 11)
            trail.append(value.get())
        trail.append(list(value.samples()))
        trail.append(value._value is value)
        seen.append(trail)
    assert seen[0] == seen[1]
    assert all(type(v) is float for v in seen[1][:7])


@pytest.mark.parametrize("version", [metrics_core.PyCounterValue, metrics_core.CounterValue])
def test_a_counter_refuses_to_go_down(version):
    value = version()
    value.inc(3)
    with pytest.raises(ValueError, match="non-negative"):
        value.inc(-1)
    with pytest.raises(TypeError):
        value.inc("1")
    assert value.get() == 3.0


def test_histograms_fill_the_same_buckets():
    amounts = [0.0, 0.004, 0.005, 0.0051, 0.1, 0.5, 1.0, 2.5, 2.6, 1e12, math.inf, -1.0,
               -math.inf, math.nan, 3, True]
    seen = []
    for version in _both(metrics_core.PyHistogramValue, metrics_core.HistogramValue):
        value = version(BOUNDS, LE)
        for amount in amounts:
            value.observe(amount)
        seen.append((list(value.counts), repr(value.sum), list(value.samples())[:-1]))
    assert seen[0] == seen[1]
    assert seen[1][0] == [5, 2, 3, 1, 4]


def test_a_histogram_with_a_negative_bound_shows_no_sum():
    bounds = (-1.0, 0.0, math.inf)
    for version in _both(metrics_core.PyHistogramValue, metrics_core.HistogramValue):
        value = version(bounds, tuple(metrics_core.go_float(b) for b in bounds))
        value.observe(-5)
        assert [name for name, _, _ in value.samples()] == ["_bucket"] * 3 + ["_count"]


def test_a_cycle_through_a_histograms_labels_is_collected():
    """The C core shows its bounds and labels to the collector, as the Python slots are shown:
    an object among the labels that holds its histogram does not keep both alive forever."""
    class Holder:
        histogram = None

    for version in _both(metrics_core.PyHistogramValue, metrics_core.HistogramValue):
        holder = Holder()
        holder.histogram = version(BOUNDS, (*LE[:-1], holder))
        gone = weakref.ref(holder)
        del holder
        gc.collect()
        assert gone() is None, version


def test_a_family_exposes_the_serving_series_alike():
    """The text a scrape gets from families of each version is byte for byte the same."""
    texts = []
    for counter, histogram in ((metrics_core.PyCounterValue, metrics_core.PyHistogramValue),
                               (metrics_core.CounterValue, metrics_core.HistogramValue)):
        registry = metrics_core.Registry()
        requests = metrics_core.Counter("t_requests_total", "Requests.", ["route"],
                                        registry=registry)
        latency = metrics_core.Histogram("t_latency_seconds", "Latency.", ["provider"],
                                         buckets=BOUNDS[:-1], registry=registry)
        requests._new_value = counter  # type: ignore[method-assign]
        latency._new_value = lambda h=histogram, f=latency: h(f._bounds, f._le)  # type: ignore
        for route, seconds in (("chat", 0.2), ("chat", 3.0), ("embed", 0.001)):
            requests.labels(route).inc()
            latency.labels("p").observe(seconds)
        texts.append(registry.exposition())
    assert texts[0] == texts[1] and b't_requests_total{route="chat"} 2.0' in texts[0]


def test_the_c_versions_serve_where_they_were_built():
    for python_version, serving in ((metrics_core.PyCounterValue, metrics_core.CounterValue),
                                    (metrics_core.PyGaugeValue, metrics_core.GaugeValue),
                                    (metrics_core.PyHistogramValue, metrics_core.HistogramValue)):
        assert (serving is python_version) == (speedups.PURE_PYTHON or not BUILT)
        if serving is not python_version:
            assert serving.__name__ == python_version.__name__[2:]
