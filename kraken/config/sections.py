"""The configuration's shape: one frozen dataclass per TOML section, with its defaults.

Parsing and validation live in ``kraken.config``; these classes are what the rest of Kraken
receives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

DEMO_KEY = "kr_test_demo_krakendemokeyfordocs0000"
"""Documented key accepted only with ``--demo`` (loopback, mock provider, no real money)."""
DEMO_KEY_HASH = "$2b$04$Z/JueSytoa7jbYueZgedMOVj6OgVmggUKcY5hXAyRMf4VX0e19Elu"
"""bcrypt of DEMO_KEY, computed once (cost 4): the key is public, so a costly hash protects
nothing, and hashing it at each ``--demo`` start (cost 10) plus checking it on the first
request cost ~0.1 s of start-up CPU."""


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
    """Open connections one address (IPv6: one /64) may hold; 0 = unlimited. Peers in
    ``[limits] trusted_proxies`` (a load balancer carries every client) are never counted."""
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
    max_audio_bytes: int = 25 * 1024 * 1024
    """Largest ``/v1/audio`` upload (OpenAI's own 25 MB); more is a 413. Uploads stream: this,
    not ``max_body_bytes``, bounds them."""
    max_file_bytes: int = 512 * 1024 * 1024
    """Largest ``/v1/files`` upload (OpenAI's own 512 MB); more is a 413."""


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
    """Where state lives: one SQLite file (embedded default) or a PostgreSQL shared by several
    hosts; and this host's crash journal, which is always local."""

    backend: str = "sqlite"
    """``"sqlite"`` (one host, zero setup) or ``"postgres"`` (many hosts on one database)."""
    path: str = "kraken.db"
    """SQLite only: the database file."""
    dsn: str = ""
    """PostgreSQL only: ``postgresql://user@host/db`` (or ``KRAKEN_DATABASE_URL``)."""
    pool_size: int = 8
    """PostgreSQL only: connections per pool (the writer's, and the key lookups' own)."""
    statement_timeout_ms: int = 5000
    """PostgreSQL only: a statement running longer is cancelled and retried as a busy store."""
    journal_dir: str = ""
    """Defaults to ``<path>.journal`` beside SQLite's file, ``kraken.journal`` with PostgreSQL."""
    busy_timeout_ms: int = 5000
    """SQLite only: how long a write waits for the file's lock."""


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
    queue_max_kib: int = 1024
    """KiB of lines per stream (request lines, process log) waiting for the log writer's
    thread; while stdout or stderr takes nothing (journald stalled) more are dropped, counted."""


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
    api_key: str = field(default="", repr=False)
    """The secret API key (``sk_...``) for top-ups (``POST /v1/account/wallet/checkout``); or
    the variable named by ``api_key_env``. Unset: the top-up route answers 503."""
    api_key_env: str = "STRIPE_SECRET_KEY"
    api_base: str = "https://api.stripe.com"
    """Where Checkout Sessions are created (``{api_base}/v1/checkout/sessions``)."""
    checkout_success_url: str = "https://example.com/kraken/topup/success"
    checkout_cancel_url: str = "https://example.com/kraken/topup/cancel"
    """Where Stripe sends the payer back (a client may name its own in the request)."""


@dataclass(frozen=True, slots=True)
class OtelConfig:
    """OpenTelemetry traces (``[otel]``): one SERVER span per request, exported over OTLP/HTTP
    off the event loop. Absent section: the SDK is never imported."""

    endpoint: str = "http://127.0.0.1:4318"
    """The collector's OTLP/HTTP base URL; spans go to ``{endpoint}/v1/traces``."""
    service_name: str = "kraken"
    headers_env: str = ""
    """A variable holding export headers as ``name=value[,name=value]`` (a collector's auth)."""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Read from ``headers_env`` at load (never set in the file: a secret)."""
    sample_ratio: float = 1.0
    """Share of new traces kept; a client's ``traceparent`` sampled flag wins (parent-based)."""
    propagate_to: tuple[str, ...] = ()
    """Provider names or kinds, beyond the self-hosted kinds, that receive ``traceparent``."""
    max_queue: int = 2048
    """Spans waiting for export; beyond it spans are dropped (counted), never waited for."""
    schedule_delay_ms: int = 1000
    """How often the export thread sends a batch."""


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """Outgoing email (``[email]``): one-time links for self-service sign-up (off by default)
    and for a customer's change of their own address (on once mail is set up)."""

    signup: bool = False
    """Serve ``POST /v1/account/signup``; false: the route answers 404, as if absent."""
    host: str = "127.0.0.1"
    """The SMTP server (a local relay or the provider's submission host)."""
    port: int = 587
    starttls: bool = True
    """Upgrade the connection with STARTTLS (port 587); ``ssl`` is implicit TLS (port 465)."""
    ssl: bool = False
    username: str = ""
    """SMTP AUTH user; empty: no AUTH. The password is read from ``password_env``."""
    password_env: str = "KRAKEN_SMTP_PASSWORD"
    password: str = field(default="", repr=False)
    """Read from ``password_env`` at load (never set in the file)."""
    from_address: str = ""
    """The sender of link emails (``kraken@example.com``)."""
    base_url: str = ""
    """The public base URL of the client listener, as users reach it: links are
    ``{base_url}/v1/account/signup/confirm?token=...`` (``/v1/account/email/confirm`` for an
    email change)."""
    link_ttl_s: float = 900.0
    """How long a sign-up or email change link works (15 minutes); used or expired, it is
    deleted."""
    timeout_s: float = 10.0
    """Connecting to and talking with the SMTP server, each step."""
    per_email_per_hour: int = 3
    """Sign-up requests per address per hour (429 with Retry-After beyond)."""
    per_ip_per_hour: int = 10
    """Sign-up requests per client address (IPv6: per /64) per hour."""

    @property
    def sends_links(self) -> bool:
        """Mail is set up for links (a sender and the URL links point to): without it a
        customer cannot change their own address (only the operator, through the admin API)."""
        return bool(self.from_address and self.base_url)


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
    api_key_env: str = ""
    """The variable ``api_key`` was read from (its name only); empty when the key is in the
    file or the kind needs none. Startup warns when it is unset."""
    api_version: str = ""
    """Azure OpenAI's ``api-version`` query (kind ``azure_openai``; its preset gives one)."""
    auth: str = ""
    """Azure OpenAI: "api-key" (an ``api-key`` header) or "azure_ad" (an Entra ID token, read
    from ``azure_ad_token_env``, as ``Authorization: Bearer``)."""
    deployments: Mapping[str, str] = field(default_factory=dict)
    """Azure OpenAI: model name -> deployment name; a model without one is its own deployment."""
    project: str = ""
    """Vertex AI: the Google Cloud project id (kind ``vertex``; it goes in the URL path)."""
    region: str = ""
    """Vertex AI: the region ("us-central1") or "global"; the default base URL follows it."""
    credentials_file: str = ""
    """Vertex AI: the service-account JSON key file (default: GOOGLE_APPLICATION_CREDENTIALS)."""
    models: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0
    max_connections: int = 1024
    """Connections to this provider's origin. An HTTP/1.1 connection carries one stream at a
    time and LLM streams last minutes, so this is the concurrent streams an HTTP/1.1 provider
    gets (two file descriptors each with the client's: see LimitNOFILE); on an HTTP/2 origin each
    connection multiplexes up to 100 streams."""
    idle_timeout_s: float = 60.0
    pool_wait_s: float = 1.0
    """How long a request waits for a free connection when all ``max_connections`` are busy;
    then 503 ``pool_exhausted`` with Retry-After (not a provider failure: no breaker)."""
    per_key_share: float = 1.0
    """Share of the provider's connections one API key may hold at once (at least 1); over it:
    429 with Retry-After. 1 (default) = no per-key bound: a single-tenant deployment often has
    one key. Multi-tenant operators set e.g. 0.5 so one key's idle streams cannot take the pool."""
    mock_chunks: int = 20
    mock_chunk_delay_ms: float = 0.0
    stream_usage: str = ""
    """How a stream reports usage: "include_usage" (Kraken sends ``stream_options``) or
    "always" (sent unasked; ``stream_options`` is rejected). Defaults to the kind's preset."""
    embeddings: bool = False
    """Serves ``POST /v1/embeddings`` (preset default; set for vLLM/Ollama/TGI as needed)."""
    responses: bool = False
    """Serves ``POST /v1/responses`` (preset default)."""
    completions: bool = False
    """Serves legacy ``POST /v1/completions`` (preset default)."""
    moderations: bool = False
    """Serves ``POST /v1/moderations`` (preset default)."""
    images: bool = False
    """Serves ``POST /v1/images/generations`` (preset default)."""
    rerank: bool = False
    """Serves ``POST /v1/rerank`` (Cohere/Jina shape; set for vLLM, Jina, Cohere v2 servers)."""
    referer: str = ""
    """OpenRouter: the optional ``HTTP-Referer`` app attribution header (kind ``openrouter``)."""
    title: str = ""
    """OpenRouter: the optional ``X-Title`` app attribution header (kind ``openrouter``)."""
    aws_region: str = ""
    """Bedrock: the AWS region (``region`` in the file; kind ``bedrock``, kraken/config/bedrock.py)."""
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    aws_session_token: str = field(default="", repr=False)
    """Bedrock: the key pair (and temporary credentials' token) read from the AWS variables."""


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
    email: EmailConfig = EmailConfig()
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
    otel: OtelConfig | None = None
    """OpenTelemetry traces; None: off (``[otel]`` absent)."""
    demo: bool = False
    source: str = "<defaults>"

    @property
    def journal_dir(self) -> str:
        if self.store.journal_dir:
            return self.store.journal_dir
        return "kraken.journal" if self.store.backend == "postgres" else self.store.path + ".journal"
