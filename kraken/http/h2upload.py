"""An HTTP/2 upload streamed to its handler (``kraken.http.bodystream``), with no I/O.

Flow control is the backpressure: DATA is acknowledged (window handed back) only as the
handler reads it, so a provider slower than the client slows the client and at most the
stream's window (``H2Limits.initial_window_size``) waits here. Padding is acknowledged at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from h2.events import DataReceived
from h2.exceptions import ProtocolError

from kraken.http.bodystream import BodyStream, streams_body

if TYPE_CHECKING:
    from kraken.http.h2stream import H2Stream

__all__ = ["acknowledge", "declared_length", "ended", "feed", "is_upload", "start", "timed_out"]


def is_upload(stream: H2Stream) -> bool:
    """A POST whose body is still to come and is a ``multipart/form-data`` upload."""
    ctype = next((value for key, value in stream.headers if key == b"content-type"), None)
    return streams_body(stream.method, ctype)


def start(stream: H2Stream, h2: object, flush: Callable[[], None],
          dispatch: Callable[[H2Stream], None]) -> None:
    """If ``stream`` is an upload: give it a body stream whose read bytes are handed back as
    window on ``h2`` (then ``flush``), and ``dispatch`` it now (the handler applies its own
    limit)."""
    if not is_upload(stream):
        return
    length = declared_length(stream.headers) or None
    sid = stream.stream_id

    def consumed(size: int) -> None:
        if acknowledge(h2, size, sid):
            flush()

    stream.upload = BodyStream(_nothing, _nothing, consumed, declared=length)
    dispatch(stream)


def feed(stream: H2Stream, event: DataReceived, h2: object) -> None:
    """DATA of an upload: to its body stream (the window goes back when the handler reads)."""
    if stream.deadline is not None:
        stream.deadline.touch()
    if stream.pace is not None:
        stream.pace.add(len(event.data))
    padding = (event.flow_controlled_length or 0) - len(event.data)
    if padding > 0:
        acknowledge(h2, padding, event.stream_id)
    stream.upload.feed(event.data)  # type: ignore[union-attr]


def _nothing() -> None:
    """Pause/resume of an HTTP/2 upload: the window handed back on read does it."""


def ended(stream: H2Stream) -> None:
    """END_STREAM: the upload is complete."""
    stream.stop_receiving()
    stream.upload.finish()  # type: ignore[union-attr]


def timed_out(stream: H2Stream) -> bool:
    """The body timer fired: an upload fails (its handler answers); False for other streams."""
    if stream.upload is None:
        return False
    stream.stop_receiving()
    stream.upload.fail(TimeoutError("request body too slow"))
    return True


def acknowledge(h2: object, size: int, stream_id: int) -> bool:
    """Hand ``size`` bytes of window back on ``stream_id``; False if the stream is gone."""
    try:
        h2.acknowledge_received_data(size, stream_id)  # type: ignore[attr-defined]
    except ProtocolError:
        return False
    return True


def declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0  # h2 already refused a bad value
    return 0
