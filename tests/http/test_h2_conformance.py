"""HTTP/2 conformance in the spirit of h2spec (not installable here, DECISIONS.md): raw frames
over a real loopback socket to a real ``H2Connection``, each case asserting the exact frame
and error code RFC 9113 (or Kraken's abuse policy) requires. Frames are built by hand, so the
client can say what h2 itself would refuse to send."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import hpack
import pytest
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from kraken.config import ServerConfig
from kraken.http.exchange import Request
from kraken.http.h2 import H2Connection
from kraken.http.h2limits import H2Limits
from harness import wait_for

pytestmark = pytest.mark.anyio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIO = 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB
MAX_WINDOW = 2**31 - 1

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"kraken")]


def get(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"kraken")]


def post(path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"kraken"), *extra]


def raw(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame exactly as given: nothing is validated."""
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags])
            + stream_id.to_bytes(4, "big") + payload)


def literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal without indexing, new name: sent as is (hpack's encoder would too, but
    this keeps the malformed field visible in the test)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def window_update(stream_id: int, increment: int) -> bytes:
    return raw(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst(stream_id: int, code: int = CANCEL) -> bytes:
    return raw(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def settings(*pairs: tuple[int, int], flags: int = 0) -> bytes:
    return raw(SETTINGS, flags, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


# ---- server ---------------------------------------------------------------------------
@dataclass
class Server:
    port: int = 0
    calls: list[Request] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Why the uploads ``/read`` read broke."""
    conns: set = field(default_factory=set)


@contextlib.asynccontextmanager
async def serve(limits: H2Limits | None = None, **cfg) -> AsyncIterator[Server]:
    """A real H2Connection listener; the handler's routes are what the cases need."""
    server = Server()

    async def app(req: Request, sink) -> None:
        server.calls.append(req)
        path = req.path
        if path == "/hang":  # until the stream or connection goes away
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                server.cancelled.append(req.target)
                raise
        elif path == "/unread":  # an upload answered unread (as a bad key's 401 is)
            upload = req.body_stream
            await wait_for(lambda: upload.received >= upload.declared)
        elif path == "/read":  # an upload read until it breaks; no answer (as /hang)
            try:
                while await req.body_stream.read():
                    pass
            except (OSError, TimeoutError) as exc:
                server.failed.append(type(exc).__name__)
            await asyncio.sleep(30)
        elif path == "/big":  # n bytes, streamed in 4 KiB writes
            n = int(req.target.split("n=")[1])
            sink.start(200, [(b"content-type", b"application/octet-stream")], None)
            for i in range(0, n, 4096):
                sink.write(_pattern(i, min(4096, n - i)))
            sink.end()
            return
        body = req.body if path == "/echo" else b"ok"
        unique = [(b"x-request-id", b"%d" % len(server.calls))] if path == "/unique" else []
        sink.start(200, [(b"content-type", b"text/plain"), *unique], len(body))
        sink.write(body)
        sink.end()

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: H2Connection(app, ServerConfig(**cfg), server.conns, limits=limits),
        "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for conn in list(server.conns):
            conn.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)


def _pattern(offset: int, size: int) -> bytes:
    return bytes((offset + i) % 251 for i in range(size))


# ---- client ---------------------------------------------------------------------------
class Client:
    """Writes raw bytes, reads and parses whole frames (HPACK-decoding HEADERS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}

    def send(self, *chunks: bytes) -> None:
        self.writer.write(b"".join(chunks))

    def headers(self, stream_id: int, headers: list[tuple[bytes, bytes]] = GET, *,
                end_stream: bool = True, end_headers: bool = True) -> bytes:
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return raw(HEADERS, flags, stream_id, self.encoder.encode(headers))

    def block(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return self.encoder.encode(headers)

    async def frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None once the server closed the connection."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(9)
                frame, length = Frame.parse_frame_header(memoryview(head))
                body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        frame.parse_body(memoryview(body))
        if isinstance(frame, HeadersFrame):
            frame.decoded = self.decoder.decode(frame.data, raw=True)  # type: ignore[attr-defined]
        return frame

    async def handshake(self, *pairs: tuple[int, int]) -> None:
        self.send(PREFACE, settings(*pairs))
        first = await self.frame()
        assert isinstance(first, SettingsFrame) and "ACK" not in first.flags, first
        self.server_settings = dict(first.settings)
        self.send(settings(flags=ACK))

    async def expect(self, match: Callable[[Frame], bool], what: str,
                     timeout: float = 5.0) -> Frame:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(100_000):
            frame = await self.frame(max(deadline - loop.time(), 0.01))
            if frame is None:
                pytest.fail(f"connection closed before {what}")
            if match(frame):
                return frame
        pytest.fail(f"no {what}")

    async def expect_goaway(self, code: int, timeout: float = 5.0) -> GoAwayFrame:
        """GOAWAY with ``code``, then the server closes the connection."""
        frame = await self.expect(lambda f: isinstance(f, GoAwayFrame), "GOAWAY", timeout)
        assert frame.error_code == code, (frame.error_code, frame.additional_data)
        await self.expect_closed()
        return frame  # type: ignore[return-value]

    async def expect_rst(self, stream_id: int, code: int) -> None:
        frame = await self.expect(
            lambda f: isinstance(f, (RstStreamFrame, GoAwayFrame)) and
            (f.stream_id == stream_id or isinstance(f, GoAwayFrame)), f"RST_STREAM {stream_id}")
        assert isinstance(frame, RstStreamFrame), frame
        assert frame.error_code == code, frame.error_code

    async def expect_closed(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(100_000):
            if await self.frame(max(deadline - loop.time(), 0.01)) is None:
                return
            if loop.time() > deadline:
                break
        pytest.fail("connection not closed")

    async def response(self, stream_id: int, timeout: float = 5.0) -> tuple[int, bytes]:
        """(status, body) of one stream; other streams' frames are skipped."""
        status, body = 0, bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(100_000):
            frame = await self.frame(max(deadline - loop.time(), 0.01))
            assert frame is not None, "connection closed before the response ended"
            if isinstance(frame, GoAwayFrame) or (
                    isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id):
                pytest.fail(f"{frame!r} instead of a response")
            if frame.stream_id != stream_id:
                continue
            if isinstance(frame, HeadersFrame):
                status = int(dict(frame.decoded)[b":status"])  # type: ignore[attr-defined]
            elif isinstance(frame, DataFrame):
                body += frame.data
            if "END_STREAM" in frame.flags:
                return status, bytes(body)
        pytest.fail("no end of response")

    async def assert_usable(self, stream_id: int) -> None:
        """A stream error left the connection working: a next request is answered."""
        self.send(self.headers(stream_id, GET))
        assert await self.response(stream_id) == (200, b"ok")


@contextlib.asynccontextmanager
async def client(server: Server, handshake: bool = True) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    c = Client(reader, writer)
    try:
        if handshake:
            await c.handshake()
        yield c
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.fixture
async def server():
    async with serve(max_body_bytes=1000) as s:
        yield s


@pytest.fixture
async def c(server):
    async with client(server) as cl:
        yield cl


# ---- 3.4 connection preface -------------------------------------------------------------
async def test_server_preface_is_settings_with_our_limits(server):
    async with client(server) as cl:
        assert cl.server_settings[0x3] == 100  # MAX_CONCURRENT_STREAMS
        assert cl.server_settings[0x6] == 16 * 1024  # MAX_HEADER_LIST_SIZE = max_head_bytes
        assert cl.server_settings.get(0x2, 0) == 0  # a server never enables push


async def test_invalid_preface_is_a_protocol_error(server):
    async with client(server, handshake=False) as cl:
        cl.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", settings())
        await cl.expect_goaway(PROTOCOL_ERROR)


async def test_http1_request_to_h2_listener_is_refused(server):
    async with client(server, handshake=False) as cl:
        cl.send(b"GET / HTTP/1.1\r\nHost: kraken\r\n\r\n")
        await cl.expect_goaway(PROTOCOL_ERROR)


async def test_preface_not_followed_by_settings_is_a_protocol_error(server):
    async with client(server, handshake=False) as cl:
        cl.send(PREFACE, raw(PING, 0, 0, b"12345678"))
        await cl.expect_goaway(PROTOCOL_ERROR)


async def test_settings_are_acknowledged(server):
    async with client(server) as cl:
        cl.send(settings((0x4, 100_000)))
        await cl.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "SETTINGS ACK")


# ---- 4 frames ---------------------------------------------------------------------------
async def test_data_over_max_frame_size_is_frame_size_error(c):
    c.send(c.headers(1, post(b"/echo"), end_stream=False), raw(DATA, 0, 1, b"x" * 16385))
    await c.expect_goaway(FRAME_SIZE_ERROR)


async def test_headers_over_max_frame_size_is_frame_size_error(c):
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 1, c.block(GET) + b"\x00" * 16384))
    await c.expect_goaway(FRAME_SIZE_ERROR)


