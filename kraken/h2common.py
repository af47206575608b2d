"""What HTTP/2 inbound (``http/h2limits.py``) and outbound (``upstream/h2client.py``) agree
on: the GOAWAY handling h2 lacks, and which fields HTTP/2 forbids (RFC 9113 §8.2.2).

A leaf (imports nothing from kraken): ``http`` and ``upstream`` may not import each other.
"""
from __future__ import annotations

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, Event
from hyperframe.frame import Frame, GoAwayFrame

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
"""HTTP/1.1 connection-management fields: malformed in an HTTP/2 message."""


def connection_specific(name: bytes, value: bytes) -> bool:
    """Whether the (lower-case) field ``name: value`` may not appear in HTTP/2: a
    connection-specific field, or ``te`` other than ``trailers``."""
    return name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers")


class GoawayTolerantH2Connection(H2Connection):
    """h2's connection, except that a GOAWAY lets the streams below its last id finish.

    h2 4.4 closes its state machine on GOAWAY and then rejects every further frame,
    including the DATA of streams the peer promised to complete (RFC 9113 §6.8). Opening
    no new streams afterwards is the owner's job. This overrides h2 below its public API:
    h2 stays pinned to 4.4.x.
    """

    def release(self) -> None:
        """The socket is gone: drop h2's table of our own bound methods, the one reference
        cycle in this object, so it is freed at once instead of at the next full gc run.
        Nothing may be received afterwards; what is queued can still be read."""
        self._frame_dispatch_table = {}

    def _receive_goaway_frame(  # type: ignore[override]
            self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        event = ConnectionTerminated()
        event.error_code = error_code(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def error_code(code: int) -> ErrorCodes | int:
    """h2's enum for a known error code; unknown codes stay ints (RFC 9113 §7)."""
    try:
        return ErrorCodes(code)
    except ValueError:
        return code
