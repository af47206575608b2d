"""Picks the protocol of each accepted connection: ALPN over TLS, the HTTP/2 client
preface on cleartext (prior knowledge, if enabled), HTTP/1.1 otherwise.

The selector decides in ``connection_made`` and hands the transport to an ``H1Connection``
or ``H2Connection`` before anything is read. On cleartext with prior knowledge that is the
``H1Connection``, which gives the transport and the bytes it read to an ``H2Connection``
(``ProtocolSelector._to_h2``) if its first bytes are the HTTP/2 preface. Before that, the
selector applies the per-address connection cap (``ConnectionLimiter``): a connection over
it is closed at once, after a minimal 503 unless ALPN chose HTTP/2 (trusted proxies are never
counted: see ``kraken.http.connlimit``). The count is released by whichever protocol owns
the transport when it ends (its ``on_lost``, passed on at a hand-over).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from functools import partial
from typing import Any, Callable

from kraken.config import ServerConfig
from kraken.errors import KrakenError, TooManyConnections, error_body
from kraken.http.connection import Handler
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.h1 import H1Connection

log = logging.getLogger("kraken.http")


class ListenError(KrakenError):
    """A listening socket could not be opened (address in use, no permission, unknown host):
    Kraken stops with this one line instead of a traceback."""

    code = "cannot_listen"


BACKLOG = 2048
"""Connections the kernel holds for the client listener before Kraken accepts them: a burst of
a thousand clients (or a load balancer reconnecting) must queue, not lose its SYNs and wait
1-7 s for retransmits. Capped by the kernel's net.core.somaxconn."""


def listen_socket(host: str, port: int, *, reuse_port: bool = False, backlog: int = BACKLOG,
                  setting: str = "") -> socket.socket:
    """A bound, listening, non-blocking TCP socket, or ``ListenError`` saying why not (and
    which ``setting`` chose the address). Serve it with ``serve_socket``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # workers only: a second single-process Kraken must still fail to bind
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(f"cannot listen on {where}: {reason[:1].lower()}{reason[1:]}"
                          + (f" ({setting})" if setting else "")) from None
    sock.setblocking(False)
    return sock


async def serve_socket(factory: Callable[[], asyncio.BaseProtocol], sock: socket.socket, *,
                       backlog: int = BACKLOG, **kwargs: Any) -> asyncio.AbstractServer:
    """``loop.create_server`` on a socket from ``listen_socket``. It calls ``listen`` again
    with its own ``backlog`` (default 100, which dropped the SYNs of a burst): give it the
    socket's."""
    return await asyncio.get_running_loop().create_server(factory, sock=sock, backlog=backlog,
                                                          **kwargs)