async def test_ping_of_wrong_length_is_frame_size_error(c):
    c.send(raw(PING, 0, 0, b"1234567"))
    await c.expect_goaway(FRAME_SIZE_ERROR)


async def test_unknown_frame_type_is_ignored(c):
    c.send(raw(0xFA, 0xFF, 0, b"whatever"), raw(PING, 0, 0, b"afterwrd"))
    ack = await c.expect(lambda f: isinstance(f, PingFrame), "PING ACK")
    assert "ACK" in ack.flags and ack.opaque_data == b"afterwrd"


async def test_unknown_flags_and_reserved_bit_are_ignored(c):
    c.send(raw(PING, 0xFE, 0, b"flagged!"),
           raw(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x80000000 | 1000)))
    ack = await c.expect(lambda f: isinstance(f, PingFrame), "PING ACK")
    assert ack.opaque_data == b"flagged!"
    await c.assert_usable(1)


# ---- 4.3 header compression ---------------------------------------------------------------
async def test_invalid_hpack_index_is_compression_error(c):
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\x7f"))  # index 254: not in any table
    await c.expect_goaway(COMPRESSION_ERROR)


async def test_frame_inside_header_block_is_protocol_error(c):
    block = c.block(GET)
    c.send(raw(HEADERS, END_STREAM, 1, block[:3]), raw(PING, 0, 0, b"inbetwen"),
           raw(CONTINUATION, END_HEADERS, 1, block[3:]))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_continuation_on_other_stream_is_protocol_error(c):
    block = c.block(GET)
    c.send(raw(HEADERS, END_STREAM, 1, block[:3]), raw(CONTINUATION, END_HEADERS, 3, block[3:]))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_header_block_split_over_continuations_is_served(c):
    block = c.block(GET + [(b"x-pad", b"p" * 100)])
    parts = [block[i:i + 20] for i in range(0, len(block), 20)]
    frames = [raw(HEADERS, END_STREAM, 1, parts[0])]
    frames += [raw(CONTINUATION, 0, 1, p) for p in parts[1:-1]]
    frames.append(raw(CONTINUATION, END_HEADERS, 1, parts[-1]))
    c.send(*frames)
    assert await c.response(1) == (200, b"ok")


