"""What an inbound HTTP/2 connection refuses, and with which frame.

``GuardedH2Connection`` is h2's server-side connection plus the checks h2 leaves out or
answers with another error than RFC 9113 asks for, and the abuse counters. It stays
sans-I/O like h2 (bytes in, events out, frames queued for ``data_to_send``); ``http/h2.py``
owns the socket. Every connection error leaves ``receive_data`` as an h2 ``ProtocolError``
whose ``error_code`` is the GOAWAY code h2 has already queued.

This subclasses h2 4.4 below its public API (``_receive_frame``, ``_prepare_for_sending``,
the frame dispatch table, ``FrameBuffer`` internals, the window attributes ``send_chunk``
books): h2 must stay pinned to 4.4.x, and the conformance tests are the guard on upgrade.

What the client does → what h2 alone would answer → what is answered here:

- malformed request (uppercase or invalid field name, connection-specific field, ``te``
  other than ``trailers``, pseudo-header missing / duplicated / unknown / after a field,
  content-length unlike the DATA, pseudo-header in trailers) → GOAWAY PROTOCOL_ERROR →
  RST_STREAM PROTOCOL_ERROR, the connection lives on (RFC 9113 §8.1.1; the field rules
  are in ``h2fields``)
- HEADERS beyond SETTINGS_MAX_CONCURRENT_STREAMS → GOAWAY PROTOCOL_ERROR →
  RST_STREAM REFUSED_STREAM (§5.1.2)
- undecodable HPACK block → GOAWAY PROTOCOL_ERROR → GOAWAY COMPRESSION_ERROR (§4.3)
- header list over ``HARD_HEADER_FACTOR`` x the advertised size → GOAWAY ENHANCE_YOUR_CALM
  (same); below that but over it, ``h2.py`` answers the stream 431
- SETTINGS ACK with a payload → PROTOCOL_ERROR → FRAME_SIZE_ERROR (§6.5)
- first frame after the preface not SETTINGS → accepted → GOAWAY PROTOCOL_ERROR (§3.4)
- RST_STREAM on an idle stream → ignored → GOAWAY PROTOCOL_ERROR (§6.4)
- WINDOW_UPDATE of 0 on a stream → GOAWAY PROTOCOL_ERROR → RST_STREAM PROTOCOL_ERROR (§6.9);
  its reserved bit set → GOAWAY PROTOCOL_ERROR → bit ignored (§6.9)
- DATA still in flight on a stream we reset → RST_STREAM STREAM_CLOSED → ignored, the
  connection window credited (§5.1)
- a frame on a stream closed over 1024 closures ago → remembered up to 65536 (~8 MB) →
  forgotten: a connection error (``MAX_CLOSED_STREAMS``, in ``kraken.h2common``)
- SETTINGS_HEADER_TABLE_SIZE over 4 KiB → our HPACK table grows to it → kept at 4 KiB
  (``CappedEncoder``, in ``kraken.h2common``: the outbound client keeps the same bounds)
- GOAWAY from the client → nothing more may be sent → the streams in flight finish (§6.8;
  ``kraken.h2common``, shared with the outbound client)
- more than ``max_continuation_frames`` CONTINUATIONs, or a header block over the hard cap
  → PROTOCOL_ERROR after 64 frames → GOAWAY ENHANCE_YOUR_CALM
- rapid reset (CVE-2023-44487): RST_STREAM on open streams past ``client_resets``;
  "MadeYouReset" (CVE-2025-8671): stream errors the client provoked past ``server_resets``;
  PING / SETTINGS / PRIORITY / empty DATA / zero WINDOW_UPDATE / unknown-frame floods past
  their rate → nothing → GOAWAY ENHANCE_YOUR_CALM
"""
from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass
from typing import Callable

