"""What admin routes need, wired once by ``kraken.admin.build``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kraken.config import Config
from kraken.store.interface import Store


@dataclass
class AdminContext:
    store: Store
    cfg: Config
    meter: Any = None
    """The running process's Meter: erasure waits for its queue before the final sweep."""
    keyring: Any = None
    """The BYOK master keyring (None: BYOK is not configured)."""
    verifier: Any = None
    """The gateway's KeyVerifier: the usage page accepts Kraken API keys (None: admin token only)."""
    limiter: Any = None
    """The gateway's rate limiter: the usage page's key checks count against the same
    per-address auth limits as the client listener (None: no per-address limits)."""
    billing: Any = None
    """The gateway's BillingGuard: a wallet credit here is seen by this process's next request,
    not only at its next refresh (None: no gateway in this process)."""

    @property
    def redis_url(self) -> str | None:
        return self.cfg.limits.redis_url or None
