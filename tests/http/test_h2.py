"""Inbound HTTP/2 on real loopback sockets, spoken by h2's own client: end to end through the
real gateway in front of the mock provider, then the listener's behaviour with small
handlers (the Request it builds, backpressure, shutdown, timeouts, errors, wiring)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame

from harness import TEST_KEY, kraken_mapping, running_kraken, running_mock
from kraken import metrics
from kraken.config import ServerConfig
from kraken.errors import NotFound, RateLimited
from kraken.http.exchange import Request
from kraken.http.h2 import H2Connection
from kraken.http.listener import ProtocolSelector
from kraken.http.h2limits import GuardedH2Connection, H2Limits

pytestmark = pytest.mark.anyio


# ---- an h2 client -----------------------------------------------------------------------
@dataclass
class Resp:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """h2's client connection over an asyncio stream; ``pump`` reads until a condition."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 window: int | None = None, ack_data: bool = True):
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            conn.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window})
        conn.initiate_connection()
        self.h2 = conn
        self.reader = reader
        self.writer = writer
        self.ack_data = ack_data
        self.responses: dict[int, Resp] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", "kraken.test")] + (headers or [])
        if body:
            hdrs.append(("content-length", str(len(body))))
        self.h2.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.h2.send_data(sid, body, end_stream=end)
        self.responses[sid] = Resp()
        self.flush()
        return sid

    async def pump(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            for _ in range(100_000):
                if done() or self.closed:
                    return
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    return
                for event in self.h2.receive_data(data):
                    self._on(event)
                self.flush()

    async def response(self, sid: int, timeout: float = 10.0) -> Resp:
        resp = self.responses[sid]
        await self.pump(lambda: resp.ended or resp.reset is not None, timeout)
        return resp

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            resp = self.responses[event.stream_id]
            resp.headers = dict(event.headers)
            resp.status = int(resp.headers[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            if self.ack_data:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event


@contextlib.asynccontextmanager
async def h2_client(port: int, **kwargs: Any) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Client(reader, writer, **kwargs)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def next_frame(reader: asyncio.StreamReader, kind: type, timeout: float = 5.0) -> Any:
    """The next frame of type ``kind`` read raw from ``reader`` (others skipped)."""
    async with asyncio.timeout(timeout):
        for _ in range(10_000):
            frame, length = Frame.parse_frame_header(memoryview(await reader.readexactly(9)))
            frame.parse_body(memoryview(await reader.readexactly(length)))
            if isinstance(frame, kind):
                return frame
    pytest.fail(f"no {kind.__name__}")


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


# ---- through the real gateway -------------------------------------------------------------
@dataclass
class Stack:
    mock: Any
    port: int
    conns: set


@pytest.fixture
async def stack(tmp_path):
    """Mock provider → Kraken exactly as app.serve() wires it; its listener speaks h2c
    with prior knowledge (kraken.http.listener.ProtocolSelector)."""
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            yield Stack(mock, k.port, set())


AUTH = [("authorization", f"Bearer {TEST_KEY}"), ("content-type", "application/json")]


def sse_text(body: bytes) -> str:
    """The assistant text carried by an SSE body's chunks."""
    text = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in json.loads(event[6:]).get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       **fields}).encode()


async def test_many_concurrent_streams_each_get_their_whole_sse_body(stack):
    async with h2_client(stack.port) as cl:
        sids = [cl.request("POST", "/v1/chat/completions", chat(
            stream=True, stream_options={"include_usage": True},
            mock={"content": f"reply number {i} " * 5, "chunks": 12, "chunk_delay_ms": 2}),
            AUTH) for i in range(40)]
        await cl.pump(lambda: all(cl.responses[s].ended or cl.responses[s].reset is not None
                                  for s in sids), timeout=20)
        bodies = []
        for i, sid in enumerate(sids):
            resp = cl.responses[sid]
            assert resp.status == 200 and resp.ended, (i, resp)
            assert resp.headers[b"content-type"].startswith(b"text/event-stream")
            assert bytes(resp.body).endswith(b"data: [DONE]\n\n")
            assert sse_text(bytes(resp.body)) == f"reply number {i} " * 5
            bodies.append(bytes(resp.body))
    # relayed byte for byte: exactly what the provider sent, stream by stream
    assert sorted(bodies) == sorted(r.body for r in stack.mock.responses)
    assert len(stack.mock.requests) == 40


async def test_non_streamed_json_response(stack):
    async with h2_client(stack.port) as cl:
        resp = await cl.response(cl.request("POST", "/v1/chat/completions", chat(), AUTH))
    assert resp.status == 200
    assert int(resp.headers[b"content-length"]) == len(resp.body)
    body = resp.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert b"x-request-id" in resp.headers


async def test_bad_key_gets_openai_error_json(stack):
    async with h2_client(stack.port) as cl:
        resp = await cl.response(cl.request("POST", "/v1/chat/completions", chat(), [
            ("authorization", "Bearer sk-kraken-not-a-real-key"),
            ("content-type", "application/json")]))
    assert resp.status == 401
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"
    assert stack.mock.requests == type(stack.mock.requests)()


async def test_get_models_and_health_on_one_connection(stack):
    async with h2_client(stack.port) as cl:
        models = cl.request("GET", "/v1/models", headers=AUTH[:1])
        health = cl.request("GET", "/healthz")
        assert (await cl.response(models)).json()["data"][0]["id"] == "mock-gpt"
        assert (await cl.response(health)).status == 200


async def test_client_reset_cancels_the_provider_call(stack):
    before = metrics.CLIENT_CANCELLED._value.get()
    async with h2_client(stack.port) as cl:
        sid = cl.request("POST", "/v1/chat/completions", chat(
            stream=True, mock={"chunks": 500, "chunk_delay_ms": 20}), AUTH)
        await cl.pump(lambda: len(cl.responses[sid].body) > 0)
        cl.h2.reset_stream(sid, ErrorCodes.CANCEL)
        cl.flush()
        await eventually(lambda: metrics.CLIENT_CANCELLED._value.get() == before + 1)
        # the connection is still fine for the next request
        resp = await cl.response(cl.request("POST", "/v1/chat/completions", chat(), AUTH))
        assert resp.status == 200
    assert len(stack.mock.requests) == 2


def send_upload(cl: Client, path: str, body: bytes, headers: list[tuple[str, str]]) -> int:
    """A whole upload in frames of 16 KiB; h2 raises FlowControlError if the windows Kraken
    gave back do not hold it."""
    sid = cl.h2.get_next_available_stream_id()
    cl.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                             (":authority", "kraken.test"), *headers,
                             ("content-length", str(len(body)))])
    for i in range(0, len(body), 16384):
        cl.h2.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
    cl.responses[sid] = Resp()
    cl.flush()
    return sid


