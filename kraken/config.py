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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one Kraken instance."""

    server: ServerConfig = ServerConfig()
    tls: TLSConfig = TLSConfig()
    store: StoreConfig = StoreConfig()
    meter: MeterConfig = MeterConfig()
    auth: AuthConfig = AuthConfig()
    keys: tuple[KeyConfig, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Public model name -> ordered candidates ``provider/upstream-model``."""
    prices: Mapping[str, Any] = field(default_factory=dict)
    """Price overrides: provider kind -> model -> {input, cached_input, output, ...} per 1M tokens."""
    fees: Mapping[str, Any] = field(default_factory=dict)
    """Kraken fee rules: {managed_pct, byok_pct, plans = {name = {...}}}."""
    demo: bool = False
    source: str = "<defaults>"

    @property
    def journal_dir(self) -> str:
        return self.store.journal_dir or self.store.path + ".journal"


PROVIDER_PRESETS: dict[str, dict[str, str]] = {
    "openai": {"base_url": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY"},
    "mistral": {"base_url": "https://api.mistral.ai/v1", "key_env": "MISTRAL_API_KEY"},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "key_env": "GROQ_API_KEY"},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY"},
    "xai": {"base_url": "https://api.x.ai/v1", "key_env": "XAI_API_KEY"},
    "gemini": {
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "key_env": "GEMINI_API_KEY",
    },
    "openai_compatible": {"base_url": "", "key_env": ""},
    "mock": {"base_url": "", "key_env": ""},
}


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
    key_env = raw.get("api_key_env", preset["key_env"])
    if "api_key" not in body and key_env:
        body["api_key"] = env.get(key_env, "")
    cfg = _section(ProviderConfig, body, f"providers.{name}", source, name=name, kind=kind)
    if any(ch in cfg.api_key for ch in "\r\n\0 \t"):
        raise ConfigError(f"{source}: providers.{name}.api_key contains whitespace or control characters")
    if kind != "mock":
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


def _models(raw: Any, source: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [models] must be a table")
    out = {}
    for name, target in raw.items():
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, list) or not targets or not all(
            isinstance(t, str) and "/" in t for t in targets
        ):
            raise ConfigError(
                f"{source}: models.{name} must be 'provider/model' or a list of them"
            )
        out[name] = tuple(targets)
    return out


def from_mapping(
    raw: Mapping[str, Any], source: str = "<mapping>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document into a Config."""
    env = os.environ if env is None else env
    allowed = {"server", "store", "meter", "auth", "keys", "providers", "models", "prices", "fees", "tls"}
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
            if target.split("/", 1)[0] not in names:
                raise ConfigError(f"{source}: models.{public} names unknown provider in {target!r}")
    cfg = Config(
        server=_section(ServerConfig, raw.get("server"), "server", source),
        tls=_section(TLSConfig, raw.get("tls"), "tls", source),
        store=_section(StoreConfig, raw.get("store"), "store", source),
        meter=_section(MeterConfig, raw.get("meter"), "meter", source),
        auth=_section(AuthConfig, raw.get("auth"), "auth", source),
        keys=_keys(raw.get("keys"), source),
        providers=providers,
        models=models,
        prices=_checked_prices(raw.get("prices"), source),
        fees=_checked_fees(raw.get("fees"), source),
        source=source,
    )
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError(f"{source}: tls.cert and tls.key must be set together")
    if cfg.server.workers < 1:
        raise ConfigError(f"{source}: server.workers must be at least 1")
    if cfg.server.redirect_http_port and cfg.server.redirect_http_port == cfg.server.port:
        raise ConfigError(f"{source}: server.redirect_http_port must differ from server.port")
    return _env_overrides(cfg, env)


def _checked_prices(raw: Any, source: str) -> dict:
    from kraken.billing.pricing import PriceTable, PricingError

    try:
        PriceTable.load(raw or {})
    except PricingError as exc:
        raise ConfigError(f"{source}: prices: {exc}") from None
    return dict(raw or {})


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
            ProviderConfig(name="mock", kind="mock", models=("mock-gpt", "gpt-4o-mini")),
        )
    keys = cfg.keys + (KeyConfig(id="demo", hash=demo_key_hash, customer_id="demo"),)
    prices = {"mock": {"mock-gpt": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                       "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6}},
              **cfg.prices}
    return replace(cfg, providers=providers, keys=keys, prices=prices, demo=True)
