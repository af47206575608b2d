"""Picks the protocol of each accepted connection: ALPN over TLS, the HTTP/2 client
preface on cleartext (prior knowledge, if enabled), HTTP/1.1 otherwise.

Over TLS the selector decides in ``connection_made``, once ALPN has, and hands the transport
to an ``H1Connection`` or ``H2Connection`` before anything is read. A cleartext listener needs
no selector (``cleartext_factory``): each connection is an ``H1Connection`` from the start,
which gives the transport and the bytes it read to an ``H2Connection`` (``to_h2``) if its first
bytes are the HTTP/2 preface and prior knowledge is enabled. Before anything else, whichever
protocol comes first applies the per-address connection cap (``admit`` with a
``ConnectionLimiter``): a connection over it is closed at once, after a minimal 503 unless ALPN
chose HTTP/2 (trusted proxies are never counted: see ``kraken.http.connlimit``). The count is
released by whichever protocol owns the transport when it ends (its ``on_lost``, passed on at
a hand-over).
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
from kraken.http.answers import ErrorAnswers, plain_answers
from kraken.http.connection import Handler
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.h1 import H1Connection
from kraken.logs import client_tag

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


class _Refused(asyncio.Protocol):
    """A refused connection's protocol until it closes: the client's bytes are dropped, and
    its close (or ``_REFUSED_LINGER_S``) ends the linger."""

    __slots__ = ("_timer",)

    def __init__(self, timer: asyncio.TimerHandle):
        self._timer = timer

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


def admit(limiter: ConnectionLimiter, transport: asyncio.BaseTransport,
          alpn_h2: bool = False) -> tuple[bool, Callable[[], None] | None]:
    """Count a new connection against its address: (admitted, what releases the count when it
    ends: None if uncounted). Called by each connection's first protocol (``ProtocolSelector``,
    or the ``H1Connection`` of a cleartext listener: ``cleartext_factory``). Over the cap the
    connection is answered here: a minimal 503, then FIN (closed at once if ALPN chose
    HTTP/2), and its transport goes to ``_Refused``."""
    peer = transport.get_extra_info("peername")
    key = limiter.key_of(peer[0] if isinstance(peer, tuple) else "")
    if limiter.acquire(key):
        return True, None if key is None else partial(limiter.release, key)
    _log_refusal(peer[0], limiter.max_per_ip)
    if alpn_h2:
        transport.close()
        return False, None
    transport.write(OVER_LIMIT)  # type: ignore[attr-defined]
    try:
        transport.write_eof()  # type: ignore[attr-defined]
    except (RuntimeError, OSError, NotImplementedError):  # e.g. a TLS transport
        transport.close()
        return False, None
    linger = asyncio.get_running_loop().call_later(_REFUSED_LINGER_S, transport.close)
    transport.set_protocol(_Refused(linger))
    return False, None


def _capped(limiter: ConnectionLimiter | None) -> ConnectionLimiter | None:
    """``limiter`` if it caps anything (``max_per_ip`` 0 caps nothing: no per-connection call)."""
    return limiter if limiter is not None and limiter.max_per_ip > 0 else None


def to_h2(handler: Handler, cfg: ServerConfig, tracker: set,
          always: list[tuple[bytes, bytes]] | None, transport: asyncio.Transport, seen: bytes,
          on_lost: Callable[[], None] | None, answers: ErrorAnswers = plain_answers) -> None:
    """Hand ``transport`` to a new ``H2Connection``, given the bytes already read."""
    # Imported at the first h2 connection (loaded at start-up with TLS: app.py).
    from kraken.http.h2 import H2Connection

    proto = H2Connection(handler, cfg, tracker, initial_data=seen, always_headers=always,
                         on_lost=on_lost, answers=answers)
    transport.set_protocol(proto)
    proto.connection_made(transport)


def cleartext_factory(handler: Handler, cfg: ServerConfig, tracker: set, *, h2c: bool = True,
                      limiter: ConnectionLimiter | None = None,
                      loop: asyncio.AbstractEventLoop | None = None,
                      answers: ErrorAnswers = plain_answers) -> Callable[[], H1Connection]:
    """A cleartext listener's protocol factory: each accepted connection is an ``H1Connection``
    from the start, which applies the per-address cap itself and hands over to HTTP/2 on the
    preface (prior knowledge, if ``h2c``). Without TLS there is nothing for a selector to
    wait on, and skipping it saves ~110 bytecodes and a protocol switch per connection.
    ``answers``: the wire format of the transport's refusals, by path (``http.answers``)."""
    on_preface = (partial(to_h2, handler, cfg, tracker, None, answers=answers) if h2c
                  else None)
    capped = _capped(limiter)
    return partial(H1Connection, handler, cfg, tracker, loop=loop, on_preface=on_preface,
                   admit=None if capped is None else partial(admit, capped), answers=answers)


