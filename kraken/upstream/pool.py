"""Per-origin pools of keep-alive connections to providers.

Bounded: at most ``max_connections`` per origin, waiters queue in FIFO order. Idle
connections are reused newest-first (the warmest TCP window) and reaped after
``idle_timeout_s``. The origin comes only from operator configuration.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
from urllib.parse import urlsplit

from kraken import metrics
from kraken.errors import UpstreamError, UpstreamTimeout
from kraken.upstream.connection import UpstreamConnection


class Origin:
    """scheme://host:port of a provider, parsed once from its configured base URL."""

    __slots__ = ("scheme", "host", "port", "base_path", "authority")

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http(s) URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"


def default_ssl_context() -> ssl.SSLContext:
    """Verify providers against the system CAs; HTTP/1.1 only for now."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class OriginPool:
    """Connections to one origin for one provider."""

    def __init__(
        self,
        origin: Origin,
        provider: str,
        *,
        max_connections: int = 100,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        idle_timeout_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.origin = origin
        self.provider = provider
        self._max = max(1, max_connections)
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        self._idle_timeout = idle_timeout_s
        self._ssl = ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and self._ssl is None:
            self._ssl = default_ssl_context()
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False
        self._idle_gauge = metrics.UPSTREAM_CONNECTIONS.labels(provider, "idle")
        self._busy_gauge = metrics.UPSTREAM_CONNECTIONS.labels(provider, "busy")

    async def acquire(self) -> UpstreamConnection:
        """An idle connection, a new one, or the next one released (bounded wait)."""
        while self._idle:
            conn = self._idle.pop()
            self._idle_gauge.dec()
            if conn.reusable:
                self._busy_gauge.inc()
                return conn
            self._forget(conn)
        if self._open >= self._max:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    conn = await fut
            except TimeoutError:
                raise UpstreamTimeout("no free connection to the provider") from None
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            if conn is not None:
                self._busy_gauge.inc()
                return conn
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        if self._closed:
            raise UpstreamError("gateway is shutting down")
        self._open += 1
        loop = asyncio.get_running_loop()
        o = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(o.authority, self._read_timeout),
                    o.host,
                    o.port,
                    ssl=self._ssl,
                    server_hostname=o.host if self._ssl else None,
                )
        except TimeoutError:
            self._lost_slot()
            raise UpstreamTimeout("provider connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._lost_slot()
            reason = "TLS handshake failed" if isinstance(exc, ssl.SSLError) else "connection refused"
            raise UpstreamError(f"provider unreachable: {reason}") from None
        except BaseException:
            self._lost_slot()
            raise
        conn.on_close = self._on_conn_close
        self._busy_gauge.inc()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return ``conn`` after its exchange; broken connections are dropped."""
        self._busy_gauge.dec()
        if not conn.reusable or self._closed:
            conn.close()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)  # acquire() counts it busy again
                return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)
        self._idle_gauge.inc()
        self._schedule_reaper()

    def _on_conn_close(self, conn: UpstreamConnection) -> None:
        self._forget(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        if getattr(conn, "_forgotten", False):
            return
        conn._forgotten = True  # type: ignore[attr-defined]
        if conn in self._idle:
            self._idle.remove(conn)
            self._idle_gauge.dec()
        self._lost_slot()

    def _lost_slot(self) -> None:
        self._open -= 1
        while self._waiters:  # a slot opened: let the oldest waiter connect afresh
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _schedule_reaper(self) -> None:
        if self._reaper is None and self._idle_timeout > 0:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self._idle_timeout / 2, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        now = asyncio.get_running_loop().time()
        for conn in [c for c in self._idle if now - c.idle_since >= self._idle_timeout]:
            conn.close()
            self._forget(conn)
        if self._idle:
            self._schedule_reaper()

    @property
    def size(self) -> int:
        return self._open

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for conn in list(self._idle):
            conn.close()
        for fut in self._waiters:
            if not fut.done():
                fut.cancel()
