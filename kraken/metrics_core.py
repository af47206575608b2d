"""Counter, gauge and histogram families and their text exposition, without prometheus_client.

prometheus_client guards every value with a ``threading.Lock`` and walks a histogram's buckets
one value object at a time; a request made ~12 such calls (profiled: ~10% of the CPU per
non-stream request), and importing it cost ~2.8 MB of RSS at start. Kraken updates metrics
only from its event loop thread (the bcrypt pool's and aiosqlite's threads hand results back to
the loop before anything is counted), so a value here is a plain float attribute.

The exposition is byte for byte what ``prometheus_client.generate_latest`` wrote for the same
families (``_total`` counters, no ``_created`` series, label names sorted, Go float format):
tests/test_metrics_exposition.py compares the two.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from kraken.speedups import native, pick

#: What prometheus_client 0.26 served as ``CONTENT_TYPE_LATEST``.
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"

_INF = float("inf")
Sample = tuple[str, dict[str, str], float]


def go_float(value: float) -> str:
    """A float as Prometheus (Go) writes it: ``+Inf``, ``NaN``, ``1.0``, ``1.2345678e+07``."""
    value = float(value)
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


# ---- one series (or one histogram's set of series) -------------------------------
# Each kind is a Python definition (``Py...Value``) and, where the C extension was built, the
# same with its hot methods (inc, dec, observe) from kraken/csrc/series.c; the scrape-side
# methods are this module's in both (the ``_...Series`` mixins). tests/test_metrics_series.py
# runs both versions.
class _CounterSeries:
    __slots__ = ()
    value: float

    def get(self) -> float:
        return self.value

    @property
    def _value(self) -> _CounterSeries:  # prometheus_client's spelling, read by older tests
        return self

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        yield "_total", {}, self.value


class PyCounterValue(_CounterSeries):
    """One counter series: a float that only goes up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _GaugeSeries:
    __slots__ = ()
    value: float
    _function: Callable[[], float] | None

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` at each scrape instead of keeping one."""
        self._function = function

    def get(self) -> float:
        return float(self._function()) if self._function is not None else self.value

    @property
    def _value(self) -> _GaugeSeries:
        return self

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        yield "", {}, self.get()


class PyGaugeValue(_GaugeSeries):
    """One gauge series: set, moved, or read from a function at scrape time."""

    __slots__ = ("value", "_function")

    def __init__(self) -> None:
        self.value = 0.0
        self._function = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _HistogramSeries:
    __slots__ = ()
    _bounds: tuple[float, ...]
    _le: tuple[str, ...]
    counts: list[int]
    sum: float

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        total = 0.0
        for le, count in zip(self._le, self.counts):
            total += count
            yield "_bucket", {"le": le}, total
        yield "_count", {}, total
        if self._bounds[0] >= 0:
            yield "_sum", {}, self.sum


class PyHistogramValue(_HistogramSeries):
    """One histogram: a count per bucket (not cumulative) and the sum; cumulated at scrape."""

    __slots__ = ("_bounds", "_le", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], le: tuple[str, ...]) -> None:
        self._bounds = bounds
        self._le = le
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN falls in no bucket, as in prometheus_client
            self.counts[bisect_left(self._bounds, amount)] += 1


def _with_core(series: type, core_name: str, python_version: type, slots: tuple[str, ...] = (),
               init: Callable | None = None) -> type:
    """The series type that serves: ``series``'s methods over the C core ``core_name``, or
    ``python_version`` where the extension was not built (or KRAKEN_PURE_PYTHON is set)."""
    core = native(core_name)
    if core is None:
        return python_version
    namespace: dict[str, object] = {"__slots__": slots, "__doc__": python_version.__doc__,
                                    "__module__": __name__}
    if init is not None:
        namespace["__init__"] = init
    return pick(type(python_version.__name__[2:], (series, core), namespace), python_version)


def _gauge_init(self: _GaugeSeries) -> None:
    self._function = None


CounterValue = _with_core(_CounterSeries, "CounterCore", PyCounterValue)
GaugeValue = _with_core(_GaugeSeries, "GaugeCore", PyGaugeValue, ("_function",), _gauge_init)
HistogramValue = _with_core(_HistogramSeries, "HistogramCore", PyHistogramValue)


# ---- families ----------------------------------------------------------------------
class Registry:
    """The families one /metrics answer lists, in the order they were defined."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def register(self, family: Family) -> None:
        if family.name in self._families:
            raise ValueError(f"Duplicated metric name: {family.name}")
        self._families[family.name] = family

    def collect(self) -> Iterator[Family]:
        return iter(list(self._families.values()))

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one series (``kraken_x_total``, ``kraken_y_bucket`` ...), or None."""
        labels = labels or {}
        for family in self.collect():
            for sample_name, sample_labels, value in family.samples():
                if sample_name == name and sample_labels == labels:
                    return value
        return None

    def exposition(self) -> bytes:
        """The text exposition format (what ``generate_latest`` wrote)."""
        out: list[str] = []
        for family in self.collect():
            family.write(out)
        return "".join(out).encode()


class Family:
    """A named metric with fixed label names; one value object per label value tuple.

    A family without labels is its own single series: its value's methods (``inc``,
    ``observe`` ...) are bound onto the family, so a call costs no extra hop.
    """

    kind = ""
    _series_suffix = ""
    _methods: tuple[str, ...] = ()

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: Registry) -> None:
        self.name = name[:-len("_total")] if self.kind == "counter" and name.endswith(
            "_total") else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            child = self._children[()] = self._new_value()
            for method in self._methods:
                setattr(self, method, getattr(child, method))
        registry.register(self)

    def _new_value(self) -> object:
        raise NotImplementedError

    def labels(self, *values: object) -> object:
        """The series for these label values (made on first use, then the same object)."""
        if not self.labelnames:
            raise ValueError(f"No label names were set when constructing {self.name}")
        if len(values) != len(self.labelnames):
            raise ValueError(f"Incorrect label count for {self.name}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_value()
        return child

    def samples(self) -> Iterator[Sample]:
        """Every series as (sample name, labels, value), as prometheus_client listed them."""
        for key, child in list(self._children.items()):
            base = dict(zip(self.labelnames, key))
            for suffix, extra, value in child.samples():  # type: ignore[attr-defined]
                yield self.name + suffix, {**base, **extra}, value

    def write(self, out: list[str]) -> None:
        shown = self.name + self._series_suffix
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {shown} {doc}\n# TYPE {shown} {self.kind}\n")
        for name, labels, value in self.samples():
            if labels:
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                out.append(f"{name}{{{pairs}}} {go_float(value)}\n")
            else:
                out.append(f"{name} {go_float(value)}\n")

    def _not_observable(self, *args: object, **kwargs: object) -> None:
        raise ValueError(f"{self.name} has labels: call .labels(...) first")

    inc = dec = set = set_function = observe = _not_observable


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Counter(Family):
    kind = "counter"
    _series_suffix = "_total"
    _methods = ("inc", "get", "_value")

    def _new_value(self) -> CounterValue:
        return CounterValue()


class Gauge(Family):
    kind = "gauge"
    _methods = ("inc", "dec", "set", "set_function", "get", "_value")

    def _new_value(self) -> GaugeValue:
        return GaugeValue()


class Histogram(Family):
    kind = "histogram"
    _methods = ("observe",)

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Iterable[float], registry: Registry) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if not bounds or bounds[-1] != _INF:
            bounds.append(_INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self._bounds = tuple(bounds)
        self._le = tuple(go_float(b) for b in bounds)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_value(self) -> HistogramValue:
        return HistogramValue(self._bounds, self._le)