class ProtocolSelector(asyncio.Protocol):
    """The protocol factory product of a TLS listener (and of any built with it): it picks the
    protocol in ``connection_made``, once ALPN has decided, and hands the transport over."""

    __slots__ = ("_handler", "_cfg", "_tracker", "_always", "_h2c", "_limiter", "_loop",
                 "_answers")

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set, *, h2c: bool = True,
                 always_headers: list[tuple[bytes, bytes]] | None = None,
                 limiter: ConnectionLimiter | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 answers: ErrorAnswers = plain_answers):
        self._handler = handler
        self._answers = answers
        """The wire format of the transport's refusals, by path (``kraken.http.answers``)."""
        self._cfg = cfg
        self._tracker = tracker
        self._always = always_headers
        self._h2c = h2c
        self._limiter = _capped(limiter)
        """Shared by every connection of the listener (one per listener, made by the app);
        None when it caps nothing."""
        self._loop = loop
        """The listener's loop (else asked for once per connection, and handed to its
        protocol: each asking costs a getpid syscall)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        ssl_object = transport.get_extra_info("ssl_object")
        alpn_h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        on_lost = None
        if self._limiter is not None:
            admitted, on_lost = admit(self._limiter, transport, alpn_h2)
            if not admitted:
                return
        if ssl_object is not None:  # the handshake is done: ALPN has decided
            self._switch(transport, alpn_h2, on_lost)
        else:  # HTTP/1.1, which hands over to HTTP/2 if its first bytes are the preface (h2c)
            self._switch(transport, False, on_lost, maybe_h2=self._h2c)

    def _switch(self, transport: asyncio.BaseTransport, is_h2: bool,
                on_lost: Callable[[], None] | None, maybe_h2: bool = False) -> None:
        """Hand the transport to its protocol (before it has read anything), with what
        releases its count. ``maybe_h2``: HTTP/1.1 until its first bytes prove to be the
        HTTP/2 preface (``to_h2``). Deciding in HTTP/1.1 costs no timer and no copy of the
        first read of its own: the head timeout covers a silent client (it is then closed
        unanswered, as before any protocol)."""
        if is_h2:
            self._to_h2(transport, b"", on_lost)  # type: ignore[arg-type]
            return
        proto = H1Connection(self._handler, self._cfg, self._tracker, always_headers=self._always,
                             on_lost=on_lost, loop=self._loop,
                             on_preface=self._to_h2 if maybe_h2 else None, answers=self._answers)
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def _to_h2(self, transport: asyncio.Transport, seen: bytes,
               on_lost: Callable[[], None] | None) -> None:
        to_h2(self._handler, self._cfg, self._tracker, self._always, transport, seen, on_lost,
              self._answers)


def _log_refusal(peer: str, cap: int) -> None:
    """A warning at most every ``_LOG_EVERY_S``: a flood must not become a log flood."""
    global _last_log
    now = time.monotonic()
    if now - _last_log >= _LOG_EVERY_S:
        _last_log = now
        log.warning("connection from %s refused: it already holds %d (max_connections_per_ip)",
                    client_tag(peer), cap)
