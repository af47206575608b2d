"""Picks the protocol of each accepted connection: ALPN over TLS, the HTTP/2 client
preface on cleartext (prior knowledge, if enabled), HTTP/1.1 otherwise.

The selector lives only until it has decided; then the transport is handed to an
``H1Connection`` or ``H2Connection`` with the bytes it already read.
"""
from __future__ import annotations

import asyncio

from kraken.config import ServerConfig
from kraken.http.h1 import H1Connection, Handler
from kraken.http.h2 import H2Connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ProtocolSelector(asyncio.Protocol):
    """The listener's protocol factory product; replaced as soon as the protocol is known."""

    __slots__ = ("_handler", "_cfg", "_tracker", "_always", "_h2c", "_buf", "_transport", "_timer")

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set, *, h2c: bool = True,
                 always_headers: list[tuple[bytes, bytes]] | None = None):
        self._handler = handler
        self._cfg = cfg
        self._tracker = tracker
        self._always = always_headers or []
        self._h2c = h2c
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:  # the handshake is done: ALPN has decided
            self._switch(ssl_object.selected_alpn_protocol() == "h2")
        elif not self._h2c:
            self._switch(False)
        else:  # a silent client must not hold the socket forever
            self._timer = asyncio.get_running_loop().call_later(
                self._cfg.head_timeout_s, transport.close)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) < len(PREFACE) and PREFACE.startswith(self._buf):
            return  # could still be the preface
        self._switch(self._buf.startswith(PREFACE))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _switch(self, is_h2: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        transport = self._transport
        assert transport is not None
        seen, self._buf = self._buf, b""
        proto: asyncio.Protocol
        if is_h2:
            proto = H2Connection(self._handler, self._cfg, self._tracker, initial_data=seen,
                                 always_headers=self._always)
        else:
            proto = H1Connection(self._handler, self._cfg, self._tracker,
                                 always_headers=self._always)
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if seen and not is_h2:
            proto.data_received(seen)