async def test_uploads_answered_unread_leave_the_connection_able_to_carry_bodies(stack):
    """A bad key's upload is answered 401 before Kraken reads it: the bytes it held must go
    back to the connection's window, or a few such answers leave the connection unable to
    carry any request body again."""
    audio = (b"--b3\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
             b"--b3\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
             b"\r\n" + b"\0" * 240_000 + b"\r\n--b3--\r\n")
    refused = [("authorization", "Bearer sk-kraken-not-a-real-key"),
               ("content-type", "multipart/form-data; boundary=b3")]
    async with h2_client(stack.port) as cl:
        full = H2Limits().connection_window_size
        await cl.pump(lambda: cl.h2.outbound_flow_control_window >= full)  # Kraken's opened it
        for _ in range(12):  # ~2.9 MB: the 1 MiB window comes back or this stops
            assert (await cl.response(send_upload(
                cl, "/v1/audio/transcriptions", audio, refused))).status == 401
        assert (await cl.response(cl.request(
            "POST", "/v1/chat/completions", chat(), AUTH))).status == 200


# ---- the listener with small handlers -----------------------------------------------------
Handler = Callable[[Request, Any], Awaitable[None]]


async def ok(req: Request, sink: Any) -> None:
    body = b"ok"
    sink.start(200, [(b"content-type", b"text/plain")], len(body))
    sink.write(body)
    sink.end()


