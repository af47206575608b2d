"""One TOML file plus environment overrides, turned into frozen dataclasses.

Everything else in Kraken receives these objects and never reads the environment or
the file itself. Every error names the key and the file so an operator can fix it.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

DEMO_KEY = "kr_test_demo_krakendemokeyfordocs0000"
"""Documented key accepted only with ``--demo`` (loopback, mock provider, no real money)."""


class ConfigError(ValueError):
    """A configuration problem, always naming the offending key and file."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Inbound HTTP listener: address, limits and timeouts."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 10 * 1024 * 1024
    max_head_bytes: int = 16 * 1024
    max_uri_bytes: int = 8 * 1024
    head_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    body_timeout_s: float = 30.0
    """A request body must arrive within this, plus one second per ``body_min_rate_bytes_s``
    bytes received (slow POST is cut with 408)."""
    body_min_rate_bytes_s: int = 1024
    send_stall_timeout_s: float = 30.0
    """A client that reads nothing of a response for this long is dropped, the provider call
    cancelled (slow read)."""
    max_connections_per_ip: int = 256
    """Open connections one address (IPv6: one /64) may hold; 0 = unlimited."""
    drain_timeout_s: float = 30.0
    write_buffer_high: int = 256 * 1024
    """Bytes queued to a slow client before the provider read is paused."""
    pipeline_buffer_bytes: int = 64 * 1024
    """Bytes of pipelined requests buffered before reading from the client pauses."""
    h2c: bool = True
    """Accept HTTP/2 with prior knowledge on a cleartext listener (ALPN decides over TLS)."""
    redirect_http_port: int = 0
    """If set, a plain-HTTP listener here serves ACME challenges and redirects to HTTPS."""
    acme_dir: str = ""
    """certbot's webroot: files under .well-known/acme-challenge/ are served from it."""
    workers: int = 1
    """Processes serving the port (SO_REUSEPORT) under a supervisor; 1 = one process, no supervisor."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Inbound TLS on server.port. Empty cert means plain HTTP (loopback/dev, or behind a proxy)."""

    cert: str = ""
    """PEM chain, leaf first (certbot's fullchain.pem)."""
    key: str = ""
    """PEM private key, unencrypted (0640 root:kraken)."""
    hsts: bool = True
    hsts_max_age: int = 31_536_000


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where metadata lives: SQLite file (embedded default) and the crash journal."""

    path: str = "kraken.db"
    journal_dir: str = ""
    """Defaults to ``<path>.journal`` beside the database."""
    busy_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """The bounded record queue and its batch writer."""

    queue_max: int = 10_000
    batch_max: int = 500
    flush_interval_ms: int = 200
    retry_backoff_ms: int = 500


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Kraken API key verification: bcrypt runs only on a cache miss."""

    cache_ttl_s: float = 300.0
    cache_max: int = 10_000
    negative_ttl_s: float = 5.0
    bcrypt_threads: int = 2


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Rate limits (``[limits]``): in memory by default, in Redis across processes and hosts.

    When Redis cannot be reached within ``redis_timeout_s``: ``fail_open = true`` (default)
    admits requests unlimited and counts ``kraken_limiter_unavailable_total``; ``false``
    refuses them with 503. Either way nothing is banned for longer than a window.
    """

    backend: str = "memory"
    """"memory" (one process) or "redis" (exact across workers and hosts)."""
    redis_url: str = ""
    ip_salt: str = field(default="", repr=False)
    """Secret keying the hashes under which client addresses are counted in Redis (at least
    16 bytes; or KRAKEN_LIMITS_IP_SALT). Addresses themselves are never stored."""
    fail_open: bool = True
    redis_timeout_s: float = 0.05
    redis_retry_s: float = 1.0
    rpm: int = 0
    """Default requests per window for keys that set none; 0 = unlimited."""
    tpm: int = 0
    max_concurrent: int = 0
    window_s: float = 60.0
    lease_s: float = 600.0
    ip_auth_failures: int = 20
    """Failed authentications per address per ``ip_window_s`` before 429 (checked before bcrypt)."""
    ip_window_s: float = 60.0
    ipv6_prefix: int = 64
    trusted_proxies: tuple[str, ...] = ()
    """Peers (addresses or CIDR networks) whose X-Forwarded-For is believed; otherwise ignored."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP API (``[admin]``) on its own listener; off while ``token_hash`` is empty."""

    host: str = "127.0.0.1"
    port: int = 8081
    token_hash: str = field(default="", repr=False)
    """SHA-256 hex of the admin token (``kraken admin-token`` makes both); never the token."""
    max_body_bytes: int = 1024 * 1024
    export_page_rows: int = 1000
    """Rows read per keyset page while streaming an export (bounds memory per export)."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long audit entries and request metadata are kept (``[retention]``)."""

    audit_days: int = 90
    """Audit entries older than this are purged (0 = keep forever); the chain stays verifiable."""
    request_days: int = 0
    """0 = keep request metadata (the privacy policy: retained for billing audit)."""
    keep_billing_records: bool = False
    """On erasure, keep the customer's request metadata under an irreversible tombstone id."""
    purge_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class ByokConfig:
    """Customers' own provider keys (``[byok]``), encrypted under a versioned master keyring.

    The keyring is ``master_key_file`` (mode 0600, lines ``version:base64key``) or else the
    ``KRAKEN_BYOK_MASTER_KEY`` variable (same entries, comma- or space-separated). Without
    either, BYOK keys cannot be stored and stored ones are not used (requests fail, 503).
    """

    master_key_file: str = ""
    master_key: str = field(default="", repr=False)
    """Filled from KRAKEN_BYOK_MASTER_KEY only (never written in the file)."""
    cache_max: int = 10_000
    """Customers whose decrypted keys are kept in memory (LRU)."""
    cache_ttl_s: float = 300.0
    poll_interval_s: float = 0.25
    """How often each process checks for BYOK changes (set/delete/rotate anywhere take
    effect within this)."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Process logs and the one structured line per request (``[logging]``), for journald."""

    level: str = "INFO"
    """Successful requests log at INFO, failed ones at WARNING; ``--log-level`` overrides."""
    sampling: float = 1.0
    """Share of successful requests that get a line (0..1); failed requests always do."""
    format: str = "json"
    """``json``: one JSON object per line (request lines on stdout); ``text``: key=value lines."""


