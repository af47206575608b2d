"""``kraken top``: a live terminal view of one running Kraken, read from its /metrics URL.

Two scrapes an interval apart give rates; TTFB percentiles come from the histogram buckets
the way Prometheus' ``histogram_quantile`` computes them (linear within a bucket). Plain
ANSI redraws, no curses. With ``server.workers > 1`` each scrape is answered by one worker,
so the view is that worker's share.
"""
from __future__ import annotations

import http.client
import math
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

_CLEAR = "\x1b[H\x1b[2J"
_UNREADABLE = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError)
"""What a scrape raises when the URL is down or answers something else than /metrics (another
service's banner, a page that is not the exposition format)."""


@dataclass
class Snapshot:
    """The numbers one frame needs, from one scrape."""

    at: float
    requests: dict[str, float] = field(default_factory=dict)
    """Requests answered, by provider ("" = refused before a provider was chosen)."""
    client_errors: dict[str, float] = field(default_factory=dict)
    server_errors: dict[str, float] = field(default_factory=dict)
    ttfb: dict[str, dict[float, float]] = field(default_factory=dict)
    """provider -> {bucket upper bound: cumulative count}."""
    streams: dict[str, float] = field(default_factory=dict)
    connections: float = 0.0
    queue_depth: float = 0.0
    queue_capacity: float = 0.0
    starts_waiting: float = 0.0
    """Requests read and waiting for their turn of the loop (kraken/http/starts.py)."""


def metrics_url(cfg: Any) -> str:
    """Where ``kraken serve`` with this config serves /metrics: its [server] host and port
    (after KRAKEN_HOST/KRAKEN_PORT, as ``config.load`` applies them); a wildcard address is
    reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.server.host, cfg.server.host)
    scheme = "https" if cfg.tls.cert else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{cfg.server.port}/metrics"


def parse(text: str, at: float) -> Snapshot:
    snap = Snapshot(at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            provider = s.labels.get("provider", "")
            if s.name == "kraken_requests_total":
                snap.requests[provider] = snap.requests.get(provider, 0.0) + s.value
                status = int(s.labels.get("status", "0") or 0)
                bucket = snap.server_errors if status >= 500 else (
                    snap.client_errors if status >= 400 else None)
                if bucket is not None:
                    bucket[provider] = bucket.get(provider, 0.0) + s.value
            elif s.name == "kraken_ttfb_seconds_bucket":
                snap.ttfb.setdefault(provider, {})[float(s.labels["le"])] = s.value
            elif s.name == "kraken_active_streams":
                snap.streams[provider] = s.value
            elif s.name == "kraken_active_connections":
                snap.connections = s.value
            elif s.name == "kraken_meter_queue_depth":
                snap.queue_depth = s.value
            elif s.name == "kraken_meter_queue_capacity":
                snap.queue_capacity = s.value
            elif s.name == "kraken_handler_starts_waiting":
                snap.starts_waiting = s.value
    return snap


def scrape(url: str, timeout: float = 5.0) -> Snapshot:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (operator's URL)
        text = reply.read().decode()
    return parse(text, time.monotonic())


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus ``histogram_quantile`` over cumulative ``{le: count}``; None without data."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):  # in the +Inf bucket: the highest finite bound is all we know
                return bounds[-2] if len(bounds) > 1 else None
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


def _delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    if not before:
        return now
    return {le: count - before.get(le, 0.0) for le, count in now.items()}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds >= 0.01 else f"{seconds * 1000:.2f}ms"
    return f"{seconds:.2f}s"


def frame(cur: Snapshot, prev: Snapshot | None, url: str) -> str:
    """One screen: totals, and rates and windowed TTFB when ``prev`` is given."""
    span = (cur.at - prev.at) if prev is not None else 0.0

    def rate(now: dict[str, float], before: dict[str, float] | None, key: str) -> str:
        if prev is None or span <= 0:
            return "-"
        return f"{(now.get(key, 0.0) - (before or {}).get(key, 0.0)) / span:.1f}"

    queue = f"{cur.queue_depth:.0f}/{cur.queue_capacity:.0f}"
    lines = [
        f"kraken top  {url}  {time.strftime('%H:%M:%S')}",
        f"connections {cur.connections:.0f}   active streams {sum(cur.streams.values()):.0f}   "
        f"meter queue {queue}   handlers waiting {cur.starts_waiting:.0f}",
        "",
        f"{'provider':<20} {'req/s':>8} {'5xx/s':>8} {'requests':>10} {'4xx':>7} {'5xx':>7} "
        f"{'ttfb p50':>10} {'ttfb p99':>10} {'streams':>8}",
    ]
    providers = sorted(set(cur.requests) | set(cur.streams) | set(cur.ttfb))
    for p in providers:
        window = _delta(cur.ttfb.get(p, {}), prev.ttfb.get(p) if prev else None)
        if not window or max(window.values(), default=0) <= 0:
            window = cur.ttfb.get(p, {})  # no traffic this interval: since start
        lines.append(
            f"{p or '(refused)':<20} {rate(cur.requests, prev and prev.requests, p):>8} "
            f"{rate(cur.server_errors, prev and prev.server_errors, p):>8} "
            f"{cur.requests.get(p, 0):>10.0f} {cur.client_errors.get(p, 0):>7.0f} "
            f"{cur.server_errors.get(p, 0):>7.0f} {_ms(quantile(0.5, window)):>10} "
            f"{_ms(quantile(0.99, window)):>10} {cur.streams.get(p, 0):>8.0f}")
    if not providers:
        lines.append("(no requests yet)")
    return "\n".join(lines) + "\n"


def run(url: str, interval: float, once: bool, out: IO[str] = sys.stdout) -> int:
    """``--once``: two scrapes ``interval`` apart, one frame. Else redraw until Ctrl-C."""
    try:
        prev = scrape(url)
        if once:
            time.sleep(interval)
            out.write(frame(scrape(url), prev, url))
            return 0
        while True:
            time.sleep(interval)
            try:
                cur = scrape(url)
            except _UNREADABLE as exc:
                out.write(f"{_CLEAR}kraken top: cannot read {url}: {exc}\n")
                out.flush()
                continue
            out.write(_CLEAR + frame(cur, prev, url))
            out.flush()
            prev = cur
    except _UNREADABLE as exc:
        print(f"kraken top: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
