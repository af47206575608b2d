"""Retention: a background task purges audit entries and (if configured) request metadata.

Defaults follow the privacy policy: request metadata is kept (``request_days = 0``), audit
entries for 90 days. Audit purges remove a verified prefix of the chain and move its anchor
(kraken/audit/log.py), so ``kraken audit verify`` still passes afterwards. Each pass also
deletes expired sign-up links (an address that belongs to no customer): the sign-up routes
purge them only as they are used, and may be turned off.
"""
from __future__ import annotations

import logging
import time

import anyio

from kraken import audit
from kraken.audit.log import AuditTampered
from kraken.config import RetentionConfig
from kraken.store.errors import StoreError
from kraken.store.interface import Store

log = logging.getLogger("kraken.retention")
DAY_S = 86_400
_BATCH = 5_000
"""Request rows deleted per transaction, so the meter's writer never waits long."""


async def purge_once(store: Store, cfg: RetentionConfig, *,
                     now: float | None = None) -> dict[str, int]:
    """One purge pass; returns how many audit entries and request rows went."""
    now = time.time() if now is None else now
    done = {"audit_entries": 0, "requests": 0}
    if cfg.request_days > 0:
        cutoff = now - cfg.request_days * DAY_S
        while True:
            async with store.transaction() as tx:
                n = await tx.privacy.purge_requests(tx, cutoff, _BATCH)
            done["requests"] += n
            if n < _BATCH:
                break
    if cfg.audit_days > 0:
        done["audit_entries"] = await audit.purge_before(store, now - cfg.audit_days * DAY_S)
    if any(done.values()):
        await audit.record(store, actor="retention", action="retention.purge", detail={
            **done, "audit_days": cfg.audit_days, "request_days": cfg.request_days})
    return done


async def purge_expired_links(store: Store, *, now: float | None = None) -> int:
    """Delete the sign-up links past their expiry; how many went."""
    async with store.transaction() as tx:
        return await tx.signup.purge(tx, time.time() if now is None else now)


async def run(store: Store, cfg: RetentionConfig) -> None:
    """Purge every ``purge_interval_s`` (the first pass at most a minute after startup, not
    during it) until cancelled; errors are logged."""
    interval = max(cfg.purge_interval_s, 0.05)
    await anyio.sleep(min(interval, 60.0))
    while True:
        try:
            await purge_expired_links(store)
            done = await purge_once(store, cfg)
            if any(done.values()):
                log.info("retention purge: %d audit entries, %d request records",
                         done["audit_entries"], done["requests"])
        except AuditTampered as exc:
            log.error("retention purge skipped: %s (kraken audit verify)", exc)
        except StoreError as exc:
            log.warning("retention purge failed, will retry: %s", exc)
        except Exception:  # a background task must not take the server down
            log.exception("retention purge failed, will retry")
        await anyio.sleep(interval)