@dataclass(frozen=True, slots=True)
class WalletConfig:
    """Prepaid wallets (``[wallet]``); which plans are prepaid is set per plan."""

    min_balance_usd: float = 0.0
    """Prepaid requests are refused (402) while the balance is at or below 0 or below this."""
    refresh_interval_s: float = 5.0
    """How often each process re-reads balances, monthly usage and customer plans written
    elsewhere (CLI, admin API, other workers); its own debits and top-ups apply at once."""


@dataclass(frozen=True, slots=True)
class StripeConfig:
    """The Stripe-compatible webhook (``[stripe]``): ``POST /v1/webhooks/stripe`` when a secret is set."""

    webhook_secret: str = field(default="", repr=False)
    """The endpoint's signing secret (``whsec_...``); or the variable named by ``webhook_secret_env``."""
    webhook_secret_env: str = "STRIPE_WEBHOOK_SECRET"
    tolerance_s: float = 300.0
    """Signatures older or newer than this are refused (replay protection)."""
    customer_metadata_key: str = "kraken_customer_id"
    """The payment's metadata key holding the Kraken customer id to credit."""


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """A Kraken API key defined in the config file, stored only as a bcrypt hash."""

    id: str
    hash: str
    customer_id: str
    rpm: int = 0
    """Requests per minute for this key; 0 means the [limits] default (0 there: unlimited)."""
    tpm: int = 0
    """Tokens per minute for this key; 0 means the [limits] default."""
    max_concurrent: int = 0
    """Requests in flight for this key; 0 means the [limits] default."""


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream provider. The base URL comes only from here, never from a client."""

    name: str
    kind: str = "openai"
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    models: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0
    max_connections: int = 100
    idle_timeout_s: float = 60.0
    mock_chunks: int = 20
    mock_chunk_delay_ms: float = 0.0
    stream_usage: str = ""
    """How a stream reports usage: "include_usage" (Kraken sends ``stream_options``) or
    "always" (sent unasked; ``stream_options`` is rejected). Defaults to the kind's preset."""
    embeddings: bool = False
    """Serves ``POST /v1/embeddings`` (preset default; set for vLLM/Ollama/TGI as needed)."""
    responses: bool = False
    """Serves ``POST /v1/responses`` (preset default)."""


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """One candidate of a public model: ``provider/upstream-model`` with its weight and priority.

    Candidates of the lowest ``priority`` share the first attempt in proportion to ``weight``;
    the others follow as fallbacks (by priority, then again by weight)."""

    target: str
    weight: float = 1.0
    priority: int = 0

    @property
    def provider(self) -> str:
        return self.target.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Fallback, per-provider circuit breakers and the ``auto`` model (``[routing]``)."""

    max_attempts: int = 3
    """Candidates tried per request (ones skipped for an open circuit do not count)."""
    auto_models: tuple[str, ...] = ()
    """Public model names ``auto`` may pick from; empty: ``auto`` is not served."""
    prefer: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Task type -> models of ``auto_models`` that ``auto`` tries first for that task."""
    latency_weight: float = 1.0
    """What one second of moving-average ttfb costs in auto's score, in USD per 1M tokens."""
    auto_max_error_rate: float = 0.25
    """Routes whose error-rate average is above this go after every healthier one in ``auto``."""
    ewma_alpha: float = 0.2
    """Weight of the newest sample in the ttfb and error-rate moving averages."""
    health_recovery_s: float = 60.0
    """Half-life with which an idle route's error rate decays (so it is tried again)."""
    breaker_failures: int = 5
    """Consecutive failures that open a provider's circuit (0 = off)."""
    breaker_failure_rate: float = 0.5
    """Failure rate (moving average) that opens it once breaker_min_requests were seen (0 = off)."""
    breaker_min_requests: int = 20
    breaker_cooldown_s: float = 30.0
    """An open circuit lets one probe through after this; its success closes the circuit."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one Kraken instance."""

    server: ServerConfig = ServerConfig()
    tls: TLSConfig = TLSConfig()
    store: StoreConfig = StoreConfig()
    meter: MeterConfig = MeterConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    admin: AdminConfig = AdminConfig()
    retention: RetentionConfig = RetentionConfig()
    byok: ByokConfig = ByokConfig()
    logging: LoggingConfig = LoggingConfig()
    wallet: WalletConfig = WalletConfig()
    stripe: StripeConfig = StripeConfig()
    plans: Mapping[str, Any] = field(default_factory=dict)
    """Plans: {default = name, <name> = {rpm, tpm, ..., prepaid, fee_percent}} (kraken/billing/plans.py)."""
    keys: tuple[KeyConfig, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()
    models: Mapping[str, tuple[ModelTarget, ...]] = field(default_factory=dict)
    """Public model name -> candidates (``provider/upstream-model``, weight, priority)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Alias (``fast``, ``cheap``) -> public model name, ``provider/model`` or ``auto``."""
    routing: RoutingConfig = RoutingConfig()
    prices: Mapping[str, Any] = field(default_factory=dict)
    """Price overrides: provider kind -> model -> {input, cached_input, output, ...} per 1M tokens."""
    fees: Mapping[str, Any] = field(default_factory=dict)
    """Kraken fee rules: {managed_pct, byok_pct, plans = {name = {...}}}."""
    demo: bool = False
    source: str = "<defaults>"

    @property
    def journal_dir(self) -> str:
        return self.store.journal_dir or self.store.path + ".journal"


PROVIDER_PRESETS: dict[str, dict[str, Any]] = {
    # Quirks from the providers' API references: Mistral rejects ``stream_options`` (422
    # extra_forbidden) and always ends a stream with usage; DeepSeek reports cache reads as
    # ``prompt_cache_hit_tokens``; Responses API on OpenAI, Groq and xAI; all use Bearer auth.
    "openai": {"base_url": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY",
               "stream_usage": "include_usage",
               "embeddings": True, "responses": True},
    "mistral": {"base_url": "https://api.mistral.ai/v1", "key_env": "MISTRAL_API_KEY",
                "stream_usage": "always",
                "embeddings": True, "responses": False},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "key_env": "GROQ_API_KEY",
             "stream_usage": "include_usage",
             "embeddings": False, "responses": True},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY",
                 "stream_usage": "include_usage",
                 "embeddings": False, "responses": False},
    "xai": {"base_url": "https://api.x.ai/v1", "key_env": "XAI_API_KEY",
            "stream_usage": "include_usage",
            "embeddings": False, "responses": True},
    "gemini": {
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "key_env": "GEMINI_API_KEY",
        "stream_usage": "include_usage",
        "embeddings": True, "responses": False,
    },
    "openai_compatible": {"base_url": "", "key_env": "", "stream_usage": "include_usage",
                          "embeddings": True, "responses": False},
    "mock": {"base_url": "", "key_env": "", "stream_usage": "include_usage",
             "embeddings": True, "responses": True},
    # Anthropic's Messages API (kraken/providers/anthropic.py): x-api-key auth, usage always in
    # the stream; the family appends /messages to the base URL.
    "anthropic": {"base_url": "https://api.anthropic.com/v1", "key_env": "ANTHROPIC_API_KEY",
                  "stream_usage": "always", "embeddings": False, "responses": False},
    "mock_anthropic": {"base_url": "", "key_env": "", "stream_usage": "always",
                       "embeddings": False, "responses": False},
}
MOCK_KINDS = ("mock", "mock_anthropic")
"""Kinds served by Kraken's built-in local mocks (demo and tests; no base URL)."""
STREAM_USAGE_MODES = ("include_usage", "always")


