"""One TOML file plus environment overrides, turned into frozen dataclasses.

Everything else in Kraken receives these objects and never reads the environment or
the file itself. Every error names the key and the file so an operator can fix it.
The dataclasses are in ``sections``, the provider presets in ``presets``.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

from kraken.config.azure import azure_options
from kraken.config.bedrock import bedrock_options
from kraken.config.vertex import vertex_options
from kraken.config.fields import (
    above_zero, at_least, check_host, check_limit_values, check_port, check_url, is_sha256_hex,
)
from kraken.config.fields import section as _section
from kraken.config.store import store_section
from kraken.config.email import email_section
from kraken.config.otel import otel_section
from kraken.config.presets import MOCK_KINDS, PROVIDER_PRESETS, STREAM_USAGE_MODES, TASK_TYPES
from kraken.config.sections import (
    DEMO_KEY, DEMO_KEY_HASH, LOG_LEVELS, AdminConfig, AuthConfig, ByokConfig, Config, ConfigError,
    KeyConfig, LimitsConfig, LoggingConfig, MeterConfig, ModelTarget, ProviderConfig, RetentionConfig,
    RoutingConfig, ServerConfig, StoreConfig, StripeConfig, TLSConfig, WalletConfig,
)

__all__ = [
    "DEMO_KEY", "DEMO_KEY_HASH", "LOG_LEVELS", "MOCK_KINDS", "PROVIDER_PRESETS", "STREAM_USAGE_MODES",
    "AdminConfig", "AuthConfig", "ByokConfig", "Config", "ConfigError", "KeyConfig",
    "LimitsConfig", "LoggingConfig", "MeterConfig", "ModelTarget", "ProviderConfig",
    "RetentionConfig", "RoutingConfig", "ServerConfig", "StoreConfig", "StripeConfig",
    "TLSConfig", "WalletConfig", "from_mapping", "load", "unset_key_variables",
    "with_demo",
]


def _provider(name: str, raw: Any, source: str, env: Mapping[str, str]) -> ProviderConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [providers.{name}] must be a table")
    kind = raw.get("kind", "mock" if name == "mock" else name)
    if not isinstance(kind, str) or kind not in PROVIDER_PRESETS:
        raise ConfigError(
            f"{source}: providers.{name}.kind {kind!r} is not one of {sorted(PROVIDER_PRESETS)}"
        )
    preset = PROVIDER_PRESETS[kind]
    body = {k: v for k, v in raw.items() if k not in ("kind", "api_key_env")}
    body.setdefault("base_url", preset["base_url"])
    for quirk in ("stream_usage", "embeddings", "responses", "completions", "moderations",
                  "images", "rerank"):
        body.setdefault(quirk, preset.get(quirk, ProviderConfig.__dataclass_fields__[quirk].default))
    key_env = raw.get("api_key_env", preset["key_env"])
    if not isinstance(key_env, str):
        raise ConfigError(f"{source}: providers.{name}.api_key_env must be a string")
    key_env = bedrock_options(name, kind, body, key_env, env, source)
    key_env = azure_options(name, kind, body, key_env, preset.get("api_version", ""), source)
    vertex_options(name, kind, body, env, source)
    if "api_key" in body:
        key_env = ""  # the key is in the file
    elif key_env:
        body["api_key"] = env.get(key_env, "")
    cfg = _section(ProviderConfig, body, f"providers.{name}", source, name=name, kind=kind,
                   api_key_env=key_env)
    if any(ch in cfg.api_key for ch in "\r\n\0 \t"):
        raise ConfigError(f"{source}: providers.{name}.api_key contains whitespace or control characters")
    for header in ("referer", "title"):  # OpenRouter's app attribution, sent as headers
        value = getattr(cfg, header)
        if value and (kind != "openrouter" or re.fullmatch(r"[\x20-\x7e]{1,200}", value) is None):
            raise ConfigError(f"{source}: providers.{name}.{header} is for kind openrouter only, "
                              "printable ASCII up to 200 characters")
    if cfg.stream_usage not in STREAM_USAGE_MODES + ("",):
        raise ConfigError(f"{source}: providers.{name}.stream_usage must be one of {list(STREAM_USAGE_MODES)}")
    if kind not in MOCK_KINDS or cfg.base_url:  # a mock with a base_url is an external one
        check_url(cfg.base_url, f"providers.{name}.base_url", source)
    return cfg


KEY_ID = re.compile(r"[a-z0-9]{1,32}")
"""A key id as the key format allows it (gateway/keys.py ``KEY_ID_RE``, a layer above: not
imported here; tests/test_config.py checks both say the same)."""


def _keys(raw: Any, source: str) -> tuple[KeyConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: keys must be an array of tables ([[keys]])")
    out: dict[str, KeyConfig] = {}
    for i, item in enumerate(raw):
        key = _section(KeyConfig, item, f"keys[{i}]", source)
        if KEY_ID.fullmatch(key.id) is None:
            raise ConfigError(f"{source}: keys[{i}].id must be 1 to 32 of a-z and 0-9")
        if key.id in out:
            raise ConfigError(f"{source}: keys[{i}].id {key.id!r} is already used by another [[keys]]")
        if not key.hash.startswith("$2"):
            raise ConfigError(f"{source}: keys[{i}].hash must be a bcrypt hash (kraken keys hash)")
        out[key.id] = key
    return tuple(out.values())


def _admin(raw: Any, source: str) -> AdminConfig:
    cfg = _section(AdminConfig, raw, "admin", source)
    if cfg.token_hash and not is_sha256_hex(cfg.token_hash):
        raise ConfigError(f"{source}: admin.token_hash must be 64 hex digits (kraken admin-token)")
    if cfg.export_page_rows < 1:
        raise ConfigError(f"{source}: admin.export_page_rows must be at least 1")
    return cfg


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
        check_limit_values(cfg)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


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
        if task not in TASK_TYPES:
            raise ConfigError(f"{source}: routing.prefer.{task}: task type must be one of {list(TASK_TYPES)}")
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
               "wallet", "stripe", "plans", "byok", "email", "otel"}
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
        store=store_section(raw.get("store"), source, env),
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
        prices=_table(raw.get("prices"), "prices", source),
        fees=_table(raw.get("fees"), "fees", source),
        wallet=_section(WalletConfig, raw.get("wallet"), "wallet", source),
        stripe=_stripe(raw.get("stripe"), source, env),
        email=email_section(raw.get("email"), source, env),
        plans=_table(raw.get("plans"), "plans", source),
        otel=otel_section(raw.get("otel"), source, env),
        source=source,
    )
    _check_ranges(cfg, source)
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError(f"{source}: tls.cert and tls.key must be set together")
    if cfg.server.workers < 1:
        raise ConfigError(f"{source}: server.workers must be at least 1")
    if cfg.server.redirect_http_port and cfg.server.redirect_http_port == cfg.server.port:
        raise ConfigError(f"{source}: server.redirect_http_port must differ from server.port")
    if cfg.admin.token_hash and cfg.admin.port and cfg.admin.port == cfg.server.port:
        raise ConfigError(f"{source}: admin.port must differ from server.port (its own listener)")
    return _env_overrides(cfg, env)


def _check_ranges(cfg: Config, source: str) -> None:
    """Values the type check lets through but that would fail later: addresses and ports
    (checked here, so a bad one never reaches ``bind``) and intervals of zero."""
    check_host(cfg.server.host, "server.host", source)
    check_port(cfg.server.port, "server.port", source)
    check_port(cfg.server.redirect_http_port, "server.redirect_http_port", source)
    check_host(cfg.admin.host, "admin.host", source)
    check_port(cfg.admin.port, "admin.port", source)
    at_least(cfg.meter.queue_max, 1, "meter.queue_max", source)  # 0 would refuse every request
    at_least(cfg.meter.flush_interval_ms, 1, "meter.flush_interval_ms", source)  # 0: a busy loop
    above_zero(cfg.wallet.refresh_interval_s, "wallet.refresh_interval_s", source)  # 0: busy too


def _logging(raw: Any, source: str) -> LoggingConfig:
    cfg = _section(LoggingConfig, raw, "logging", source)
    if cfg.level.upper() not in LOG_LEVELS:
        raise ConfigError(f"{source}: logging.level must be one of {', '.join(LOG_LEVELS)}")
    if cfg.sampling > 1:
        raise ConfigError(f"{source}: logging.sampling must be between 0 and 1")
    if cfg.format not in ("json", "text"):
        raise ConfigError(f"{source}: logging.format must be \"json\" or \"text\"")
    at_least(cfg.queue_max_kib, 1, "logging.queue_max_kib", source)  # 0 would drop every line
    from dataclasses import replace

    return replace(cfg, level=cfg.level.upper())


def _table(raw: Any, name: str, source: str) -> dict:
    """A section billing parses at startup (kraken/billing/settings.py): a table, kept as is."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return dict(raw or {})


