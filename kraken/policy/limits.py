"""The limiter the ``[limits]`` section asks for: in memory (one process) or Redis (many).

The embedded default is ``MemoryLimiter``; ``RedisLimiter`` is imported only when configured,
so a plain install never touches the redis package.
"""
from __future__ import annotations

from kraken import metrics
from kraken.config import LimitsConfig
from kraken.policy.ratelimit import LimitPolicy, Limiter, MemoryLimiter


def build_limiter(cfg: LimitsConfig) -> Limiter:
    policy = limit_policy(cfg)
    if cfg.backend != "redis":
        return MemoryLimiter(policy)
    from kraken.policy.redis_limits import RedisLimiter

    return RedisLimiter(cfg.redis_url, ip_salt=cfg.ip_salt, policy=policy,
                        fail_open=cfg.fail_open, timeout_s=cfg.redis_timeout_s,
                        retry_s=cfg.redis_retry_s,
                        on_unavailable=lambda op: metrics.LIMITER_UNAVAILABLE.labels(op).inc())


def limit_policy(cfg: LimitsConfig):
    """The ``LimitPolicy`` a ``[limits]`` section describes (raises ValueError if invalid)."""
    return LimitPolicy(rpm=cfg.rpm, tpm=cfg.tpm, max_concurrent=cfg.max_concurrent,
                       window_s=cfg.window_s, lease_s=cfg.lease_s,
                       ip_auth_failures=cfg.ip_auth_failures, ip_window_s=cfg.ip_window_s,
                       ipv6_prefix=cfg.ipv6_prefix)