def _section(cls: type, raw: Any, where: str, source: str, **extra: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = dict(extra)
    for key, value in raw.items():
        if key not in known or key in extra:
            raise ConfigError(f"{source}: unknown key {where}.{key}")
        default = known[key].default
        kwargs[key] = _coerce(value, default, f"{where}.{key}", source)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: [{where}] {exc}") from None


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: {key} must be a non-negative integer")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: {key} must be a non-negative number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {key} must be a list of strings")
        return tuple(value)
    if isinstance(default, str) or default is None:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string")
        return value
    return value


def _provider(name: str, raw: Any, source: str, env: Mapping[str, str]) -> ProviderConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [providers.{name}] must be a table")
    kind = raw.get("kind", "mock" if name == "mock" else name)
    if kind not in PROVIDER_PRESETS:
        raise ConfigError(
            f"{source}: providers.{name}.kind {kind!r} is not one of {sorted(PROVIDER_PRESETS)}"
        )
    preset = PROVIDER_PRESETS[kind]
    body = {k: v for k, v in raw.items() if k not in ("kind", "api_key_env")}
    body.setdefault("base_url", preset["base_url"])
    for quirk in ("stream_usage", "embeddings", "responses"):
        body.setdefault(quirk, preset.get(quirk, ProviderConfig.__dataclass_fields__[quirk].default))
    key_env = raw.get("api_key_env", preset["key_env"])
    if "api_key" not in body and key_env:
        body["api_key"] = env.get(key_env, "")
    cfg = _section(ProviderConfig, body, f"providers.{name}", source, name=name, kind=kind)
    if any(ch in cfg.api_key for ch in "\r\n\0 \t"):
        raise ConfigError(f"{source}: providers.{name}.api_key contains whitespace or control characters")
    if cfg.stream_usage not in STREAM_USAGE_MODES + ("",):
        raise ConfigError(f"{source}: providers.{name}.stream_usage must be one of {list(STREAM_USAGE_MODES)}")
    if kind not in MOCK_KINDS:
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: providers.{name}.base_url must be an http(s) URL")
    return cfg