def _stripe(raw: Any, source: str, env: Mapping[str, str]) -> StripeConfig:
    cfg = _section(StripeConfig, raw, "stripe", source)
    if not cfg.webhook_secret and cfg.webhook_secret_env and env.get(cfg.webhook_secret_env):
        from dataclasses import replace

        cfg = replace(cfg, webhook_secret=env[cfg.webhook_secret_env])
    if not cfg.api_key and cfg.api_key_env and env.get(cfg.api_key_env):
        from dataclasses import replace

        cfg = replace(cfg, api_key=env[cfg.api_key_env])
    if not cfg.api_base.startswith(("https://", "http://")):
        raise ConfigError(f"{source}: stripe.api_base must be an http(s) URL")
    if not cfg.customer_metadata_key:
        raise ConfigError(f"{source}: stripe.customer_metadata_key must not be empty")
    return cfg


def _env_overrides(cfg: Config, env: Mapping[str, str]) -> Config:
    """KRAKEN_HOST, KRAKEN_PORT and KRAKEN_DB override the file (handy under systemd)."""
    server, store = cfg.server, cfg.store
    from dataclasses import replace

    if "KRAKEN_HOST" in env:
        check_host(env["KRAKEN_HOST"], "KRAKEN_HOST", "environment")
        server = replace(server, host=env["KRAKEN_HOST"])
    if "KRAKEN_PORT" in env:
        try:
            server = replace(server, port=int(env["KRAKEN_PORT"]))
        except ValueError:
            raise ConfigError("environment: KRAKEN_PORT must be an integer") from None
        check_port(server.port, "KRAKEN_PORT", "environment")
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
        raw = tomllib.loads(Path(chosen).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{chosen}: is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: invalid TOML: {exc}") from None
    return from_mapping(raw, str(chosen), env)


def unset_key_variables(cfg: Config) -> list[tuple[str, str]]:
    """``(provider, variable)`` for each provider whose key variable is unset or empty: its
    requests will fail upstream, which startup says once (the name, never a value)."""
    return [(p.name, p.api_key_env) for p in cfg.providers if p.api_key_env and not p.api_key]


def with_demo(cfg: Config, demo_key_hash: str) -> Config:
    """Add the built-in mock provider and the documented demo key (``--demo``)."""
    from dataclasses import replace

    providers = cfg.providers
    if not any(p.kind == "mock" for p in providers):
        providers = providers + (
            ProviderConfig(name="mock", kind="mock", models=("mock-gpt", "gpt-4o-mini"),
                           embeddings=True, responses=True, completions=True),
        )
    if not any(p.kind == "mock_anthropic" for p in providers):  # /v1/messages and Claude via OpenAI
        providers = providers + (
            ProviderConfig(name="mock-claude", kind="mock_anthropic", models=("mock-claude",)),
        )
    if any(k.id == "demo" for k in cfg.keys):
        raise ConfigError(f"{cfg.source}: keys: id \"demo\" is reserved for --demo's key")
    keys = cfg.keys + (KeyConfig(id="demo", hash=demo_key_hash, customer_id="demo"),)
    prices = {"mock": {"mock-gpt": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                       "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6}},
              "mock_anthropic": {"mock-claude": {"input": 3.0, "cached_input": 0.3,
                                                 "cache_write": 3.75, "output": 15.0}},
              **cfg.prices}
    return replace(cfg, providers=providers, keys=keys, prices=prices, demo=True)