@dataclass
class Server:
    port: int = 0
    calls: list[Request] = field(default_factory=list)
    conns: set = field(default_factory=set)


@contextlib.asynccontextmanager
async def serve(handler: Handler = ok, limits: H2Limits | None = None,
                **cfg: Any) -> AsyncIterator[Server]:
    server = Server()

    async def recording(req: Request, sink: Any) -> None:
        server.calls.append(req)
        await handler(req, sink)

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: H2Connection(recording, ServerConfig(**cfg), server.conns, limits=limits),
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


async def test_request_is_built_like_h1():
    async with serve() as server, h2_client(server.port) as cl:
        sid = cl.request("POST", "/v1/x?a=1", b'{"k": 1}',
                         [("x-custom", "Value"), ("cookie", "a=1"), ("cookie", "b=2")])
        assert (await cl.response(sid)).status == 200
    (req,) = server.calls
    assert (req.method, req.target, req.path) == ("POST", "/v1/x?a=1", "/v1/x")
    assert req.body == b'{"k": 1}'
    assert req.http_version == "2" and req.scheme == "http" and req.peer == "127.0.0.1"
    assert req.received_ns > 0
    assert all(not name.startswith(b":") and name == name.lower() for name, _ in req.headers)
    assert req.header(b"host") == b"kraken.test"  # from :authority
    assert req.header(b"x-custom") == b"Value"
    assert req.header(b"cookie") == b"a=1; b=2"  # RFC 9113 §8.2.3: crumbs joined


async def test_response_drops_connection_specific_headers_and_sets_length():
    async def handler(req: Request, sink: Any) -> None:
        sink.start(200, [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked"),
                         (b"keep-alive", b"5"), (b"X-Kept", b"yes")], 5)
        sink.write(b"hello")
        sink.end()

    async with serve(handler) as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("GET", "/"))
    assert resp.body == b"hello" and resp.headers[b"content-length"] == b"5"
    assert resp.headers[b"x-kept"] == b"yes"
    for name in (b"connection", b"transfer-encoding", b"keep-alive"):
        assert name not in resp.headers


async def test_head_response_has_no_body():
    async with serve() as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("HEAD", "/"))
    assert resp.status == 200 and resp.ended and resp.body == b""
    assert resp.headers[b"content-length"] == b"2"


@pytest.mark.parametrize("failure, status", [
    (RuntimeError("boom"), 500), (NotFound("no such thing"), 404), (None, 500)])
async def test_handler_failure_before_start_is_an_error_response(failure, status):
    async def handler(req: Request, sink: Any) -> None:
        if failure is not None:
            raise failure
        # returns without answering

    async with serve(handler) as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("GET", "/"))
    assert resp.status == status
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


async def test_handler_failure_after_start_resets_the_stream():
    async def handler(req: Request, sink: Any) -> None:
        sink.start(200, [], None)
        sink.write(b"partial")
        raise RuntimeError("boom")

    async with serve(handler) as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("GET", "/"))
    assert resp.reset == ErrorCodes.INTERNAL_ERROR and not resp.ended


class Producer:
    """Stands in for the provider connection: writes only while not paused."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = asyncio.Event()
        self.running.set()

    def pause_reading(self) -> None:
        self.log.append("pause")
        self.running.clear()

    def resume_reading(self) -> None:
        self.log.append("resume")
        self.running.set()


async def test_corked_frames_leave_on_flush():
    flushed = asyncio.Event()

    async def handler(req: Request, sink: Any) -> None:
        sink.cork()
        sink.start(200, [], None)
        sink.write(b"one ")
        sink.write(b"two")
        await asyncio.sleep(0.2)
        flushed.set()
        sink.flush()
        sink.end()

    async with serve(handler) as server, h2_client(server.port) as cl:
        sid = cl.request("GET", "/")
        await cl.pump(lambda: cl.responses[sid].status != 0)
        assert flushed.is_set(), "headers left before flush()"
        assert (await cl.response(sid)).body == b"one two"


def test_send_chunk_keeps_h2_flow_control_books():
    """The DATA fast path frames and counts exactly as h2's send_data would."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                            (":authority", "k")], end_stream=True)
    wire = client.data_to_send()
    fast, slow = GuardedH2Connection(16384, H2Limits()), GuardedH2Connection(16384, H2Limits())
    for server in (fast, slow):
        server.open_connection()
        server.receive_data(wire)
        server.send_headers(1, [(":status", "200")])
        server.data_to_send()
    assert fast.send_chunk(1, b"x" * 1000) is True
    slow.send_data(1, b"x" * 1000)
    assert fast.data_to_send() == slow.data_to_send()
    assert fast.local_flow_control_window(1) == slow.local_flow_control_window(1) == 65535 - 1000
    assert fast.outbound_flow_control_window == slow.outbound_flow_control_window
    assert fast.send_chunk(1, b"y" * 65000) is False  # beyond the window: nothing queued
    assert fast.data_to_send() == b""