def _keys(raw: Any, source: str) -> tuple[KeyConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: keys must be an array of tables ([[keys]])")
    out = []
    for i, item in enumerate(raw):
        key = _section(KeyConfig, item, f"keys[{i}]", source)
        if not key.hash.startswith("$2"):
            raise ConfigError(f"{source}: keys[{i}].hash must be a bcrypt hash (kraken keys hash)")
        out.append(key)
    return tuple(out)


def _admin(raw: Any, source: str) -> AdminConfig:
    cfg = _section(AdminConfig, raw, "admin", source)
    if cfg.token_hash and not _is_sha256_hex(cfg.token_hash):
        raise ConfigError(f"{source}: admin.token_hash must be 64 hex digits (kraken admin-token)")
    if cfg.export_page_rows < 1:
        raise ConfigError(f"{source}: admin.export_page_rows must be at least 1")
    return cfg


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _limits(raw: Any, source: str, env: Mapping[str, str]) -> LimitsConfig:
    import ipaddress

    body = dict(raw or {})
    if "ip_salt" not in body and env.get("KRAKEN_LIMITS_IP_SALT"):
        body["ip_salt"] = env["KRAKEN_LIMITS_IP_SALT"]
    cfg = _section(LimitsConfig, body, "limits", source)
    if cfg.backend not in ("memory", "redis"):
        raise ConfigError(f"{source}: limits.backend must be \"memory\" or \"redis\"")
    if cfg.backend == "redis":
        if not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{source}: limits.redis_url must be a redis:// URL")
        if len(cfg.ip_salt.encode()) < 16:  # redis_limits.MIN_SALT_BYTES
            raise ConfigError(f"{source}: limits.ip_salt (or KRAKEN_LIMITS_IP_SALT) must be a "
                              "secret of at least 16 bytes")
    for proxy in cfg.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"{source}: limits.trusted_proxies: {proxy!r} is not an "
                              "address or network") from None
    try:
        limit_policy(cfg)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def limit_policy(cfg: LimitsConfig):
    """The ``LimitPolicy`` a ``[limits]`` section describes (raises ValueError if invalid)."""
    from kraken.gateway.ratelimit import LimitPolicy

    return LimitPolicy(rpm=cfg.rpm, tpm=cfg.tpm, max_concurrent=cfg.max_concurrent,
                       window_s=cfg.window_s, lease_s=cfg.lease_s,
                       ip_auth_failures=cfg.ip_auth_failures, ip_window_s=cfg.ip_window_s,
                       ipv6_prefix=cfg.ipv6_prefix)