def _over_limit_response() -> bytes:
    body = error_body(TooManyConnections("too many connections from this address"))
    return (b"HTTP/1.1 503 Service Unavailable\r\nserver: kraken\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"retry-after: 1\r\nconnection: close\r\n\r\n%s" % (len(body), body))


OVER_LIMIT = _over_limit_response()
"""Written to an HTTP/1.1 (or not yet known) client refused by the per-address cap."""
_REFUSED_LINGER_S = 0.5
"""A refused client's request bytes are read and dropped this long after the 503 and FIN:
closing with unread bytes would send RST, and the client would likely lose the 503."""
_LOG_EVERY_S = 10.0
_last_log = 0.0


class ProtocolSelector(asyncio.Protocol):
    """The listener's protocol factory product: it picks the protocol in ``connection_made``
    and stays the transport's protocol only for a connection it refuses."""

    __slots__ = ("_handler", "_cfg", "_tracker", "_always", "_h2c", "_transport",
                 "_timer", "_limiter", "_key", "_counted", "_loop")

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set, *, h2c: bool = True,
                 always_headers: list[tuple[bytes, bytes]] | None = None,
                 limiter: ConnectionLimiter | None = None,
                 loop: asyncio.AbstractEventLoop | None = None):
        self._handler = handler
        self._cfg = cfg
        self._tracker = tracker
        self._always = always_headers
        self._h2c = h2c
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._limiter = limiter
        """Shared by every connection of the listener (one per listener, made by the app)."""
        self._key: bytes | None = None
        self._counted = False
        """This connection holds a count in ``_limiter`` that the selector must release."""
        self._loop = loop
        """The listener's loop (else asked for once per connection, and handed to its
        protocol: each asking costs a getpid syscall)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        ssl_object = transport.get_extra_info("ssl_object")
        alpn_h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        limiter = self._limiter
        if limiter is not None and limiter.max_per_ip > 0 and not self._admit(transport, alpn_h2):
            return
        if ssl_object is not None:  # the handshake is done: ALPN has decided
            self._switch(alpn_h2)
        else:  # HTTP/1.1, which hands over to HTTP/2 if its first bytes are the preface (h2c)
            self._switch(False, maybe_h2=self._h2c)

    def data_received(self, data: bytes) -> None:
        pass  # only while refused (else the protocol chosen owns the transport): dropped

    def eof_received(self) -> bool | None:
        return None  # close; while refused, the client's close ends the linger early

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._release()

    def _admit(self, transport: asyncio.BaseTransport, alpn_h2: bool) -> bool:
        """Count this connection against its address; refuse it over the cap."""
        assert self._limiter is not None
        peer = transport.get_extra_info("peername")
        key = self._limiter.key_of(peer[0] if isinstance(peer, tuple) else "")
        if self._limiter.acquire(key):
            self._key, self._counted = key, key is not None
            return True
        _log_refusal(peer[0], self._limiter.max_per_ip)
        if alpn_h2:
            transport.close()
            return False
        transport.write(OVER_LIMIT)  # type: ignore[attr-defined]
        try:
            transport.write_eof()  # type: ignore[attr-defined]
        except (RuntimeError, OSError, NotImplementedError):  # e.g. a TLS transport
            transport.close()
            return False
        self._timer = self._loop.call_later(_REFUSED_LINGER_S, transport.close)  # type: ignore[union-attr]
        return False

    def _release(self) -> None:
        if self._counted and self._limiter is not None:
            self._counted = False
            self._limiter.release(self._key)

    def _switch(self, is_h2: bool, maybe_h2: bool = False) -> None:
        """Hand the transport to its protocol (before it has read anything). ``maybe_h2``:
        HTTP/1.1 until its first bytes prove to be the HTTP/2 preface (``_to_h2``). Deciding
        in HTTP/1.1 costs no timer and no copy of the first read of its own: the head
        timeout covers a silent client (it is then closed unanswered, as before any protocol)."""
        transport = self._transport
        assert transport is not None
        on_lost = None
        if self._counted and self._limiter is not None:  # the new owner releases the count
            self._counted = False
            on_lost = partial(self._limiter.release, self._key)
        if is_h2:
            self._to_h2(transport, b"", on_lost)
            return
        proto = H1Connection(self._handler, self._cfg, self._tracker, always_headers=self._always,
                             on_lost=on_lost, loop=self._loop,
                             on_preface=self._to_h2 if maybe_h2 else None)
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def _to_h2(self, transport: asyncio.Transport, seen: bytes,
               on_lost: Callable[[], None] | None) -> None:
        """The transport's HTTP/2 connection, given the bytes already read."""
        # Imported at the first h2 connection (loaded at start-up with TLS: app.py).
        from kraken.http.h2 import H2Connection

        proto = H2Connection(self._handler, self._cfg, self._tracker, initial_data=seen,
                             always_headers=self._always, on_lost=on_lost)
        transport.set_protocol(proto)
        proto.connection_made(transport)


def _log_refusal(peer: str, cap: int) -> None:
    """A warning at most every ``_LOG_EVERY_S``: a flood must not become a log flood."""
    global _last_log
    now = time.monotonic()
    if now - _last_log >= _LOG_EVERY_S:
        _last_log = now
        log.warning("connection from %s refused: it already holds %d (max_connections_per_ip)",
                    peer, cap)
