"""The ``[otel]`` section: checked here so a bad exporter setting stops Kraken at startup."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from kraken.config.fields import check_url
from kraken.config.fields import section as _section
from kraken.config.sections import ConfigError, OtelConfig

__all__ = ["otel_section"]


def otel_section(raw: Any, source: str, env: Mapping[str, str]) -> OtelConfig | None:
    """``[otel]`` as an ``OtelConfig``, or None when the section is absent (tracing off)."""
    if raw is None:
        return None
    if isinstance(raw, dict) and "headers" in raw:
        raise ConfigError(f"{source}: otel.headers is read from the variable named by "
                          "otel.headers_env, never from the file")
    cfg = _section(OtelConfig, raw, "otel", source)
    check_url(cfg.endpoint, "otel.endpoint", source)
    if not 0.0 <= cfg.sample_ratio <= 1.0:
        raise ConfigError(f"{source}: otel.sample_ratio must be between 0 and 1")
    if cfg.max_queue < 1 or cfg.schedule_delay_ms < 1:
        raise ConfigError(f"{source}: otel.max_queue and otel.schedule_delay_ms must be at least 1")
    if not cfg.service_name.strip():
        raise ConfigError(f"{source}: otel.service_name must not be empty")
    if cfg.headers_env:
        value = env.get(cfg.headers_env)
        if not value:
            raise ConfigError(f"{source}: otel.headers_env names {cfg.headers_env}, which is unset")
        cfg = replace(cfg, headers=_headers(value, cfg.headers_env, source))
    return cfg


def _headers(value: str, name: str, source: str) -> tuple[tuple[str, str], ...]:
    """``name=value[,name=value]`` (OTEL_EXPORTER_OTLP_HEADERS' format); the values are secret,
    so an error names the variable, never its content."""
    out = []
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key or not key.isascii() or not key.replace("-", "").isalnum() \
                or not val.isprintable() or not val.isascii():
            raise ConfigError(f"{source}: {name} (otel.headers_env) must be "
                              "name=value[,name=value] in printable ASCII")
        out.append((key.lower(), val))
    return tuple(out)