def _models(raw: Any, source: str) -> dict[str, tuple[ModelTarget, ...]]:
    """``name = "p/m"``, ``name = ["p/a", "q/b"]`` (strict order) or ``[models.name]`` with
    ``candidates = ["p/m" | {target, weight, priority}, ...]`` (equal priorities share by weight)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [models] must be a table")
    out = {}
    for name, spec in raw.items():
        where = f"models.{name}"
        if name == "auto":
            raise ConfigError(f"{source}: {where}: 'auto' is reserved (see [routing] auto_models)")
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, list):
            if not spec or not all(isinstance(t, str) and "/" in t for t in spec):
                raise ConfigError(f"{source}: {where} must be 'provider/model' or a list of them")
            out[name] = tuple(ModelTarget(t, 1.0, i) for i, t in enumerate(spec))
            continue
        if not isinstance(spec, dict) or set(spec) != {"candidates"}:
            raise ConfigError(f"{source}: {where} must be 'provider/model', a list of them, or "
                              "a table with only 'candidates'")
        items = spec["candidates"]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{source}: {where}.candidates must be a non-empty array")
        out[name] = tuple(_target(item, f"{where}.candidates[{i}]", source)
                          for i, item in enumerate(items))
    return out


def _target(item: Any, where: str, source: str) -> ModelTarget:
    if isinstance(item, str):
        item = {"target": item}
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: {where} must be 'provider/model' or "
                          "{target = 'provider/model', weight = 1, priority = 0}")
    extra = set(item) - {"target", "weight", "priority"}
    if extra:
        raise ConfigError(f"{source}: unknown key {where}.{sorted(extra)[0]}")
    target, weight, priority = item.get("target"), item.get("weight", 1), item.get("priority", 0)
    if not isinstance(target, str) or "/" not in target:
        raise ConfigError(f"{source}: {where}.target must be 'provider/model'")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1e9:
        raise ConfigError(f"{source}: {where}.weight must be a number above 0")
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ConfigError(f"{source}: {where}.priority must be a non-negative integer")
    return ModelTarget(target, float(weight), priority)


def _aliases(raw: Any, source: str, models: Mapping[str, Any], served: set[str],
             providers: set[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [aliases] must be a table")
    for alias, target in raw.items():
        where = f"aliases.{alias}"
        if alias == "auto" or alias in models:
            raise ConfigError(f"{source}: {where} clashes with a model of the same name")
        if not isinstance(target, str) or not (
            target == "auto" or target in models or target in served
            or target.split("/", 1)[0] in providers and "/" in target
        ):
            raise ConfigError(f"{source}: {where} must name a configured model, "
                              "'provider/model' or 'auto'")
    return dict(raw)


def _routing(raw: Any, source: str, known: set[str]) -> RoutingConfig:
    from kraken.gateway.classify import LABELS

    body = dict(raw or {}) if isinstance(raw, dict) else raw
    prefer_raw = body.pop("prefer", None) if isinstance(body, dict) else None
    cfg = _section(RoutingConfig, body, "routing", source)
    for name in cfg.auto_models:
        if name not in known:
            raise ConfigError(f"{source}: routing.auto_models: {name!r} is not a configured model")
    prefer: dict[str, tuple[str, ...]] = {}
    if prefer_raw is not None and not isinstance(prefer_raw, dict):
        raise ConfigError(f"{source}: routing.prefer must be a table of task type -> models")
    for task, names in (prefer_raw or {}).items():
        if task not in LABELS:
            raise ConfigError(f"{source}: routing.prefer.{task}: task type must be one of {list(LABELS)}")
        if not isinstance(names, list) or not all(n in cfg.auto_models for n in names):
            raise ConfigError(f"{source}: routing.prefer.{task} must list models of routing.auto_models")
        prefer[task] = tuple(names)
    if cfg.max_attempts < 1:
        raise ConfigError(f"{source}: routing.max_attempts must be at least 1")
    if not 0 < cfg.ewma_alpha <= 1:
        raise ConfigError(f"{source}: routing.ewma_alpha must be above 0 and at most 1")
    if cfg.auto_max_error_rate > 1:
        raise ConfigError(f"{source}: routing.auto_max_error_rate must be between 0 and 1")
    if cfg.breaker_failure_rate > 1:
        raise ConfigError(f"{source}: routing.breaker_failure_rate must be between 0 and 1")
    from dataclasses import replace

    return replace(cfg, prefer=prefer)


def _byok(raw: Any, source: str, env: Mapping[str, str]) -> ByokConfig:
    if isinstance(raw, dict) and "master_key" in raw:
        raise ConfigError(f"{source}: byok.master_key cannot be set in the file; use "
                          "byok.master_key_file or KRAKEN_BYOK_MASTER_KEY")
    cfg = _section(ByokConfig, raw, "byok", source,
                   master_key=env.get("KRAKEN_BYOK_MASTER_KEY", ""))
    if cfg.cache_max < 1:
        raise ConfigError(f"{source}: byok.cache_max must be at least 1")
    if not 0 < cfg.poll_interval_s <= 1:
        raise ConfigError(f"{source}: byok.poll_interval_s must be above 0 and at most 1")
    return cfg


def from_mapping(
    raw: Mapping[str, Any], source: str = "<mapping>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document into a Config."""
    env = os.environ if env is None else env
    allowed = {"server", "store", "meter", "auth", "limits", "admin", "retention", "logging", "keys", "providers", "models", "aliases", "routing", "prices", "fees", "tls",
               "wallet", "stripe", "plans", "byok"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown top-level key {key!r}")
    providers_raw = raw.get("providers") or {}
    if not isinstance(providers_raw, dict):
        raise ConfigError(f"{source}: [providers] must be a table")
    providers = tuple(_provider(n, p, source, env) for n, p in providers_raw.items())
    models = _models(raw.get("models"), source)
    names = {p.name for p in providers}
    for public, targets in models.items():
        for target in targets:
            if target.provider not in names:
                raise ConfigError(f"{source}: models.{public} names unknown provider in "
                                  f"{target.target!r}")
    served = {m for p in providers for m in p.models}
    aliases = _aliases(raw.get("aliases"), source, models, served, names)
    routing = _routing(raw.get("routing"), source, set(models) | served)
    cfg = Config(
        server=_section(ServerConfig, raw.get("server"), "server", source),
        tls=_section(TLSConfig, raw.get("tls"), "tls", source),
        store=_section(StoreConfig, raw.get("store"), "store", source),
        meter=_section(MeterConfig, raw.get("meter"), "meter", source),
        auth=_section(AuthConfig, raw.get("auth"), "auth", source),
        admin=_admin(raw.get("admin"), source),
        retention=_section(RetentionConfig, raw.get("retention"), "retention", source),
        byok=_byok(raw.get("byok"), source, env),
        logging=_logging(raw.get("logging"), source),
        limits=_limits(raw.get("limits"), source, env),
        keys=_keys(raw.get("keys"), source),
        providers=providers,
        models=models,
        aliases=aliases,
        routing=routing,
        prices=_checked_prices(raw.get("prices"), source),
        fees=_checked_fees(raw.get("fees"), source),
        wallet=_section(WalletConfig, raw.get("wallet"), "wallet", source),
        stripe=_stripe(raw.get("stripe"), source, env),
        plans=_checked_plans(raw.get("plans"), source),
        source=source,
    )
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError(f"{source}: tls.cert and tls.key must be set together")
    if cfg.server.workers < 1:
        raise ConfigError(f"{source}: server.workers must be at least 1")
    if cfg.server.redirect_http_port and cfg.server.redirect_http_port == cfg.server.port:
        raise ConfigError(f"{source}: server.redirect_http_port must differ from server.port")
    if cfg.admin.token_hash and cfg.admin.port and cfg.admin.port == cfg.server.port:
        raise ConfigError(f"{source}: admin.port must differ from server.port (its own listener)")
    return _env_overrides(cfg, env)


def _logging(raw: Any, source: str) -> LoggingConfig:
    cfg = _section(LoggingConfig, raw, "logging", source)
    if cfg.level.upper() not in LOG_LEVELS:
        raise ConfigError(f"{source}: logging.level must be one of {', '.join(LOG_LEVELS)}")
    if cfg.sampling > 1:
        raise ConfigError(f"{source}: logging.sampling must be between 0 and 1")
    if cfg.format not in ("json", "text"):
        raise ConfigError(f"{source}: logging.format must be \"json\" or \"text\"")
    from dataclasses import replace

    return replace(cfg, level=cfg.level.upper())


def _checked_prices(raw: Any, source: str) -> dict:
    from kraken.billing.pricing import PriceTable, PricingError

    try:
        PriceTable.load(raw or {})
    except PricingError as exc:
        raise ConfigError(f"{source}: prices: {exc}") from None
    return dict(raw or {})


def _checked_plans(raw: Any, source: str) -> dict:
    from kraken.billing.plans import PlanBook, PlanError

    try:
        PlanBook.from_mapping(raw or {})
    except PlanError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dict(raw or {})


def _stripe(raw: Any, source: str, env: Mapping[str, str]) -> StripeConfig:
    cfg = _section(StripeConfig, raw, "stripe", source)
    if not cfg.webhook_secret and cfg.webhook_secret_env and env.get(cfg.webhook_secret_env):
        from dataclasses import replace

        cfg = replace(cfg, webhook_secret=env[cfg.webhook_secret_env])
    if not cfg.customer_metadata_key:
        raise ConfigError(f"{source}: stripe.customer_metadata_key must not be empty")
    return cfg


def _checked_fees(raw: Any, source: str) -> dict:
    from kraken.billing.fees import FeeError, FeeSchedule

    try:
        FeeSchedule.from_mapping(raw or {})
    except FeeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dict(raw or {})


def _env_overrides(cfg: Config, env: Mapping[str, str]) -> Config:
    """KRAKEN_HOST, KRAKEN_PORT and KRAKEN_DB override the file (handy under systemd)."""
    server, store = cfg.server, cfg.store
    from dataclasses import replace

    if "KRAKEN_HOST" in env:
        server = replace(server, host=env["KRAKEN_HOST"])
    if "KRAKEN_PORT" in env:
        try:
            server = replace(server, port=int(env["KRAKEN_PORT"]))
        except ValueError:
            raise ConfigError("environment: KRAKEN_PORT must be an integer") from None
    if "KRAKEN_DB" in env:
        store = replace(store, path=env["KRAKEN_DB"])
    return replace(cfg, server=server, store=store)


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or $KRAKEN_CONFIG, or ./kraken.toml if present, or defaults)."""
    env = os.environ if env is None else env
    chosen = path or env.get("KRAKEN_CONFIG")
    if not chosen:
        chosen = "kraken.toml" if Path("kraken.toml").exists() else None
    if chosen is None:
        return from_mapping({}, "<defaults>", env)
    try:
        raw = tomllib.loads(Path(chosen).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: invalid TOML: {exc}") from None
    return from_mapping(raw, str(chosen), env)


def with_demo(cfg: Config, demo_key_hash: str) -> Config:
    """Add the built-in mock provider and the documented demo key (``--demo``)."""
    from dataclasses import replace

    providers = cfg.providers
    if not any(p.kind == "mock" for p in providers):
        providers = providers + (
            ProviderConfig(name="mock", kind="mock", models=("mock-gpt", "gpt-4o-mini"),
                           embeddings=True, responses=True),
        )
    if not any(p.kind == "mock_anthropic" for p in providers):  # /v1/messages and Claude via OpenAI
        providers = providers + (
            ProviderConfig(name="mock-claude", kind="mock_anthropic", models=("mock-claude",)),
        )
    keys = cfg.keys + (KeyConfig(id="demo", hash=demo_key_hash, customer_id="demo"),)
    prices = {"mock": {"mock-gpt": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                       "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6}},
              "mock_anthropic": {"mock-claude": {"input": 3.0, "cached_input": 0.3,
                                                 "cache_write": 3.75, "output": 15.0}},
              **cfg.prices}
    return replace(cfg, providers=providers, keys=keys, prices=prices, demo=True)