async def test_stalled_client_pauses_the_producer_until_window_update():
    producer = Producer()
    body = bytes(range(256)) * 1024  # 256 KiB

    async def handler(req: Request, sink: Any) -> None:
        sink.set_producer(producer)
        sink.start(200, [], len(body))
        for i in range(0, len(body), 8192):
            await producer.running.wait()
            sink.write(body[i:i + 8192])
        sink.set_producer(None)
        sink.end()

    async with serve(handler) as server, h2_client(server.port, window=0, ack_data=False) as cl:
        sid = cl.request("GET", "/")
        await eventually(lambda: producer.log == ["pause"])
        conn = next(iter(server.conns))
        stream = conn._streams[sid]
        await asyncio.sleep(0.05)
        assert 64 * 1024 <= len(stream.pending) < 64 * 1024 + 8192  # bounded: not the body
        cl.h2.increment_flow_control_window(len(body), stream_id=sid)
        cl.h2.increment_flow_control_window(len(body))
        cl.flush()
        resp = await cl.response(sid)
    assert bytes(resp.body) == body
    assert producer.log[:2] == ["pause", "resume"]


async def test_full_transport_pauses_every_producer():
    producers = [Producer(), Producer()]
    release = asyncio.Event()

    async def handler(req: Request, sink: Any) -> None:
        sink.set_producer(producers[int(req.path[1:])])
        sink.start(200, [], None)
        await release.wait()
        sink.end()

    async with serve(handler) as server, h2_client(server.port) as cl:
        sids = [cl.request("GET", "/0"), cl.request("GET", "/1")]
        await eventually(lambda: len(server.calls) == 2)
        conn = next(iter(server.conns))
        conn.pause_writing()
        assert [p.log for p in producers] == [["pause"], ["pause"]]
        conn.resume_writing()
        assert [p.log for p in producers] == [["pause", "resume"], ["pause", "resume"]]
        release.set()
        for sid in sids:
            assert (await cl.response(sid)).ended


async def test_close_when_idle_finishes_streams_in_flight_then_closes():
    release = asyncio.Event()

    async def handler(req: Request, sink: Any) -> None:
        await release.wait()
        await ok(req, sink)

    async with serve(handler) as server, h2_client(server.port) as cl:
        first = cl.request("GET", "/")
        await eventually(lambda: len(server.calls) == 1)
        conn = next(iter(server.conns))
        assert len(conn.tasks) == 1
        conn.close_when_idle()
        # h2's client stops at a GOAWAY, so from here frames are read raw
        goaway = await next_frame(cl.reader, GoAwayFrame)
        assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == first
        late = cl.request("GET", "/")  # raced the GOAWAY: refused, safe to retry elsewhere
        refused = await next_frame(cl.reader, RstStreamFrame)
        assert (refused.stream_id, refused.error_code) == (late, ErrorCodes.REFUSED_STREAM)
        release.set()
        data = await next_frame(cl.reader, DataFrame)
        assert (data.stream_id, data.data, "END_STREAM" in data.flags) == (first, b"ok", True)
        async with asyncio.timeout(5):
            assert await cl.reader.read() == b""  # then the server closes
        assert not conn.tasks
    assert len(server.calls) == 1


