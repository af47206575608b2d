"""Start the admin listener: Kraken's own HTTP stack on a separate (loopback) address.

It keeps the client listener's limits: head and keep-alive timeouts, at most
``[server] max_connections_per_ip`` connections per address (counted apart from the client
listener's), and the usage page checks API keys under the same per-address auth limits, through
the client listener's own rate limiter.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from typing import Any

from kraken.admin.context import AdminContext
from kraken.admin.routes import build
from kraken.config import Config
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.listener import ProtocolSelector, listen_socket, serve_socket
from kraken.store.interface import Store
from kraken.store.open import open_store

log = logging.getLogger("kraken.admin")

_ADMIN_BACKLOG = 128
"""Operators and dashboards, not client bursts."""
ADMIN_POOL_SIZE = 2
"""PostgreSQL connections for admin work (SQLite: one connection of its own)."""


async def start_admin(cfg: Config, store: Store, connections: set, *, meter: Any = None,
                      keyring: Any = None, verifier: Any = None, limiter: Any = None,
                      billing: Any = None, stack: contextlib.AsyncExitStack | None = None,
                      ) -> asyncio.AbstractServer:
    """Listen on ``[admin] host:port``; connections join ``connections`` so shutdown drains them.

    No SO_REUSEPORT: with ``workers > 1`` only one process (worker 0) serves admin. Given
    ``stack``, admin work gets its own store connection (closed with the stack): a long usage
    query or export then never holds the lock the meter's batch writer needs (WAL lets
    readers and the writer proceed side by side).
    """
    server_cfg = dataclasses.replace(cfg.server, max_body_bytes=cfg.admin.max_body_bytes)
    per_ip = ConnectionLimiter(cfg.server.max_connections_per_ip)
    sock = listen_socket(cfg.admin.host, cfg.admin.port, backlog=_ADMIN_BACKLOG,
                         setting="admin.port")
    # Listening before the first await: once the client port answers /readyz, admin
    # connections are at least queued in the backlog, never refused.
    try:
        if stack is not None:
            store = await open_store(cfg.store, pool_size=ADMIN_POOL_SIZE)
            stack.push_async_callback(store.close)
        app = build(AdminContext(store, cfg, meter=meter, keyring=keyring, verifier=verifier,
                                 limiter=limiter, billing=billing))
        server = await serve_socket(
            lambda: ProtocolSelector(app.handle, server_cfg, connections, h2c=False,
                                     limiter=per_ip), sock, backlog=_ADMIN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    address = server.sockets[0].getsockname()
    log.info("admin API listening on http://%s:%d", address[0], address[1])
    if not ipaddress.ip_address(address[0]).is_loopback:
        log.warning("admin API on a non-loopback address without TLS: the admin token crosses "
                    "the network in clear text (put it behind a TLS proxy or a VPN)")
    return server
