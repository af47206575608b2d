"""What every inbound connection does the same way, HTTP/1.1 or HTTP/2: its bookkeeping,
its lingering close, the send stall, and the path from a handler's failure to an answer.

Closing is "lingering": after the last response the write side is shut (FIN) and whatever
the client still sends is read and dropped until it closes too, or ``LINGER_S`` passes.
Closing a socket with unread request bytes makes the kernel send RST, and the client then
often loses the response it was about to read (e.g. a 413 sent before the body).
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Awaitable, Callable, Protocol

from kraken import metrics
from kraken.config import ServerConfig
from kraken.errors import KrakenError
from kraken.http.answers import ErrorAnswers, plain_answers
from kraken.http.exchange import Request, ResponseSink
from kraken.http.starts import pacer_for
from kraken.logs import Throttle, client_tag
from kraken.timers import Deadline

log = logging.getLogger("kraken.http")

Handler = Callable[[Request, Any], Awaitable[None]]
"""The gateway's entry point: one call per request, with that request's sink."""

LINGER_S = 2.0
"""How long a closing connection keeps draining client bytes before it is closed."""
STALL_LINES = Throttle()
"""The send-stall lines (a connection, or an HTTP/2 stream, whose client reads nothing): one
client can hold hundreds of each at once, so they are throttled."""


class InboundConnection(asyncio.Protocol):
    """The part of ``H1Connection`` and ``H2Connection`` that does not depend on the protocol.

    A subclass defines ``_on_timeout`` (its one connection deadline fired) and ``abort``."""

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set | None,
                 on_lost: Callable[[], None] | None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 answers: ErrorAnswers = plain_answers):
        self._handler = handler
        self._answers = answers
        """How this listener's service says an error for a path (``kraken.http.answers``)."""
        self._cfg = cfg
        self._tracker = tracker
        """Every open connection of the listener (the app drains them at shutdown)."""
        self._on_lost = on_lost
        """Called once when the connection is gone (the listener's per-address count)."""
        # The listener passes its loop: asking asyncio costs a getpid syscall per connection.
        self.loop = loop if loop is not None else asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.disconnected = False
        self._reading_paused = False
        self._deadline = Deadline(self.loop, self._on_timeout)
        self._starts = pacer_for(self.loop)
        """Where a request's handler begins: in this turn of the loop or a later one."""
        self.stall_timeout: float = cfg.send_stall_timeout_s
        self._stall_deadline: Deadline | None = None
        """``_stall``, made the first time a connection's writing is paused (most never are)."""

    @property
    def _stall(self) -> Deadline:
        """Runs while the transport is paused: a client that reads nothing for this long is cut."""
        stall = self._stall_deadline
        if stall is None:
            stall = self._stall_deadline = Deadline(self.loop, self._on_stall)
            if self.disconnected:
                stall.close()  # a connection already gone arms nothing
        return stall

    def _pace(self, begin: Callable[..., None], *args: Any) -> None:
        """``begin(*args)`` (a request's handler) in this turn of the loop, or in a later one
        (kraken/http/starts.py: a burst's requests begin first come, first served)."""
        if self._starts.now():
            begin(*args)
        else:
            self._starts.later(partial(begin, *args))

    def _on_timeout(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    # ---- bookkeeping ---------------------------------------------------------------
    def _opened(self, transport: asyncio.BaseTransport) -> None:
        """``connection_made``'s common part: the peer, the write limit, the gauge, the tracker."""
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        transport.set_write_buffer_limits(high=self._cfg.write_buffer_high)  # type: ignore[attr-defined]
        metrics.ACTIVE_CONNECTIONS.inc()
        if self._tracker is not None:
            self._tracker.add(self)

    def _gone(self) -> None:
        """``connection_lost``'s common part. The timers drop their callbacks: a timer that
        was merely stopped would keep the connection in a reference cycle until a full gc
        run, and a flood of short connections piles up meanwhile."""
        self.disconnected = True
        self._deadline.close()
        if self._stall_deadline is not None:
            self._stall_deadline.close()
        metrics.ACTIVE_CONNECTIONS.dec()
        if self._tracker is not None:
            self._tracker.discard(self)
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost()

    def eof_received(self) -> bool | None:
        # A client that half-closes has given up on this connection; treat as gone.
        # While lingering, this is the client's close we were waiting for.
        return None

    # ---- closing -------------------------------------------------------------------
    def _linger(self) -> bool:
        """FIN, then read and drop the client's bytes for ``LINGER_S`` (module doc). False
        when there was nothing to linger on, or the transport cannot half-close (TLS): then
        it is closed outright."""
        transport = self.transport
        if transport is None or self.disconnected or transport.is_closing():
            return False
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        try:
            transport.write_eof()
        except (RuntimeError, OSError, NotImplementedError):  # e.g. a TLS transport
            transport.close()
            return False
        self._deadline.arm(LINGER_S)
        return True

    def _lingered(self) -> None:
        """The linger is over: close. ``close()`` still waits for the client to read what
        is buffered: not forever."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        if (self.stall_timeout > 0 and transport.get_write_buffer_size()
                and self._stall.timeout <= 0):
            self._stall.arm(self.stall_timeout)

    def _on_stall(self) -> None:
        """Writing stayed paused for ``send_stall_timeout_s``: the client reads nothing."""
        if self.disconnected:
            return
        if (held := STALL_LINES.due()) is not None:
            log.info("client %s read nothing for %.0f s: connection aborted (%d more stalls "
                     "since the last line)", client_tag(self.peer), self.stall_timeout, held)
        self.abort()  # connection_lost cancels the handlers, and with them the provider calls


class Exchange(ResponseSink, Protocol):
    """What the failure path needs of a request's sink (``H1Exchange``, ``H2Stream``)."""

    closed: bool
    """Nothing more may be sent (the response is over, or the connection gone)."""

    @property
    def unfinished(self) -> bool:
        """The handler has not ended the response, and it can still be answered."""


async def run_handler(handler: Handler, request: Request, sink: Exchange,
                      done: Callable[[], None] | None = None,
                      answers: ErrorAnswers = plain_answers) -> None:
    """Run ``handler`` for one request; whatever it leaves unanswered is answered here (in
    the wire format ``answers`` give the request's path). ``done`` is called last, however
    the handler ended (one coroutine frame per request less than a wrapper awaiting this
    one: it is held for as long as a stream lasts)."""
    try:
        await handler(request, sink)
        if sink.unfinished:
            # Returned without ending its response: don't leave the client waiting.
            log.error("request handler returned without ending its response")
            fail(sink, KrakenError("internal error"), answers, request.path)
    except asyncio.CancelledError:
        sink.abort()
        raise
    except KrakenError as exc:  # handler let a mapped error escape
        fail(sink, exc, answers, request.path)
    except Exception:
        log.exception("unhandled error in request handler")
        fail(sink, KrakenError("internal error"), answers, request.path)
    finally:
        if done is not None:
            done()


def fail(sink: Exchange, exc: KrakenError, answers: ErrorAnswers = plain_answers,
         path: str | None = None) -> None:
    """An error response if nothing was sent yet; a cut response (abort) otherwise."""
    if sink.closed:
        return
    if sink.started:
        sink.abort()
    else:
        sink.respond(*answers(exc, path))