# ---- 5.1 stream states ------------------------------------------------------------------
async def test_data_on_idle_stream_is_protocol_error(c):
    c.send(raw(DATA, 0, 1, b"hello"))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_rst_stream_on_idle_stream_is_protocol_error(c):
    c.send(rst(1))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_window_update_on_idle_stream_is_protocol_error(c):
    c.send(window_update(1, 100))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_continuation_on_idle_stream_is_protocol_error(c):
    c.send(raw(CONTINUATION, END_HEADERS, 1, c.block(GET)))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_data_on_half_closed_remote_stream_is_stream_closed(c, server):
    c.send(c.headers(1, get(b"/hang")), raw(DATA, 0, 1, b"late"))
    await c.expect_rst(1, STREAM_CLOSED)
    await c.assert_usable(3)


async def test_headers_on_half_closed_remote_stream_is_stream_closed(c):
    c.send(c.headers(1, get(b"/hang")))
    c.send(c.headers(1, [(b"x-trailer", b"1")]))
    await c.expect_rst(1, STREAM_CLOSED)


async def test_headers_on_closed_stream_is_stream_closed(c):
    c.send(c.headers(1))
    assert await c.response(1) == (200, b"ok")
    c.send(c.headers(1))
    await c.expect_goaway(STREAM_CLOSED)


async def test_data_on_closed_stream_is_stream_closed(c):
    c.send(c.headers(1))
    assert await c.response(1) == (200, b"ok")
    c.send(raw(DATA, END_STREAM, 1, b"late"))
    frame = await c.expect(lambda f: isinstance(f, (RstStreamFrame, GoAwayFrame)), "error")
    assert frame.error_code == STREAM_CLOSED


