"""Per-origin pools of connections to providers: HTTP/2 where the origin offers it.

TLS origins are offered ALPN ``h2`` then ``http/1.1``; the pool remembers what the origin
chose last (``protocol``). An HTTP/2 origin gets one connection carrying many concurrent
streams (another only once the provider's MAX_CONCURRENT_STREAMS, or ``h2client.MAX_STREAMS``,
is reached), and ``acquire`` returns an ``H2Exchange`` bound to one stream. HTTP/1.1 (and
every cleartext ``http://`` origin: no h2c upstream) keeps one exchange per connection.
Either way the caller gets the same interface and gives it back with ``release``.

Bounded: at most ``max_connections`` per origin, waiters queue in FIFO order for at most
``pool_wait_s``, then get ``PoolExhausted`` (503, Retry-After): a full pool is Kraken's own
bound, not a provider failure, so it must not look like one (a 504 after a long silent wait
fed the circuit breaker, and one client's idle streams opened the circuit for everyone).
``claim(owner)`` bounds what one owner (an API key) holds of the pool to ``per_key_share`` of
its capacity, so a key cannot starve the others (off by default: a share of 1). While the
protocol is unknown or h2, concurrent acquirers share the one connect in flight instead of
racing to open rivals. Idle HTTP/1.1 connections are reused newest-first (the warmest TCP
window); idle connections of both kinds are reaped after ``idle_timeout_s``. The origin comes
only from operator configuration.
"""
from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kraken import metrics
from kraken.errors import PoolExhausted, PoolShareExceeded, UpstreamError, UpstreamTimeout
from kraken.upstream.connection import UpstreamConnection
from kraken.upstream.resolver import HostAddresses

if TYPE_CHECKING:  # imported by a pool for an https origin only (h2 is ~1.7 MB of RSS)
    from kraken.upstream.h2client import H2Exchange, H2UpstreamConnection

    Upstream = UpstreamConnection | H2Exchange
    """What ``acquire`` returns: ``send``, ``pause_reading``/``resume_reading``, ``abort``,
    ``used``, ``received_any``."""

H1, H2 = "http/1.1", "h2"


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
    """Verify providers against the system CAs; offer HTTP/2, fall back to HTTP/1.1."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols([H2, H1])
    return ctx


class _Negotiate(asyncio.Protocol):
    """Builds the connection for the protocol the origin chose and hands it the transport.

    ``connection_made`` of a TLS transport runs once the handshake is done, so ALPN is
    known before the first byte of application data arrives."""

    def __init__(self, authority: str, read_timeout_s: float, loop: asyncio.AbstractEventLoop):
        self._authority = authority
        self._read_timeout = read_timeout_s
        self._loop = loop
        self.conn: UpstreamConnection | H2UpstreamConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        conn: UpstreamConnection | H2UpstreamConnection
        if alpn == H2:
            from kraken.upstream.h2client import H2UpstreamConnection

            conn = H2UpstreamConnection(self._authority, self._read_timeout)
        else:
            conn = UpstreamConnection(self._authority, self._read_timeout, self._loop)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        self.conn = conn


class _Claim:
    """One owner's exchange counted against its share; ``with`` releases it exactly once."""

    __slots__ = ("_held", "_owner")

    def __init__(self, held: dict[str, int] | None, owner: str | None):
        self._held = held
        self._owner = owner

    def __enter__(self) -> _Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            left = held[self._owner] - 1  # type: ignore[index]
            if left:
                held[self._owner] = left  # type: ignore[index]
            else:
                del held[self._owner]  # type: ignore[arg-type]


_UNCLAIMED = _Claim(None, None)


class _ConnectTimer:
    """``asyncio.timeout`` for one dial, without its async context manager: 1.0 us a dial
    against 3.8 (a burst dials once per request). The dial's task is cancelled when the
    connect timeout passes; ``stop`` says whether the cancellation the dial ended with is
    that one (then a timeout), as ``Timeout.__aexit__`` decides it: by the task's count of
    cancellation requests, so a cancellation from elsewhere stays a cancellation."""

    __slots__ = ("_task", "_cancelling", "_expired", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float):
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def stop(self) -> bool:
        """Disarm; True when the timer fired and its cancellation is the one to turn into a
        timeout (the task's request is withdrawn, as ``Timeout`` withdraws it)."""
        self._handle.cancel()
        return self._expired and self._task.uncancel() <= self._cancelling


