"""Every Prometheus metric Kraken exports, defined once.

Labels are bounded sets chosen by the operator (provider and model names from the config,
route names, status codes): never customer input, never content, never keys.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from kraken.metrics_core import (CONTENT_TYPE, Counter, CounterValue, Gauge, GaugeValue, Histogram,
                                 HistogramValue, Registry)

# No *_created series (prometheus_client's disable_created_metrics() choice, kept): they double
# the scrape size and no query here uses them.
REGISTRY = Registry()

_TIME_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "kraken_requests_total",
    "Requests answered, by route, provider, model and HTTP status.",
    ("route", "provider", "model", "status"),
    registry=REGISTRY,
)
TTFB = Histogram(
    "kraken_ttfb_seconds",
    "Time from request head to the provider's first body byte.",
    ("provider",),
    buckets=_TIME_BUCKETS,
    registry=REGISTRY,
)
LATENCY = Histogram(
    "kraken_latency_seconds",
    "Time from request head to the last byte written to the client.",
    ("provider",),
    buckets=_TIME_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "kraken_overhead_seconds",
    "Gateway time: total time minus time spent waiting on the provider.",
    buckets=(0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
    registry=REGISTRY,
)
TOKENS = Counter(
    "kraken_tokens_total",
    "Tokens reported by providers, by kind (prompt, completion, cached, reasoning).",
    ("provider", "model", "kind"),
    registry=REGISTRY,
)
COST = Counter(
    "kraken_cost_usd_total",
    "Provider cost in USD of answered requests.",
    ("provider", "model"),
    registry=REGISTRY,
)
UNPRICED = Counter(
    "kraken_unpriced_requests_total",
    "Answered requests whose model has no price: recorded with cost null, never zero.",
    ("provider", "model"),
    registry=REGISTRY,
)
TRANSLATION_FAILURES = Counter(
    "kraken_translation_failures_total",
    "OpenAI-format answers from an Anthropic provider that could not be translated: "
    "event_too_large / body_too_large (over the translator's bound) or untranslatable.",
    ("reason",),
    registry=REGISTRY,
)
ACTIVE_CONNECTIONS = Gauge(
    "kraken_active_connections", "Open client connections.", registry=REGISTRY
)
ACTIVE_STREAMS = Gauge(
    "kraken_active_streams", "Streaming responses in progress.", ("provider",), registry=REGISTRY
)
HANDLER_STARTS_WAITING = Gauge(
    "kraken_handler_starts_waiting",
    "Requests read and waiting for a turn of the event loop to begin their handler "
    "(kraken/http/starts.py: at most 32 begin per turn; bounded by the open connections).",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "kraken_meter_queue_depth", "Records waiting to be written (plus reserved slots).", registry=REGISTRY
)
QUEUE_CAPACITY = Gauge(
    "kraken_meter_queue_capacity", "Bound of the metadata queue.", registry=REGISTRY
)
BUILD_INFO = Gauge(
    "kraken_build_info",
    "Always 1: the Kraken version, the CPython version, whether CPython runs from a shared "
    "libpython (slower per request than a static build) and whether the C speedups serve.",
    ("version", "python", "libpython", "speedups"),
    registry=REGISTRY,
)
FLUSH_SECONDS = Histogram(
    "kraken_meter_flush_seconds",
    "Duration of one batch write to the store.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
RECORDS_WRITTEN = Counter(
    "kraken_meter_records_written_total", "Records committed to the store.", registry=REGISTRY
)
RECORDS_REPLAYED = Counter(
    "kraken_meter_records_replayed_total",
    "Records recovered from the crash journal at startup.",
    registry=REGISTRY,
)
RECORDS_DROPPED = Counter(
    "kraken_meter_records_dropped_total",
    "Records lost. Kraken refuses service instead, so this must stay zero.",
    registry=REGISTRY,
)
RECORDS_UNJOURNALED = Counter(
    "kraken_meter_records_unjournaled_total",
    "Records whose journal append failed (disk full): kept in memory and written to the "
    "store; new requests are refused until the journal is writable again.",
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "kraken_store_errors_total",
    "Failed batch writes, by reason (busy, full, other); the batch is kept and retried.",
    ("reason",),
    registry=REGISTRY,
)
OVERLOAD_REJECTIONS = Counter(
    "kraken_overload_rejections_total",
    "Requests refused with 503 because the metadata queue was full.",
    registry=REGISTRY,
)
REFUSED = Counter(
    "kraken_refused_total",
    "Requests or connections refused because a bound was hit, by reason "
    "(kraken/shedding.py REASONS: queue_full, journal_failed, per_ip_connections, ...).",
    ("reason",),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "kraken_rate_limited_total", "Requests refused with 429.", ("scope",), registry=REGISTRY
)
LIMITER_UNAVAILABLE = Counter(
    "kraken_limiter_unavailable_total",
    "Rate-limit store calls that failed or were skipped (Redis unreachable).",
    ("operation",), registry=REGISTRY,
)
AUTH_CACHE = Counter(
    "kraken_auth_cache_total",
    "API key verifications, by outcome (hit, miss = bcrypt run, negative_hit, db_lookup).",
    ("outcome",),
    registry=REGISTRY,
)
AUTH_CACHE_SIZE = Gauge(
    "kraken_auth_cache_entries",
    "Entries in the key verification caches (verified tokens, wrong secrets, database key "
    "rows, unknown database key ids).", registry=REGISTRY
)
KEY_EVICTIONS = Counter(
    "kraken_key_evictions_total",
    "Key cache evictions for revoked, deleted or changed keys, by source (poll, redis).",
    ("source",), registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "kraken_auth_failures_total", "Requests refused with 401.", registry=REGISTRY
)
BCRYPT_RUNS = Counter(
    "kraken_bcrypt_runs_total",
    "bcrypt comparisons started (requests sharing one run count once).", registry=REGISTRY
)
BYOK_CACHE = Counter(
    "kraken_byok_cache_total",
    "BYOK key lookups, by outcome (hit, miss, none_stored: no BYOK key exists at all).",
    ("outcome",),
    registry=REGISTRY,
)
BYOK_CACHE_SIZE = Gauge(
    "kraken_byok_cache_entries", "Customers in the decrypted BYOK key cache.", registry=REGISTRY
)
BYOK_ERRORS = Counter(
    "kraken_byok_errors_total",
    "BYOK problems: undecryptable stored keys (unusable), failed change polls (poll), failed "
    "key loads answered 503 (load).",
    ("kind",),
    registry=REGISTRY,
)
UPSTREAM_CONNECTIONS = Gauge(
    "kraken_upstream_connections",
    "Open connections to providers, by state (idle, busy).",
    ("provider", "state"),
    registry=REGISTRY,
)
UPSTREAM_DNS_LOOKUPS = Counter(
    "kraken_upstream_dns_lookups_total",
    "Lookups of provider host names, by provider and result (ok, error): one per host and "
    "TTL, shared by every dial (kraken/upstream/resolver.py).",
    ("provider", "result"),
    registry=REGISTRY,
)
TOKEN_EXCHANGES = Counter(
    "kraken_provider_token_exchanges_total",
    "OAuth2 token exchanges of a provider's service account (Vertex AI), by outcome: "
    "ok, refused (the token endpoint refused the account) or unavailable.",
    ("provider", "outcome"),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "kraken_upstream_errors_total",
    "Provider failures, by error type.",
    ("provider", "error_type"),
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "kraken_fallbacks_total",
    "Calls moved to the next candidate before the first byte, by the provider that failed.",
    ("provider",),
    registry=REGISTRY,
)
CIRCUIT_STATE = Gauge(
    "kraken_circuit_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open (probing), 2 open.",
    ("provider",),
    registry=REGISTRY,
)
CIRCUIT_TRANSITIONS = Counter(
    "kraken_circuit_transitions_total",
    "Circuit breaker state changes, by provider and the state entered.",
    ("provider", "state"),
    registry=REGISTRY,
)
CIRCUIT_SKIPS = Counter(
    "kraken_circuit_skips_total",
    "Candidates passed over because their provider's circuit breaker was open.",
    ("provider",),
    registry=REGISTRY,
)
ROUTE_TTFB_EWMA = Gauge(
    "kraken_route_ttfb_ewma_seconds",
    "Moving average of the provider's time to first byte, per configured route (used by auto).",
    ("provider", "model"),
    registry=REGISTRY,
)
ROUTE_ERROR_RATE_EWMA = Gauge(
    "kraken_route_error_rate_ewma",
    "Moving average of the failure rate per configured route (used by auto).",
    ("provider", "model"),
    registry=REGISTRY,
)
ROUTE_HEALTH_ENTRIES = Gauge(
    "kraken_route_health_entries",
    "Routes whose health is tracked (bounded by the configuration).",
    registry=REGISTRY,
)
CLIENT_CANCELLED = Counter(
    "kraken_client_cancelled_total",
    "Requests whose client disconnected before the response ended.",
    registry=REGISTRY,
)
PROTOCOL_ERRORS = Counter(
    "kraken_http_protocol_errors_total",
    "Malformed or over-limit client requests, by status sent.",
    ("status",),
    registry=REGISTRY,
)
SSE_TAP_BUFFER = Gauge(
    "kraken_sse_tap_buffer_bytes_max",
    "Bound on the bytes one SSE tap may hold while looking for an event's end.",
    registry=REGISTRY,
)
BILLING_REFUSALS = Counter(
    "kraken_billing_refusals_total",
    "Requests refused by plan, wallet or key budget (model_not_allowed, monthly_token_cap, "
    "monthly_spend_cap, insufficient_balance, key_token_budget, key_spend_budget).",
    ("reason",),
    registry=REGISTRY,
)
WALLET_DEBITS = Counter(
    "kraken_wallet_debits_total", "Usage debits applied to wallets by the batch writer.",
    registry=REGISTRY,
)
BILLING_SNAPSHOT_ENTRIES = Gauge(
    "kraken_billing_snapshot_entries",
    "Entries held in memory for the hot path's billing checks, by table "
    "(balances, usage, customer_plans, unwritten); bounded by the number of customers; "
    "key_budgets, key_unwritten: budgeted API keys only, capped (kraken/billing/key_budgets.py).",
    ("table",),
    registry=REGISTRY,
)
STRIPE_WEBHOOKS = Counter(
    "kraken_stripe_webhooks_total",
    "Stripe webhook deliveries, by outcome (top_up, duplicate, ignored, bad_signature, invalid).",
    ("outcome",),
    registry=REGISTRY,
)
OTEL_SPANS_DROPPED = Counter(
    "kraken_otel_spans_dropped_total",
    "Request spans dropped because the OpenTelemetry export queue ([otel] max_queue) was full "
    "(the collector is slow or down); export never waits on the event loop.",
    registry=REGISTRY,
)
LOG_LINES_DROPPED = Counter(
    "kraken_log_lines_dropped_total",
    "Log lines dropped because their stream's queue ([logging] queue_max_kib) was full: stdout "
    "(request lines) or stderr (process log) did not take them, e.g. journald stalled. A line "
    "in the stream says how many once it drains; no log write ever waits on the event loop.",
    ("stream",),
    registry=REGISTRY,
)


# ---- model label values ------------------------------------------------------------
OTHER_MODEL = "other"


class ModelLabels:
    """The ``model`` label value of a model dispatched to a provider.

    A client may name any model of a configured provider (``provider/<model>``), so the name
    itself is client text: only the models the operator routes to at that provider are label
    values as they are; every other name (another provider's model, any name of the price
    table, any client-chosen name) shares ``other``. The series count then follows each
    provider's configuration, never the traffic.
    """

    __slots__ = ("_served",)

    def __init__(self, served: Mapping[str, Iterable[str]]):
        self._served = {provider: frozenset(models) for provider, models in served.items()}

    def __call__(self, provider: str, model: str | None) -> str:
        if not model:
            return ""
        return model if model in self._served.get(provider, ()) else OTHER_MODEL


def exposition() -> tuple[bytes, bytes]:
    """The /metrics answer: its content type and body."""
    return CONTENT_TYPE.encode(), REGISTRY.exposition()


# ---- cached label children for the hot path ----------------------------------------
# ``labels()`` costs ~3 µs (lock, tuple checks); a bounded lru_cache lookup ~0.2 µs.
# Label values are operator-chosen names (models through ``ModelLabels``), so 4096 entries
# are never reached in practice.
@functools.lru_cache(maxsize=4096)
def requests_for(route: str, provider: str, model: str, status: int) -> CounterValue:
    return REQUESTS.labels(route, provider, model, str(status))


@functools.lru_cache(maxsize=1024)
def ttfb_for(provider: str) -> HistogramValue:
    return TTFB.labels(provider)


@functools.lru_cache(maxsize=1024)
def latency_for(provider: str) -> HistogramValue:
    return LATENCY.labels(provider)


@functools.lru_cache(maxsize=1024)
def active_streams_for(provider: str) -> GaugeValue:
    return ACTIVE_STREAMS.labels(provider)


@functools.lru_cache(maxsize=4096)
def tokens_for(provider: str, model: str, kind: str) -> CounterValue:
    return TOKENS.labels(provider, model, kind)


@functools.lru_cache(maxsize=4096)
def cost_for(provider: str, model: str) -> CounterValue:
    return COST.labels(provider, model)


@functools.lru_cache(maxsize=4096)
def unpriced_for(provider: str, model: str) -> CounterValue:
    return UNPRICED.labels(provider, model)


@functools.lru_cache(maxsize=64)
def refused_for(reason: str) -> CounterValue:
    return REFUSED.labels(reason)