async def test_even_stream_id_from_client_is_protocol_error(c):
    c.send(c.headers(2))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_decreasing_stream_id_is_protocol_error(c):
    c.send(c.headers(5))
    assert await c.response(5) == (200, b"ok")
    c.send(c.headers(3))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_push_promise_from_client_is_protocol_error(c):
    c.send(c.headers(1, get(b"/hang")),
           raw(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block(GET)))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_stream_depending_on_itself_is_protocol_error(c):
    c.send(raw(PRIORITY, 0, 1, struct.pack(">IB", 1, 15)))
    frame = await c.expect(lambda f: isinstance(f, (RstStreamFrame, GoAwayFrame)), "error")
    assert frame.error_code == PROTOCOL_ERROR


async def test_goaway_on_a_stream_is_protocol_error(c):
    c.send(raw(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_data_on_stream_zero_is_protocol_error(c):
    c.send(raw(DATA, 0, 0, b"x"))
    await c.expect_goaway(PROTOCOL_ERROR)


# ---- 6.5 SETTINGS -----------------------------------------------------------------------
@pytest.mark.parametrize("frame, code", [
    pytest.param(settings((0x2, 2)), PROTOCOL_ERROR, id="enable-push-2"),
    pytest.param(settings((0x4, 2**31)), FLOW_CONTROL_ERROR, id="initial-window-2^31"),
    pytest.param(settings((0x5, 16383)), PROTOCOL_ERROR, id="max-frame-size-too-small"),
    pytest.param(settings((0x5, 2**24)), PROTOCOL_ERROR, id="max-frame-size-too-large"),
    pytest.param(raw(SETTINGS, ACK, 0, b"\x00\x04\x00\x00\x10\x00"), FRAME_SIZE_ERROR,
                 id="ack-with-payload"),
    pytest.param(raw(SETTINGS, 0, 0, b"\x00\x04\x00"), FRAME_SIZE_ERROR, id="length-not-6n"),
    pytest.param(raw(SETTINGS, 0, 1, b""), PROTOCOL_ERROR, id="on-a-stream"),
])
async def test_invalid_settings(c, frame: bytes, code: int):
    c.send(frame)
    await c.expect_goaway(code)


async def test_unknown_setting_is_ignored(c):
    c.send(settings((0xFF, 12345)))
    await c.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "SETTINGS ACK")
    await c.assert_usable(1)


# ---- 6.7 PING ---------------------------------------------------------------------------
async def test_ping_is_echoed_with_ack(c):
    c.send(raw(PING, 0, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    ack = await c.expect(lambda f: isinstance(f, PingFrame), "PING ACK")
    assert "ACK" in ack.flags and ack.opaque_data == b"\x01\x02\x03\x04\x05\x06\x07\x08"


async def test_ping_ack_is_not_answered(c):
    c.send(raw(PING, ACK, 0, b"unsolict"), raw(PING, 0, 0, b"realping"))
    ack = await c.expect(lambda f: isinstance(f, PingFrame), "PING ACK")
    assert ack.opaque_data == b"realping"


async def test_ping_on_a_stream_is_protocol_error(c):
    c.send(raw(PING, 0, 1, b"12345678"))
    await c.expect_goaway(PROTOCOL_ERROR)


# ---- 6.9 flow control -------------------------------------------------------------------
async def test_connection_window_overflow_is_flow_control_error(c):
    c.send(window_update(0, MAX_WINDOW))
    await c.expect_goaway(FLOW_CONTROL_ERROR)


async def test_stream_window_overflow_is_a_stream_flow_control_error(c, server):
    c.send(c.headers(1, get(b"/hang")), window_update(1, MAX_WINDOW))
    await c.expect_rst(1, FLOW_CONTROL_ERROR)
    await c.assert_usable(3)


async def test_settings_initial_window_overflow_is_flow_control_error(c):
    c.send(c.headers(1, get(b"/hang")), window_update(1, MAX_WINDOW - 65535))
    c.send(settings((0x4, 65536)))
    await c.expect_goaway(FLOW_CONTROL_ERROR)


async def test_zero_window_update_on_connection_is_protocol_error(c):
    c.send(window_update(0, 0))
    await c.expect_goaway(PROTOCOL_ERROR)


async def test_zero_window_update_on_stream_is_stream_protocol_error(c, server):
    c.send(c.headers(1, get(b"/hang")), window_update(1, 0))
    await c.expect_rst(1, PROTOCOL_ERROR)
    await c.assert_usable(3)


async def test_window_update_of_wrong_length_is_frame_size_error(c):
    c.send(raw(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    await c.expect_goaway(FRAME_SIZE_ERROR)


async def test_server_never_exceeds_a_tiny_client_window(server):
    async with client(server, handshake=False) as cl:
        await cl.handshake((0x4, 100))  # SETTINGS_INITIAL_WINDOW_SIZE = 100 bytes per stream
        cl.send(cl.headers(1, get(b"/big?n=3000")))
        granted, received, body = 100, 0, bytearray()
        for _ in range(1000):
            frame = await cl.expect(lambda f: f.stream_id == 1, "stream 1 frame")
            if isinstance(frame, DataFrame):
                assert len(frame.data) <= 100
                received += len(frame.data)
                body += frame.data
                assert received <= granted, "server sent beyond the client's window"
                if received == granted and "END_STREAM" not in frame.flags:
                    granted += 100
                    cl.send(window_update(1, 100))
            if "END_STREAM" in frame.flags:
                break
        assert bytes(body) == _pattern(0, 3000)


async def test_server_waits_while_the_window_is_negative(server):
    async with client(server, handshake=False) as cl:
        await cl.handshake((0x4, 1000))
        cl.send(cl.headers(1, get(b"/big?n=3000")))
        first = await cl.expect(lambda f: isinstance(f, DataFrame), "DATA")
        assert len(first.data) == 1000
        cl.send(settings((0x4, 0)))  # window of stream 1 is now -1000
        await cl.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "ACK")
        cl.send(window_update(1, 1000))  # back to 0: still nothing may be sent
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                frame = await cl.frame(1.0)
                pytest.fail(f"sent {frame!r} with no window")
        cl.send(window_update(1, 2000))
        status, rest = await cl.response(1)
        assert first.data + rest == _pattern(0, 3000)


async def test_data_frames_respect_max_frame_size(server):
    async with client(server, handshake=False) as cl:
        await cl.handshake((0x4, MAX_WINDOW))
        cl.send(window_update(0, 1_000_000))
        cl.send(cl.headers(1, get(b"/big?n=200000")))
        sizes = []
        for _ in range(1000):
            frame = await cl.expect(lambda f: f.stream_id == 1, "stream 1 frame")
            if isinstance(frame, DataFrame):
                sizes.append(len(frame.data))
            if "END_STREAM" in frame.flags:
                break
        assert sum(sizes) == 200000 and max(sizes) <= 16384


UPLOAD = post(b"/hang", (b"content-type", b"multipart/form-data; boundary=x"))


async def _reopened(cl: Client, sent: int, ends: int = 0) -> None:
    """Wait until WINDOW_UPDATEs have reopened at least half the client's connection send
    window after it sent ``sent`` bytes (h2 hands bytes back in halves of the window; it
    starts at 65535, widened after the server's SETTINGS), and ``ends`` responses ended."""
    window = 65535 - sent
    while window < H2Limits().connection_window_size // 2 or ends:
        frame = await cl.expect(
            lambda f: (isinstance(f, WindowUpdateFrame) and not f.stream_id)
            or "END_STREAM" in f.flags, f"connection WINDOW_UPDATE (window {window})", 2.0)
        if isinstance(frame, WindowUpdateFrame):
            window += frame.window_increment
        else:
            ends -= 1


async def test_unread_upload_bytes_of_a_reset_stream_go_back_to_the_connection_window(c):
    """An upload's DATA is acknowledged only as its handler reads it; bytes still unread when
    the client cancels are read by no one: unless they are handed back, four cancelled
    uploads eat the 1 MiB connection window and no body can be sent on it again."""
    for sid in range(1, 9, 2):
        c.send(c.headers(sid, UPLOAD, end_stream=False),
               *(raw(DATA, 0, sid, b"x" * 16384) for _ in range(16)), rst(sid))
    await _reopened(c, 4 * 16 * 16384)
    await c.assert_usable(9)


@pytest.mark.parametrize("whole", [False, True], ids=["partly-sent", "whole"])
async def test_unread_upload_bytes_of_a_stream_answered_early_go_back_to_the_connection_window(
        c, whole):
    """The same when the handler answers without reading the upload (a 401, a 429, a 413 on
    its Content-Length), whether or not the client had sent all of it."""
    size = 16 * 16384
    unread = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/unread"),
              (b":authority", b"kraken"), (b"content-length", b"%d" % size)]
    for sid in range(1, 9, 2):
        c.send(c.headers(sid, unread + UPLOAD[4:], end_stream=False),
               *(raw(DATA, 0, sid, b"x" * 16384) for _ in range(15)),
               raw(DATA, END_STREAM if whole else 0, sid, b"x" * 16384))
    await _reopened(c, 4 * size, ends=4)


async def test_upload_bytes_arriving_after_the_body_broke_go_back_to_the_connection_window():
    """An upload whose body timed out is told so by its read, and nothing reads it again: what
    the client still sends before the answer must not shrink the connection window."""
    size = 16 * 16384
    async with serve(body_idle_timeout_s=0.1) as server, client(server) as c:
        for sid in range(1, 9, 2):
            c.send(c.headers(sid, post(b"/read", UPLOAD[4]), end_stream=False))
        await wait_for(lambda: server.failed == ["TimeoutError"] * 4)
        for sid in range(1, 9, 2):
            c.send(*(raw(DATA, 0, sid, b"x" * 16384) for _ in range(16)))
        await _reopened(c, 4 * size)


async def test_response_hpack_table_stays_small_whatever_size_the_client_allows(server):
    """HPACK indexes each answer's unique x-request-id. The client's SETTINGS_HEADER_TABLE_SIZE
    is only a ceiling (RFC 7541 §4.2): taken as the size, 4 GiB lets the server's encoder
    table (which the client's decoder mirrors) keep every answer's fields while the
    connection lasts."""
    async with client(server, handshake=False) as cl:
        cl.decoder.max_allowed_table_size = 2**32 - 1
        await cl.handshake((0x1, 2**32 - 1))  # SETTINGS_HEADER_TABLE_SIZE
        for sid in range(1, 401, 2):
            cl.send(cl.headers(sid, get(b"/unique")))
            assert await cl.response(sid) == (200, b"ok")
        assert cl.decoder.header_table._current_size <= 4096


# ---- 8 HTTP semantics: malformed requests are stream errors ---------------------------------
MALFORMED: list[tuple[str, Callable[[Client], bytes]]] = [
    ("uppercase-name", lambda c: raw(HEADERS, END_STREAM | END_HEADERS, 1,
                                     c.block(GET) + literal(b"X-Upper", b"1"))),
    ("connection", lambda c: c.headers(1, GET + [(b"connection", b"keep-alive")])),
    ("keep-alive", lambda c: c.headers(1, GET + [(b"keep-alive", b"timeout=5")])),
    ("proxy-connection", lambda c: c.headers(1, GET + [(b"proxy-connection", b"close")])),
    ("transfer-encoding", lambda c: c.headers(1, GET + [(b"transfer-encoding", b"chunked")])),
    ("upgrade", lambda c: c.headers(1, GET + [(b"upgrade", b"websocket")])),
    ("te-gzip", lambda c: c.headers(1, GET + [(b"te", b"gzip")])),
    ("missing-method", lambda c: c.headers(1, GET[1:])),
    ("missing-path", lambda c: c.headers(1, [GET[0], GET[1], GET[3]])),
    ("missing-scheme", lambda c: c.headers(1, [GET[0], GET[2], GET[3]])),
    ("empty-path", lambda c: c.headers(1, get(b""))),
    ("duplicate-path", lambda c: c.headers(1, GET + [(b":path", b"/again")])),
    ("duplicate-method", lambda c: c.headers(1, [(b":method", b"GET")] + GET)),
    ("unknown-pseudo", lambda c: c.headers(1, GET + [(b":foo", b"bar")])),
    ("status-in-request", lambda c: c.headers(1, GET + [(b":status", b"200")])),
    ("pseudo-after-field", lambda c: c.headers(1, GET[:3] + [(b"x-a", b"1"), GET[3]])),
    ("space-in-name", lambda c: raw(HEADERS, END_STREAM | END_HEADERS, 1,
                                    c.block(GET) + literal(b"x a", b"1"))),
    ("colon-in-name", lambda c: raw(HEADERS, END_STREAM | END_HEADERS, 1,
                                    c.block(GET) + literal(b"x:a", b"1"))),
    ("newline-in-value", lambda c: raw(HEADERS, END_STREAM | END_HEADERS, 1,
                                       c.block(GET) + literal(b"x-a", b"1\r\nx-b: 2"))),
    ("host-differs-from-authority", lambda c: c.headers(1, GET + [(b"host", b"other")])),
    ("content-length-more-than-data", lambda c: c.headers(
        1, post(b"/echo", (b"content-length", b"10")), end_stream=False)
        + raw(DATA, END_STREAM, 1, b"12345")),
    ("content-length-less-than-data", lambda c: c.headers(
        1, post(b"/echo", (b"content-length", b"3")), end_stream=False)
        + raw(DATA, END_STREAM, 1, b"12345")),
    ("content-length-without-body", lambda c: c.headers(
        1, post(b"/echo", (b"content-length", b"5")))),
    ("content-length-not-a-number", lambda c: c.headers(
        1, post(b"/echo", (b"content-length", b"5x")), end_stream=False)
        + raw(DATA, END_STREAM, 1, b"12345")),
    ("pseudo-header-in-trailers", lambda c: c.headers(1, post(b"/echo"), end_stream=False)
        + raw(DATA, 0, 1, b"body") + c.headers(1, [(b":path", b"/x")])),
    ("trailers-without-end-stream", lambda c: c.headers(1, post(b"/echo"), end_stream=False)
        + raw(DATA, 0, 1, b"body") + c.headers(1, [(b"x-t", b"1")], end_stream=False)),
    ("extended-connect", lambda c: c.headers(1, [(b":method", b"CONNECT"), (b":protocol", b"ws"),
                                                 (b":scheme", b"http"), (b":path", b"/"),
                                                 (b":authority", b"kraken")])),
]


@pytest.mark.parametrize("build", [pytest.param(b, id=i) for i, b in MALFORMED])
async def test_malformed_request_is_a_stream_protocol_error(c, server, build):
    c.send(build(c))
    await c.expect_rst(1, PROTOCOL_ERROR)
    await c.assert_usable(3)
    assert [r.target for r in server.calls] == ["/"], "a malformed request reached the handler"


async def test_te_trailers_is_allowed(c):
    c.send(c.headers(1, GET + [(b"te", b"trailers")]))
    assert await c.response(1) == (200, b"ok")


async def test_trailers_after_body_are_accepted(c, server):
    c.send(c.headers(1, post(b"/echo"), end_stream=False), raw(DATA, 0, 1, b"body"),
           c.headers(1, [(b"x-checksum", b"abc")]))
    assert await c.response(1) == (200, b"body")


async def test_connect_is_answered_405(c):
    c.send(c.headers(1, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]))
    status, body = await c.response(1)
    assert status == 405 and b"invalid_request_error" in body


# ---- limits and floods ------------------------------------------------------------------
async def test_stream_beyond_max_concurrent_is_refused(c, server):
    c.send(*(c.headers(sid, get(b"/hang")) for sid in range(1, 201, 2)))  # 100 streams
    c.send(c.headers(201, GET))
    await c.expect_rst(201, REFUSED_STREAM)
    c.send(rst(1))  # one slot frees
    c.send(c.headers(203, GET))
    assert await c.response(203) == (200, b"ok")
    assert "/" not in [r.target for r in server.calls[:100]]


async def test_rapid_reset_gets_goaway_enhance_your_calm(c, server):
    c.send(*(c.headers(sid, get(b"/hang")) + rst(sid) for sid in range(1, 502, 2)))  # 251
    await c.expect_goaway(ENHANCE_YOUR_CALM)
    await asyncio.sleep(0.05)
    assert all(not conn.tasks for conn in server.conns)


async def test_client_reset_cancels_the_handler(c, server):
    c.send(c.headers(1, get(b"/hang")))
    for _ in range(100):
        if server.calls:
            break
        await asyncio.sleep(0.01)
    c.send(rst(1))
    for _ in range(100):
        if server.cancelled:
            break
        await asyncio.sleep(0.01)
    assert server.cancelled == ["/hang"]
    await c.assert_usable(3)


@pytest.mark.parametrize("provoke", [
    pytest.param(lambda c, sid: window_update(sid, 0), id="zero-window-update"),
    pytest.param(lambda c, sid: raw(DATA, 0, sid, b"x"), id="data-after-end-stream"),
    pytest.param(lambda c, sid: window_update(sid, MAX_WINDOW), id="window-overflow"),
])
async def test_provoked_resets_get_goaway_enhance_your_calm(c, provoke):
    """MadeYouReset (CVE-2025-8671): resets the server has to send count like client ones."""
    c.send(*(c.headers(sid, get(b"/hang")) + provoke(c, sid) for sid in range(1, 502, 2)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_ping_flood_gets_goaway_enhance_your_calm(c):
    c.send(*(raw(PING, 0, 0, b"%08d" % i) for i in range(150)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_calm_warnings_of_many_connections_are_one_line_naming_the_rest(
        server, caplog, monkeypatch):
    """A client earns one GOAWAY ENHANCE_YOUR_CALM per connection it opens, so the warning
    is throttled: one line per interval, the next naming how many were held back."""
    from kraken.http import h2 as h2_module
    from kraken.logs import Throttle

    now = [100.0]
    monkeypatch.setattr(h2_module, "_CALM_LINES", Throttle(10.0, clock=lambda: now[0]),
                        raising=False)
    caplog.set_level(logging.WARNING, "kraken.http")

    async def flood() -> None:
        async with client(server) as cl:
            cl.send(*(raw(PING, 0, 0, b"%08d" % i) for i in range(150)))
            await cl.expect_goaway(ENHANCE_YOUR_CALM)

    for _ in range(6):
        await flood()
    now[0] += 10.0
    await flood()
    lines = [r.getMessage() for r in caplog.records if "ENHANCE_YOUR_CALM" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "(0 more since the last line)" in lines[0]
    assert "(5 more since the last line)" in lines[1]


async def test_settings_flood_gets_goaway_enhance_your_calm(c):
    c.send(*(settings((0x4, 65535)) for _ in range(100)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_empty_data_flood_gets_goaway_enhance_your_calm(c):
    c.send(c.headers(1, post(b"/echo"), end_stream=False))
    c.send(*(raw(DATA, 0, 1, b"") for _ in range(150)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_zero_window_update_flood_on_closed_streams_gets_goaway(c):
    c.send(c.headers(1))
    assert await c.response(1) == (200, b"ok")
    c.send(*(window_update(1, 0) for _ in range(150)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_continuation_flood_gets_goaway_enhance_your_calm(c):
    block = c.block(GET)
    c.send(raw(HEADERS, END_STREAM, 1, block),
           *(raw(CONTINUATION, 0, 1, b"") for _ in range(50)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_oversized_header_block_gets_goaway_enhance_your_calm(c):
    c.send(raw(HEADERS, END_STREAM, 1, c.block(GET)),
           *(raw(CONTINUATION, 0, 1, b"\x00" * 16000) for _ in range(5)))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_hpack_bomb_gets_goaway_enhance_your_calm(c):
    """4 KB in the dynamic table, referenced 20 times: 80 KB decoded from ~4 KB sent."""
    bomb = [(b"x-bomb", b"b" * 4000)] * 20
    c.send(c.headers(1, GET + bomb))
    await c.expect_goaway(ENHANCE_YOUR_CALM)


async def test_header_list_over_max_head_bytes_is_431(c, server):
    block = c.block(GET + [(b"x-big", b"a" * 20_000)])
    c.send(raw(HEADERS, END_STREAM, 1, block[:16000]),
           raw(CONTINUATION, END_HEADERS, 1, block[16000:]))
    status, body = await c.response(1)
    assert status == 431 and b"request_header_fields_too_large" in body
    assert server.calls == []
    await c.assert_usable(3)


async def test_declared_body_over_max_is_413_before_the_body(c, server):
    c.send(c.headers(1, post(b"/echo", (b"content-length", b"5000")), end_stream=False))
    status, body = await c.response(1)
    assert status == 413 and b"request_too_large" in body
    await c.expect_rst(1, NO_ERROR)  # RFC 9113 §8.1: stop sending the body
    c.send(raw(DATA, END_STREAM, 1, b"x" * 5000))  # already in flight: ignored
    await c.assert_usable(3)
    assert server.calls[0].target == "/"


async def test_streamed_body_over_max_is_413(c, server):
    c.send(c.headers(1, post(b"/echo"), end_stream=False),
           raw(DATA, 0, 1, b"x" * 600), raw(DATA, 0, 1, b"x" * 600))
    status, _ = await c.response(1)
    assert status == 413
    await c.assert_usable(3)


async def test_body_within_limit_reaches_the_handler(c, server):
    c.send(c.headers(1, post(b"/echo", (b"content-length", b"1000")), end_stream=False),
           raw(DATA, 0, 1, b"a" * 500), raw(DATA, END_STREAM | PADDED, 1,
                                             bytes([10]) + b"b" * 500 + b"\x00" * 10))
    assert await c.response(1) == (200, b"a" * 500 + b"b" * 500)