from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.events import Event, RequestReceived, StreamReset, TrailersReceived
from h2.exceptions import (DenialOfServiceError, FrameDataMissingError, InvalidBodyLengthError,
                           ProtocolError, StreamClosedError)
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import H2Stream, StreamClosedBy, StreamState
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.frame import (AltSvcFrame, ContinuationFrame, DataFrame, ExtensionFrame, Frame,
                              GoAwayFrame, HeadersFrame, PingFrame, PriorityFrame,
                              PushPromiseFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

from kraken.h2common import GoawayTolerantH2Connection
from kraken.http.h2fields import request_problem, trailers_problem

Rate = tuple[int, float]
"""(events, seconds): more than ``events`` within any ``seconds`` is abuse; 0 events disables."""


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection HTTP/2 limits. Defaults suit API clients that keep one connection
    open for hours and cancel generations now and then."""

    max_concurrent_streams: int = 100
    """Advertised as SETTINGS_MAX_CONCURRENT_STREAMS; a stream beyond it is REFUSED_STREAM."""
    initial_window_size: int = 256 * 1024
    """Receive window per stream (request bodies); data is acknowledged as it arrives."""
    connection_window_size: int = 1024 * 1024
    """Receive window of the connection, opened with a WINDOW_UPDATE after SETTINGS."""
    stream_buffer_bytes: int = 64 * 1024
    """Response bytes one stream may queue beyond the client's window before its producer
    (the provider read) is paused; it resumes when WINDOW_UPDATEs drain half of it."""
    max_continuation_frames: int = 16
    """CONTINUATION frames in one header block. Clients only need them for blocks larger
    than a frame (16 KiB), so a handful is generous; floods of empty ones are an attack."""
    client_resets: Rate = (200, 30.0)
    """RST_STREAM from the client on streams still open (rapid reset, CVE-2023-44487)."""
    server_resets: Rate = (200, 30.0)
    """Stream errors the client provoked (MadeYouReset, CVE-2025-8671)."""
    pings: Rate = (100, 10.0)
    settings: Rate = (50, 10.0)
    priority: Rate = (1000, 10.0)
    empty_data: Rate = (100, 10.0)
    """DATA frames with no data and no END_STREAM (padding alone counts as empty)."""
    zero_window_updates: Rate = (100, 10.0)
    unknown_frames: Rate = (1000, 10.0)
    """Extension and ALTSVC frames, which a server ignores."""


_DATA_HEAD = struct.Struct(">HBBBL")
"""A DATA frame header: 24-bit length (as 16 + 8 bits), type 0, flags, stream id."""
_SENDABLE = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)

HARD_HEADER_FACTOR = 4
"""A header block (encoded, or decoded as RFC 9113 counts it) this many times the
advertised SETTINGS_MAX_HEADER_LIST_SIZE is not decoded at all: GOAWAY instead of 431."""


class Calm(DenialOfServiceError):
    """An abuse limit was crossed: GOAWAY ENHANCE_YOUR_CALM, then close."""

    def __init__(self, kind: str):
        super().__init__(f"{kind} limit exceeded")
        self.kind = kind


class CompressionError(ProtocolError):
    """The header block could not be decoded: the HPACK context is lost (RFC 9113 §4.3)."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class StreamRejected(Event):
    """A malformed request: RST_STREAM PROTOCOL_ERROR was queued; the request is dropped."""

    def __init__(self, stream_id: int, reason: str):
        self.stream_id = stream_id
        self.reason = reason

    def __repr__(self) -> str:
        return f"<StreamRejected stream_id:{self.stream_id} reason:{self.reason}>"


class StreamRefused(Event):
    """RST_STREAM REFUSED_STREAM was queued: too many streams, or the connection is going
    away. The client may retry the request elsewhere; it was never processed."""

    def __init__(self, stream_id: int):
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"<StreamRefused stream_id:{self.stream_id}>"


class SlidingWindow:
    """Counts events in the last ``span`` seconds; ``hit`` says whether ``limit`` is exceeded.

    Keeps at most ``limit + 1`` timestamps, so the memory is bounded whatever the client does."""

    __slots__ = ("limit", "span", "_hits")

    def __init__(self, rate: Rate):
        self.limit, self.span = rate
        self._hits: collections.deque[float] = collections.deque(maxlen=max(self.limit, 0) + 1)

    def hit(self, now: float) -> bool:
        if self.limit <= 0:
            return False
        hits = self._hits
        while hits and now - hits[0] >= self.span:
            hits.popleft()
        hits.append(now)
        return len(hits) > self.limit


# ---- frames ------------------------------------------------------------------------------
class ZeroWindowUpdateFrame(WindowUpdateFrame):
    """A WINDOW_UPDATE with increment 0 on a stream: a stream error, not (as hyperframe would
    have it) an unparseable frame."""


class GuardedFrameBuffer(FrameBuffer):
    """h2's frame splitter, with a cap on header blocks and the frame checks hyperframe
    answers with the wrong error."""

    def __init__(self, max_continuations: int, max_block_bytes: int):
        super().__init__(server=True)
        self._max_continuations = max_continuations
        self._max_block_bytes = max_block_bytes
        self._block_bytes = 0

    def __next__(self) -> Frame:
        data = self._data
        if len(data) >= 9:
            length = int.from_bytes(data[0:3], "big")
            ftype = data[3]
            if ftype == 0x4 and data[4] & 0x1 and length:
                raise FrameDataMissingError("SETTINGS ACK with a payload")
            if ftype == 0x8 and length == 4:
                if len(data) < 13:
                    raise StopIteration
                return self._window_update(data)
        return super().__next__()

    def _window_update(self, data: bytearray) -> Frame:
        stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        increment = int.from_bytes(data[9:13], "big") & 0x7FFFFFFF  # reserved bit ignored
        del data[:13]
        if increment == 0:
            if stream_id == 0:
                raise ProtocolError("WINDOW_UPDATE of 0 on the connection")
            frame: WindowUpdateFrame = ZeroWindowUpdateFrame(stream_id)
        else:
            frame = WindowUpdateFrame(stream_id, window_increment=increment)
        frame.body_len = 4
        self._update_header_buffer(frame)  # raises inside a header block
        return frame

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        if self._headers_buffer:
            if isinstance(f, ContinuationFrame):
                if len(self._headers_buffer) > self._max_continuations:
                    raise Calm("continuation_frames")
                self._block_bytes += len(f.data)
                if self._block_bytes > self._max_block_bytes:
                    raise Calm("header_block_size")
        elif isinstance(f, (HeadersFrame, PushPromiseFrame)):
            self._block_bytes = len(f.data)
        return super()._update_header_buffer(f)


class GuardedH2Connection(GoawayTolerantH2Connection):
    """h2's server connection with Kraken's checks (module table). No I/O."""

    def __init__(self, max_header_list_size: int, limits: H2Limits,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(H2Configuration(
            client_side=False, header_encoding=None,
            validate_inbound_headers=False,  # validated here, as stream errors
            validate_outbound_headers=False,  # our own headers; normalising still lowercases
        ))
        self.limits = limits
        self._clock = clock
        self.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
        })
        hard = max_header_list_size * HARD_HEADER_FACTOR
        self.decoder.max_header_list_size = hard
        self.incoming_buffer = GuardedFrameBuffer(limits.max_continuation_frames, hard)
        self._frame_dispatch_table[ZeroWindowUpdateFrame] = self._receive_zero_window_update
        self._floods: dict[type, tuple[SlidingWindow, str]] = {
            PingFrame: (SlidingWindow(limits.pings), "ping"),
            SettingsFrame: (SlidingWindow(limits.settings), "settings"),
            PriorityFrame: (SlidingWindow(limits.priority), "priority"),
            DataFrame: (SlidingWindow(limits.empty_data), "empty_data"),
            ZeroWindowUpdateFrame: (SlidingWindow(limits.zero_window_updates), "zero_window"),
            ExtensionFrame: (SlidingWindow(limits.unknown_frames), "unknown_frame"),
        }
        self._floods[AltSvcFrame] = self._floods[ExtensionFrame]
        self._client_resets = SlidingWindow(limits.client_resets)
        self._server_resets = SlidingWindow(limits.server_resets)
        self._preface_seen = False
        self._receiving = False
        self.going_away = False
        """A graceful GOAWAY was sent: streams above its last id are refused."""

    @property
    def preface_received(self) -> bool:
        """The client preface (magic and SETTINGS) has arrived."""
        return self._preface_seen

    def open_connection(self) -> None:
        """Queue our SETTINGS and widen the connection's receive window."""
        self.initiate_connection()
        extra = self.limits.connection_window_size - self.inbound_flow_control_window
        if extra > 0:
            self.increment_flow_control_window(extra)

    def goaway(self) -> None:
        """Graceful GOAWAY (NO_ERROR, last stream = highest processed). Unlike h2's
        ``close_connection`` the connection stays usable for the streams in flight."""
        if self.going_away:
            return
        self.going_away = True
        self._prepare_for_sending([GoAwayFrame(
            0, last_stream_id=self.highest_inbound_stream_id, error_code=ErrorCodes.NO_ERROR)])

    def receive_data(self, data: bytes) -> list[Event]:  # type: ignore[override]
        try:
            return super().receive_data(data)
        except ProtocolError as exc:
            if self.state_machine.state is not ConnectionState.CLOSED:
                # h2 checks the preface outside its error handling: no GOAWAY was queued
                self._terminate_connection(exc.error_code)
            raise

    def send_chunk(self, stream_id: int, data: bytes) -> bool:
        """Queue ``data`` as one DATA frame without END_STREAM, if both flow-control windows
        and the frame size allow (False otherwise: nothing queued).

        The per-chunk path of every response. ``send_data`` costs ~13 µs a chunk here (two
        state machines, a frame object, logging calls); this does the same bookkeeping
        (h2 4.x's window attributes) for ~2 µs. END_STREAM still goes through h2."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.state_machine.state not in _SENDABLE:
            raise StreamClosedError(stream_id)
        size = len(data)
        if (size > self.outbound_flow_control_window or size > self.max_outbound_frame_size
                or size > stream.outbound_flow_control_window):
            return False
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        out = self._data_to_send
        out += _DATA_HEAD.pack(size >> 8, size & 0xFF, 0, 0, stream_id)
        out += data
        return True

    # ---- every frame -------------------------------------------------------------------
    def _receive_frame(self, frame: Frame) -> list[Event]:
        cls = frame.__class__
        if not self._preface_seen:
            if cls is not SettingsFrame or "ACK" in frame.flags:
                raise ProtocolError("the client preface must end with a SETTINGS frame")
            self._preface_seen = True
        flood = self._floods.get(cls)
        if flood is not None and _is_overhead(frame) and flood[0].hit(self._clock()):
            raise Calm(flood[1])
        if cls is RstStreamFrame:
            self._count_client_reset(frame.stream_id)
        self._receiving = True
        try:
            return super()._receive_frame(frame)
        finally:
            self._receiving = False

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        if self._receiving:
            for f in frames:
                if f.__class__ is RstStreamFrame and f.error_code != ErrorCodes.REFUSED_STREAM:
                    self._count_server_reset()
        super()._prepare_for_sending(frames)

    def _count_client_reset(self, stream_id: int) -> None:
        if stream_id % 2 == 0 or stream_id > self.highest_inbound_stream_id:
            raise ProtocolError("RST_STREAM on an idle stream")
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.closed and self._client_resets.hit(self._clock()):
            raise Calm("rapid_reset")

    def _count_server_reset(self) -> None:
        if self._server_resets.hit(self._clock()):
            raise Calm("provoked_reset")

    # ---- frames handled differently from h2 ---------------------------------------------
    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        stream_id = frame.stream_id
        headers = self._decode(frame.data)  # always: the HPACK context must stay in sync
        if (stream_id not in self.streams and stream_id % 2 == 1
                and stream_id > self.highest_inbound_stream_id):
            if self.going_away:
                return self._refuse(stream_id)
            if self.open_inbound_streams >= self.local_settings.max_concurrent_streams:
                self._count_server_reset()  # a client that ignores our SETTINGS
                return self._refuse(stream_id)
        events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        stream = self._get_or_create_stream(stream_id, AllowedStreamIDs.ODD)
        end_stream = "END_STREAM" in frame.flags
        try:
            frames, stream_events = stream.receive_headers(headers, end_stream, None)
        except StreamClosedError:
            raise
        except ProtocolError as exc:  # bad content-length, trailers without END_STREAM
            return self._reject(stream, str(exc))
        if "PRIORITY" in frame.flags:
            _, p_events = self._receive_priority_frame(frame)
            stream_events[0].priority_updated = p_events[0]  # type: ignore[union-attr]
            stream_events.extend(p_events)
        first = stream_events[0]
        if isinstance(first, RequestReceived):
            problem = request_problem(first.headers, end_stream)  # type: ignore[arg-type]
        elif isinstance(first, TrailersReceived):
            problem = trailers_problem(first.headers)  # type: ignore[arg-type]
        else:
            problem = "unexpected header block"
        if problem:
            return self._reject(stream, problem)
        return frames, events + stream_events

    def _receive_data_frame(self, frame: DataFrame) -> tuple[list[Frame], list[Event]]:
        stream_id = frame.stream_id
        stream = self.streams.get(stream_id)
        if ((stream is None or stream.closed)
                and self._stream_closed_by(stream_id) is StreamClosedBy.SEND_RST_STREAM):
            events = self.state_machine.process_input(ConnectionInputs.RECV_DATA)
            self._inbound_flow_control_window_manager.window_consumed(frame.flow_controlled_length)
            return self._credit(frame.flow_controlled_length), events
        try:
            return super()._receive_data_frame(frame)
        except InvalidBodyLengthError as exc:
            assert stream is not None
            frames, events = self._reject(stream, str(exc))
            return self._credit(frame.flow_controlled_length) + frames, events

    def _receive_zero_window_update(
            self, frame: WindowUpdateFrame) -> tuple[list[Frame], list[Event]]:
        events = self.state_machine.process_input(ConnectionInputs.RECV_WINDOW_UPDATE)
        stream_id = frame.stream_id
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id % 2 == 0 or stream_id > self.highest_inbound_stream_id:
                raise ProtocolError("WINDOW_UPDATE on an idle stream")
            return [], events
        if stream.closed:
            return [], events
        return stream.reset_stream(ErrorCodes.PROTOCOL_ERROR), events + [StreamReset(
            stream_id=stream_id, error_code=ErrorCodes.PROTOCOL_ERROR, remote_reset=False)]

    # ---- helpers -----------------------------------------------------------------------
    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self.decoder.decode(block, raw=True)  # type: ignore[return-value]
        except OversizedHeaderListError:
            raise Calm("header_list_size") from None
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            # The type only: hpack's message quotes the rest of the block (``data!r``), the
            # request's other fields and its key among them, and this error is logged.
            raise CompressionError(f"undecodable header block ({type(exc).__name__})") from None

    def _refuse(self, stream_id: int) -> tuple[list[Frame], list[Event]]:
        self.highest_inbound_stream_id = stream_id
        self._closed_streams[stream_id] = StreamClosedBy.SEND_RST_STREAM
        return [RstStreamFrame(stream_id, error_code=ErrorCodes.REFUSED_STREAM)], [
            StreamRefused(stream_id)]

    def _reject(self, stream: H2Stream, reason: str) -> tuple[list[Frame], list[Event]]:
        return stream.reset_stream(ErrorCodes.PROTOCOL_ERROR), [
            StreamRejected(stream.stream_id, reason)]

    def _credit(self, size: int) -> list[Frame]:
        increment = self._inbound_flow_control_window_manager.process_bytes(size)
        return [WindowUpdateFrame(0, window_increment=increment)] if increment else []


def _is_overhead(frame: Frame) -> bool:
    """Whether ``frame`` is one that costs us work without moving any request forward."""
    if "ACK" in frame.flags:  # PING and SETTINGS acknowledgements answer our own frames
        return False
    if frame.__class__ is DataFrame:
        return not frame.data and "END_STREAM" not in frame.flags  # type: ignore[attr-defined]
    return True