class OriginPool:
    """Connections to one origin for one provider."""

    def __init__(
        self,
        origin: Origin,
        provider: str,
        *,
        max_connections: int = 1024,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        idle_timeout_s: float = 60.0,
        pool_wait_s: float = 1.0,
        per_key_share: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.origin = origin
        self.provider = provider
        self._host = HostAddresses(origin.host, origin.port, provider)
        """The addresses dials go to: looked up once per TTL, not by every dial."""
        self._max = max(1, max_connections)
        self._pool_wait = pool_wait_s
        self._share = per_key_share
        self._held: dict[str, int] = {}
        """Owner -> exchanges in flight or waiting (only owners holding some: bounded)."""
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        self._idle_timeout = idle_timeout_s
        self._ssl = ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and self._ssl is None:
            self._ssl = default_ssl_context()
        if self._ssl is not None:  # ALPN may pick h2: loaded now, not on a first connect
            from kraken.upstream import h2client  # noqa: F401
        self.protocol: str | None = None if self._ssl is not None else H1
        """What the origin chose on its latest connection (h2, http/1.1; None before the first)."""
        self._idle: dict[UpstreamConnection, None] = {}
        """Idle HTTP/1.1 connections in the order they went idle (a dict: a burst's
        thousand closing connections are each forgotten in O(1), not by a list scan)."""
        self._h2: list[H2UpstreamConnection] = []
        self._open = 0
        """Connections open or being opened, of both protocols (bounded by ``_max``)."""
        self._connecting: asyncio.Future[UpstreamError | None] | None = None
        """The connect in flight that concurrent acquirers share while h2 is possible."""
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False
        self._on_close = self._on_conn_close
        """Bound once: every connection's ``on_close`` (not a bound method per connection)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop of the connections this pool dialled (set by the first dial), for whoever
        waits on an exchange: asyncio.get_running_loop() is a getpid syscall on 3.11."""
        self._idle_gauge = metrics.UPSTREAM_CONNECTIONS.labels(provider, "idle")
        self._busy_gauge = metrics.UPSTREAM_CONNECTIONS.labels(provider, "busy")

    def claim(self, owner: str | None) -> _Claim:
        """Count one exchange of ``owner`` (an API key id) for as long as the ``with`` block
        runs; ``PoolShareExceeded`` at once when the owner already holds its share:
        ``max(1, per_key_share * capacity)``, capacity being ``max_connections`` (times the
        streams each carries on an HTTP/2 origin). ``owner`` None or a share of 1: unbounded."""
        if owner is None or self._share >= 1:
            return _UNCLAIMED
        capacity = self._max
        if self.protocol == H2:
            from kraken.upstream.h2client import MAX_STREAMS

            capacity *= MAX_STREAMS
        cap = max(1, int(capacity * self._share))
        held = self._held.get(owner, 0)
        if held >= cap:
            raise PoolShareExceeded(
                f"This key already has {held} requests in flight to this provider, its share "
                f"of the {capacity} the provider is given; retry when one finishes", limit=cap)
        self._held[owner] = held + 1
        return _Claim(self._held, owner)

    async def acquire(self, refused: Upstream | None = None) -> Upstream:
        """A stream on a shared HTTP/2 connection, an idle HTTP/1.1 connection, a new
        connection, or the next one released within ``pool_wait_s`` (else ``PoolExhausted``).
        ``refused``: the exchange a retry replaces, turned away unprocessed (REFUSED_STREAM, or
        above a GOAWAY's last id): on HTTP/2 the retry avoids its connection, which may refuse
        again, unless the pool may open no other. (HTTP/1.1: that connection is closed.)"""
        shunned = getattr(refused, "connection", None)  # an H2Exchange's connection
        deadline: float | None = None
        while True:
            if self._h2:
                exchange = self._open_stream(shunned)
                if exchange is not None:
                    return exchange
            if self._connecting is not None:
                await self._join_connect()
                continue
            while self._idle:
                conn, _ = self._idle.popitem()  # the latest to go idle: the warmest
                self._idle_gauge.dec()
                if conn.reusable:
                    self._busy_gauge.inc()
                    return conn
                self._forget(conn)
            if self._open < self._max:
                new = await self._connect()
                if isinstance(new, UpstreamConnection):
                    self._busy_gauge.inc()
                    return new
                continue  # an HTTP/2 connection: take a stream on it
            if shunned is not None:  # at the bound: the refusing connection, not a 503
                shunned = None
                continue
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self._pool_wait
            conn = await self._wait(deadline)
            if conn is not None:
                self._busy_gauge.inc()
                return conn

    async def _wait(self, deadline: float) -> UpstreamConnection | None:
        """Queue for a released HTTP/1.1 connection (or None: a slot or stream freed up)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                return await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():  # handed over as the deadline hit
                return fut.result()
            busy = "Every connection to this provider is busy; retry shortly"
            raise PoolExhausted(busy) from None
        except asyncio.CancelledError:  # the client went away as it was woken: pass it on
            if fut.done() and not fut.cancelled():
                conn = fut.result()
                if conn is None:  # a slot or a stream freed up: the next waiter's
                    self._wake_one()
                else:
                    self._give_back(conn)
            raise
        finally:
            if not fut.done():
                fut.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    async def _join_connect(self) -> None:
        """Wait for the connect another acquirer started; fail with it if it failed."""
        fut = self._connecting
        assert fut is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                failure = await asyncio.shield(fut)
        except TimeoutError:
            raise UpstreamTimeout("provider connect timed out") from None
        if failure is not None:
            raise type(failure)(failure.message)

    def _open_stream(self, shunned: H2UpstreamConnection | None = None) -> H2Exchange | None:
        for conn in self._h2:  # oldest first: streams concentrate on one connection
            if conn.can_open and conn is not shunned:
                if conn.active == 0:
                    self._idle_gauge.dec()
                    self._busy_gauge.inc()
                return conn.reserve()
        return None

    async def _connect(self) -> UpstreamConnection | H2UpstreamConnection:
        if self._closed:
            raise UpstreamError("gateway is shutting down")
        self._open += 1
        shared = self.protocol != H1
        if shared:
            self._connecting = asyncio.get_running_loop().create_future()
        failure: UpstreamError | None = None
        try:
            conn = await self._dial()
        except UpstreamError as exc:
            failure = exc
            self._lost_slot()
            raise
        except BaseException:
            self._lost_slot()
            raise
        finally:
            if shared:
                fut, self._connecting = self._connecting, None
                if fut is not None and not fut.done():
                    fut.set_result(failure)
        conn.on_close = self._on_close
        if conn.closed or self._closed:  # gone (or shut down) before we could use it
            conn.close()
            self._forget(conn)
            raise UpstreamError("gateway is shutting down" if self._closed
                                else "provider closed the connection")
        if not isinstance(conn, UpstreamConnection):  # an H2UpstreamConnection
            self.protocol = H2
            conn.idle_since = asyncio.get_running_loop().time()
            self._h2.append(conn)
            self._idle_gauge.inc()
            self._schedule_reaper()
        elif self._ssl is not None:
            self.protocol = H1
        return conn

    async def _dial(self) -> UpstreamConnection | H2UpstreamConnection:
        """A connection to the first of the host's addresses that accepts one (they take
        turns being first); when none does, they are looked up again at the next dial."""
        loop = self.loop
        if loop is None or loop.is_closed():  # asked once, not per dial (a getpid syscall)
            loop = self.loop = asyncio.get_running_loop()
        o, host = self.origin, self._host
        # partial, not a lambda: no closure cells over o and self for the dial's frame
        factory = partial(_Negotiate if self._ssl is not None else UpstreamConnection,
                          o.authority, self._read_timeout, loop)
        timer = _ConnectTimer(loop, self._connect_timeout)
        try:
            try:  # one frame for the lookup and the tries: a coroutine more cost 2 us a dial
                addresses = host.current(loop) or await host.resolve(loop)
                for address in addresses:
                    try:
                        _, proto = await loop.create_connection(
                            factory, address, o.port, ssl=self._ssl,
                            server_hostname=o.host if self._ssl else None)
                        break
                    except ssl.SSLError:
                        raise  # the address answered: another shows the same certificate
                    except OSError:
                        if address is addresses[-1]:
                            host.forget()
                            raise
            finally:
                expired = timer.stop()
        except asyncio.CancelledError:
            if expired:
                raise UpstreamTimeout("provider connect timed out") from None
            raise
        except TimeoutError:  # the kernel's own (ETIMEDOUT), as asyncio.timeout's was
            raise UpstreamTimeout("provider connect timed out") from None
        except socket.gaierror:
            raise UpstreamError("provider unreachable: its host name did not resolve") from None
        except (OSError, ssl.SSLError) as exc:
            tls = isinstance(exc, ssl.SSLError)
            reason = "TLS handshake failed" if tls else "connection refused"
            raise UpstreamError(f"provider unreachable: {reason}") from None
        conn = proto.conn if isinstance(proto, _Negotiate) else proto
        if conn is None:
            raise UpstreamError("provider unreachable: TLS handshake failed")
        return conn

    def release(self, conn: Upstream) -> None:
        """Return ``conn`` after its exchange: a stream's slot frees up (an unfinished
        stream is cancelled); a broken HTTP/1.1 connection is dropped."""
        if not isinstance(conn, UpstreamConnection):  # an H2Exchange
            self._release_stream(conn)
            return
        self._busy_gauge.dec()
        self._give_back(conn)

    def _give_back(self, conn: UpstreamConnection) -> None:
        """To the oldest waiter, else idle; closed if it cannot serve another exchange."""
        if not conn.reusable or self._closed:
            conn.close()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)  # acquire() counts it busy again
                return
        # conn.idle_since is the connection's own: stamped when its response ended (or it
        # opened), without asyncio.get_running_loop() (a getpid syscall per call on 3.11).
        self._idle[conn] = None
        self._idle_gauge.inc()
        self._schedule_reaper()

    def _release_stream(self, exchange: H2Exchange) -> None:
        conn = exchange.connection
        conn.release(exchange)  # closes a draining connection once its last stream is done
        if conn.active == 0 and conn in self._h2:
            self._busy_gauge.dec()
            self._idle_gauge.inc()
            if self._closed:
                conn.close()
            else:
                self._schedule_reaper()
        if conn.can_open:
            self._wake_one()

    def _on_conn_close(self, conn: UpstreamConnection | H2UpstreamConnection) -> None:
        self._forget(conn)

    def _forget(self, conn: UpstreamConnection | H2UpstreamConnection) -> None:
        if getattr(conn, "_forgotten", False):
            return
        conn._forgotten = True  # type: ignore[union-attr]
        if conn in self._idle:
            del self._idle[conn]  # type: ignore[arg-type]
            self._idle_gauge.dec()
        elif conn in self._h2:
            self._h2.remove(conn)  # type: ignore[arg-type]
            busy = conn.active  # type: ignore[union-attr]
            (self._busy_gauge if busy else self._idle_gauge).dec()
        self._lost_slot()

    def _lost_slot(self) -> None:
        self._open -= 1
        self._wake_one()  # a slot opened: let the oldest waiter connect afresh

    def _wake_one(self) -> None:
        while self._waiters:
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
        for h2conn in [c for c in self._h2
                       if c.active == 0 and now - c.idle_since >= self._idle_timeout]:
            h2conn.close()
            self._forget(h2conn)
        if self._idle or any(c.active == 0 for c in self._h2):
            self._schedule_reaper()

    @property
    def size(self) -> int:
        return self._open

    async def close(self) -> None:
        """Close idle connections; HTTP/2 connections in use close after their last stream."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for conn in list(self._idle):
            conn.close()
        for h2conn in list(self._h2):
            if h2conn.active == 0:
                h2conn.close()
            else:
                h2conn.draining = True
        for fut in self._waiters:
            if not fut.done():
                fut.cancel()