async def test_client_goaway_lets_streams_in_flight_finish():
    release = asyncio.Event()

    async def handler(req: Request, sink: Any) -> None:
        await release.wait()
        await ok(req, sink)

    async with serve(handler) as server, h2_client(server.port) as cl:
        cl.request("GET", "/")
        await eventually(lambda: len(server.calls) == 1)
        cl.h2.close_connection()  # GOAWAY NO_ERROR from the client
        cl.flush()
        release.set()
        # h2's own client state machine refuses frames after its GOAWAY: read raw bytes
        data = bytearray()
        async with asyncio.timeout(5):
            while chunk := await cl.reader.read(65536):
                data += chunk
        assert b"ok" in data  # the DATA frame of the response


async def test_idle_connection_gets_goaway_and_is_closed():
    async with serve(keepalive_timeout_s=0.2) as server, h2_client(server.port) as cl:
        assert (await cl.response(cl.request("GET", "/"))).status == 200
        await cl.pump(lambda: False, timeout=5)
        assert cl.goaway is not None and cl.goaway.error_code == ErrorCodes.NO_ERROR
        assert cl.closed


async def test_client_that_never_sends_the_preface_is_closed():
    async with serve(head_timeout_s=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(5):
                while await reader.read(65536):  # our SETTINGS, then EOF
                    pass
        finally:
            writer.close()


async def test_body_that_stops_arriving_gets_408():
    async with serve(body_idle_timeout_s=0.2) as server, h2_client(server.port) as cl:
        sid = cl.request("POST", "/", b"part of it", end=False)
        resp = await cl.response(sid)
    assert resp.status == 408 and server.calls == []


async def test_active_connections_gauge_follows_h2_connections():
    gauge = metrics.ACTIVE_CONNECTIONS
    before = gauge._value.get()
    async with serve() as server:
        async with h2_client(server.port) as cl:
            assert (await cl.response(cl.request("GET", "/"))).status == 200
            assert gauge._value.get() == before + 1
        await eventually(lambda: gauge._value.get() == before)


# ---- wiring: what a listener does to reach H2Connection -------------------------------------
async def test_cleartext_sniffer_hands_prior_knowledge_to_h2_and_the_rest_to_h1():
    conns: set = set()
    calls: list[Request] = []

    async def handler(req: Request, sink: Any) -> None:
        calls.append(req)
        await ok(req, sink)

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: ProtocolSelector(handler, ServerConfig(), conns),
                                        "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with h2_client(port) as cl:  # preface arrives in one piece with SETTINGS
            assert (await cl.response(cl.request("GET", "/h2"))).body == b"ok"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PRI * HTTP/2.0\r\n")  # the preface split across writes
        await asyncio.sleep(0.05)
        writer.write(b"\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        async with asyncio.timeout(5):
            head = await reader.readexactly(9)
        assert head[3] == 0x4  # the server's SETTINGS
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /h1 HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            reply = await reader.read()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")
        writer.close()
    finally:
        listener.close()
        for conn in list(conns):
            conn.abort()
        await listener.wait_closed()
    assert [(r.path, r.http_version) for r in calls] == [("/h2", "2"), ("/h1", "1.1")]


async def test_tls_alpn_h2_reaches_h2_connection(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.set_alpn_protocols(["h2"])
    conns: set = set()
    calls: list[Request] = []

    async def handler(req: Request, sink: Any) -> None:
        calls.append(req)
        await ok(req, sink)

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: ProtocolSelector(handler, ServerConfig(), conns),
                                        "127.0.0.1", 0, ssl=server_ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1")
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        cl = Client(reader, writer)
        resp = await cl.response(cl.request("GET", "/tls"))
        assert resp.body == b"ok"
        writer.close()
    finally:
        listener.close()
        for conn in list(conns):
            conn.abort()
        await listener.wait_closed()
    assert calls[0].http_version == "2"


async def test_handler_kraken_error_status_is_kept():
    async def handler(req: Request, sink: Any) -> None:
        raise RateLimited("slow down")

    async with serve(handler) as server, h2_client(server.port) as cl:
        resp = await cl.response(cl.request("GET", "/"))
    assert resp.status == 429 and resp.json()["error"]["code"] == "rate_limit_exceeded"
