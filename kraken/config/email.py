"""The ``[email]`` section: the SMTP server one-time links go through, checked once at load.

Sign-up is off by default; with ``signup = true``, or a sender or base URL given (email
changes mail links too), everything a link needs (server, sender, the public base URL) must
be there, so a misconfiguration stops Kraken at startup instead of failing the first person
who signs up. The password only ever comes from the environment.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

from kraken.config.fields import above_zero, at_least, check_port, check_url
from kraken.config.fields import section as _section
from kraken.config.sections import ConfigError, EmailConfig

__all__ = ["MAX_LINK_TTL_S", "email_section"]

MAX_LINK_TTL_S = 86_400.0
"""A link lives at most a day (the default is 15 minutes)."""
_ADDRESS = re.compile(r"[^@\s<>\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")


def email_section(raw: Any, source: str, env: Mapping[str, str]) -> EmailConfig:
    """``[email]`` as an EmailConfig (the password read from ``password_env``)."""
    if isinstance(raw, dict) and "password" in raw:
        raise ConfigError(f"{source}: email.password cannot be set in the file; use "
                          "email.password_env")
    cfg = _section(EmailConfig, raw, "email", source)
    if cfg.password_env and env.get(cfg.password_env):
        cfg = replace(cfg, password=env[cfg.password_env])
    check_port(cfg.port, "email.port", source)
    if cfg.starttls and cfg.ssl:
        raise ConfigError(f"{source}: email.starttls and email.ssl exclude each other "
                          "(STARTTLS on 587, implicit TLS on 465)")
    above_zero(cfg.link_ttl_s, "email.link_ttl_s", source)
    if cfg.link_ttl_s > MAX_LINK_TTL_S:
        raise ConfigError(f"{source}: email.link_ttl_s must be at most {MAX_LINK_TTL_S:g}")
    above_zero(cfg.timeout_s, "email.timeout_s", source)
    at_least(cfg.per_email_per_hour, 1, "email.per_email_per_hour", source)
    at_least(cfg.per_ip_per_hour, 1, "email.per_ip_per_hour", source)
    if not (cfg.signup or cfg.from_address or cfg.base_url):
        return cfg  # no mail: no sign-up, and customers cannot change their own address
    why = "email.signup" if cfg.signup else "mailing links (email.from_address, email.base_url)"
    if not cfg.host.strip() or cfg.port == 0:
        raise ConfigError(f"{source}: {why} needs email.host and email.port")
    if _ADDRESS.fullmatch(cfg.from_address) is None:
        raise ConfigError(f"{source}: {why} needs email.from_address, an address "
                          "like kraken@example.com")
    if not cfg.base_url:
        raise ConfigError(f"{source}: {why} needs email.base_url, the public URL "
                          "users reach Kraken at (the links point there)")
    check_url(cfg.base_url, "email.base_url", source)
    if "?" in cfg.base_url or "#" in cfg.base_url:
        raise ConfigError(f"{source}: email.base_url must have no query or fragment")
    return replace(cfg, base_url=cfg.base_url.rstrip("/"))
