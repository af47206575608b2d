"""What HTTP/2 inbound (``http/h2limits.py``) and outbound (``upstream/h2client.py``) agree
on: the GOAWAY handling h2 lacks, the memory a long-lived connection may keep (HPACK table,
closed streams), and which fields HTTP/2 forbids (RFC 9113 §8.2.2).

A leaf (imports nothing from kraken): ``http`` and ``upstream`` may not import each other.
"""
from __future__ import annotations

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.config import H2Configuration
from h2.events import ConnectionTerminated, Event
from hpack import Encoder
from hyperframe.frame import Frame, GoAwayFrame

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
"""HTTP/1.1 connection-management fields: malformed in an HTTP/2 message."""


def connection_specific(name: bytes, value: bytes) -> bool:
    """Whether the (lower-case) field ``name: value`` may not appear in HTTP/2: a
    connection-specific field, or ``te`` other than ``trailers``."""
    return name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers")


ENCODER_TABLE_BYTES = 4096
"""The HPACK table our encoder keeps for a connection's header blocks, whatever larger
SETTINGS_HEADER_TABLE_SIZE the peer allows (RFC 9113's default size)."""

_set_table_size = Encoder.header_table_size.fset  # type: ignore[attr-defined]


class CappedEncoder(Encoder):
    """h2's HPACK encoder, whose table never outgrows ``ENCODER_TABLE_BYTES``.

    h2 sizes it to the peer's SETTINGS_HEADER_TABLE_SIZE, up to 4 GiB, and unique fields
    (an answer's ``x-request-id``, a request's ids) are indexed: such a table keeps them all
    for as long as the connection lasts. The setting is only a ceiling (RFC 7541 §4.2): a
    smaller table is announced to the peer by the table size update hpack sends on any change."""

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        _set_table_size(self, min(value, ENCODER_TABLE_BYTES))


class GoawayTolerantH2Connection(H2Connection):
    """h2's connection, except that a GOAWAY lets the streams below its last id finish, and
    that a long-lived connection keeps bounded memory (``CappedEncoder``,
    ``MAX_CLOSED_STREAMS``): inbound and outbound connections both last for hours.

    h2 4.4 closes its state machine on GOAWAY and then rejects every further frame,
    including the DATA of streams the peer promised to complete (RFC 9113 §6.8). Opening
    no new streams afterwards is the owner's job. This overrides h2 below its public API:
    h2 stays pinned to 4.4.x.
    """

    MAX_CLOSED_STREAMS = 1024
    """Closed streams whose end h2 remembers (a frame still in flight on one is a stream
    error; on a stream forgotten, a connection error, as RFC 9113 §5.1 allows). h2's 65536
    cost ~8 MB a connection, kept for as long as it lasts. At most 100 streams are open at a
    time either way, so far fewer close while a frame is in flight."""

    def __init__(self, config: H2Configuration | None = None) -> None:
        super().__init__(config)
        self.encoder = CappedEncoder()

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
