"""The limiter the ``[limits]`` section asks for: in memory (one process) or Redis (many).

The embedded default is ``MemoryLimiter``; ``RedisLimiter`` is imported only when configured,
so a plain install never touches the redis package.
"""
from __future__ import annotations

from kraken import metrics
from kraken.config import LimitsConfig, limit_policy
from kraken.policy.ratelimit import Limiter, MemoryLimiter


def build_limiter(cfg: LimitsConfig) -> Limiter:
    policy = limit_policy(cfg)
    if cfg.backend != "redis":
        return MemoryLimiter(policy)
    from kraken.policy.redis_limits import RedisLimiter

    return RedisLimiter(cfg.redis_url, ip_salt=cfg.ip_salt, policy=policy,
                        fail_open=cfg.fail_open, timeout_s=cfg.redis_timeout_s,
                        retry_s=cfg.redis_retry_s,
                        on_unavailable=lambda op: metrics.LIMITER_UNAVAILABLE.labels(op).inc())
