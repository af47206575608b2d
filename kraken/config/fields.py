"""Turning one TOML table into a section dataclass, value by value.

Every check here raises ``ConfigError`` naming the file and the dotted key: a bad value must
stop Kraken with one line an operator can act on, never with a traceback from deep inside
startup (a socket's ``bind``, a URL parser, a thread pool).
"""
from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any
from urllib.parse import urlsplit

from kraken.config.sections import ConfigError

MAX_PORT = 65535


def section(cls: type, raw: Any, where: str, source: str, **extra: Any) -> Any:
    """``cls`` built from the table ``raw`` (``[where]``), each value coerced to the type of
    the field's default; ``extra`` are fields the table may not set."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = dict(extra)
    for key, value in raw.items():
        if key not in known or key in extra:
            raise ConfigError(f"{source}: unknown key {where}.{key}")
        kwargs[key] = coerce(value, _default(known[key]), f"{where}.{key}", source)
    for name, f in known.items():
        if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{source}: {where}.{name} is required")
    return cls(**kwargs)


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ""  # a field without a default (a key's id, hash, customer) is a string


def coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """``value`` checked against the type of ``default`` (numbers: finite, non-negative)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: {key} must be a non-negative integer")
        return value
    if isinstance(default, float):
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or value < 0):  # TOML has nan and inf
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


def check_port(port: int, key: str, source: str) -> None:
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"{source}: {key} must be between 0 and {MAX_PORT}, not {port}")


def check_host(host: str, key: str, source: str) -> None:
    """An empty host would bind every interface: that must be said, as "0.0.0.0" or "::"."""
    if not host.strip():
        raise ConfigError(f'{source}: {key} must not be empty (every interface: "0.0.0.0" or "::")')


def check_url(url: str, key: str, source: str) -> None:
    """An absolute http(s) URL with a host and, if given, a valid port."""
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily: raises for "h:99999" or "h:abc"
    except ValueError:
        raise ConfigError(f"{source}: {key} is not a valid URL (host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: {key} must be an http(s) URL with a host")
    if port == 0:
        raise ConfigError(f"{source}: {key} must not use port 0")


def at_least(value: float, low: float, key: str, source: str) -> None:
    if value < low:
        raise ConfigError(f"{source}: {key} must be at least {low:g}")


def above_zero(value: float, key: str, source: str) -> None:
    if not value > 0:
        raise ConfigError(f"{source}: {key} must be above 0")


def is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


MAX_IP_RETENTION_S = 3600.0
"""Counters keyed by client address expire within this (the privacy policy's one hour)."""


def check_limit_values(values: object) -> None:
    """ValueError naming the ``[limits]`` field out of range; ``values`` has LimitPolicy's fields
    (a ``LimitsConfig`` or a ``LimitPolicy``), so both are checked by the same rule."""
    for name in ("rpm", "tpm", "max_concurrent", "ip_auth_failures"):
        if getattr(values, name) < 0:
            raise ValueError(f"limits.{name} must be >= 0")
    if not 0 < values.window_s <= MAX_IP_RETENTION_S:
        raise ValueError("limits.window_s must be > 0 and <= 3600")
    if values.lease_s <= 0:
        raise ValueError("limits.lease_s must be > 0")
    if not 0 < values.ip_window_s <= MAX_IP_RETENTION_S:
        raise ValueError("limits.ip_window_s must be > 0 and <= 3600 (IP data expires within 1 h)")
