"""A small TLS provider for the upstream tests: HTTP/2 on h2 (ALPN "h2"), with a minimal
HTTP/1.1 fallback, answering POST chat completions in the OpenAI wire format.

A ``"mock"`` object in the JSON body steers one request: ``tag`` (names it in ``bodies`` /
``sent``), ``chunks`` (content events), ``pad`` (extra bytes per event), ``chunk_delay_ms``,
``first_byte_delay_ms``, ``hang_after`` (stop after that many events, stream left open).
HTTP/2 sends respect the client's flow-control windows, so a client that stops
acknowledging a stream stalls exactly that stream here. ``answer_early``: a request whose
body continues past its first DATA is answered then (a JSON tagged ``early<stream id>``),
and the stream is left for the client to end or reset (RFC 9113 §8.1). ``header_table_size``:
the SETTINGS_HEADER_TABLE_SIZE announced (how large an HPACK table the client may keep).

Turning requests away unprocessed (RFC 9113 §8.7, "safe to retry"), each for the next N
requests, whatever their connection: ``refuse_streams`` answers RST_STREAM REFUSED_STREAM,
``goaway_streams`` a graceful GOAWAY whose last stream id is below the request (the streams
below it finish). ``answered`` and ``refused`` say which connection (1: the first accepted)
each tagged request reached.
"""
from __future__ import annotations

import asyncio
import ssl

import orjson
import trustme
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       RequestReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame


def respond(body: bytes) -> tuple[int, list[tuple[bytes, bytes]], list[bytes], dict]:
    """(status, headers, body pieces, options) for one chat-completions request body."""
    req = orjson.loads(body)
    opts = req.get("mock") or {}
    tag = opts.get("tag", "x")
    model = req.get("model", "m")
    usage = {"prompt_tokens": 3, "completion_tokens": opts.get("chunks", 5), "total_tokens": 8}
    if not req.get("stream"):
        out = orjson.dumps({"id": f"chatcmpl-{tag}", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "hello"}}],
                            "usage": usage})
        return 200, [(b"content-type", b"application/json"),
                     (b"content-length", str(len(out)).encode())], [out], opts
    pieces = []
    for i in range(opts.get("chunks", 5)):
        delta = {"content": f"tok{i} " + "x" * opts.get("pad", 0)}
        pieces.append(b"data: " + orjson.dumps({
            "id": f"chatcmpl-{tag}", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n")
    if (req.get("stream_options") or {}).get("include_usage"):
        pieces.append(b"data: " + orjson.dumps({"id": f"chatcmpl-{tag}", "choices": [],
                                                "usage": usage}) + b"\n\n")
    pieces.append(b"data: [DONE]\n\n")
    return 200, [(b"content-type", b"text/event-stream")], pieces, opts


class H2Provider:
    """``async with H2Provider(ca) as p``: listens on 127.0.0.1 with a cert from ``ca``."""

    def __init__(self, ca: trustme.CA, *, alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 max_concurrent_streams: int | None = None, answer_early: bool = False,
                 header_table_size: int | None = None):
        self.ca = ca
        self.header_table_size = header_table_size
        self.answer_early = answer_early
        self.alpn = alpn
        self.max_concurrent_streams = max_concurrent_streams
        self.port = 0
        self.connections = 0
        """TCP connections accepted so far."""
        self.protocols: list[str | None] = []
        self.open: set[_Conn] = set()
        self.requests: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        """(stream id, headers) per request, in arrival order."""
        self.bodies: dict[str, bytes] = {}
        """tag → the complete response body the server means to send."""
        self.sent: dict[str, int] = {}
        """tag → body bytes sent so far."""
        self.finished: set[str] = set()
        self.resets: list[tuple[int, int]] = []
        """(stream id, error code) of every RST_STREAM the client sent."""
        self.refuse_streams = 0
        self.goaway_streams = 0
        self.answered: list[tuple[str, int]] = []
        """(tag, connection number) of every HTTP/2 request processed, in arrival order."""
        self.refused: list[tuple[str, int]] = []
        """(tag, connection number) of every HTTP/2 request turned away unprocessed."""
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> H2Provider:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        ctx.set_alpn_protocols(list(self.alpn))
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Conn(self), "127.0.0.1", 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for conn in list(self.open):
            conn.transport.abort()
        await asyncio.sleep(0.01)

    def goaway(self, last_stream_id: int | None = None) -> None:
        """Graceful GOAWAY on every open connection; streams above the last id are dropped."""
        for conn in list(self.open):
            conn.goaway(last_stream_id)

    def drop_connections(self) -> None:
        for conn in list(self.open):
            conn.transport.abort()


class _Conn(asyncio.Protocol):
    def __init__(self, server: H2Provider):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.h2: H2Connection | None = None
        self.bodies: dict[int, bytearray] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.last_allowed = 2**31
        self.highest = 0
        self._window = asyncio.Event()
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        self.server.connections += 1
        self.number = self.server.connections
        self.server.protocols.append(alpn)
        self.server.open.add(self)
        if alpn == "h2":
            self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
            settings = {SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams,
                        SettingCodes.HEADER_TABLE_SIZE: self.server.header_table_size}
            settings = {code: value for code, value in settings.items() if value is not None}
            if settings:
                self.h2.local_settings = Settings(client=False, initial_values=settings)
            if self.server.header_table_size is not None:  # initial values are not "changes"
                self.h2.decoder.max_allowed_table_size = self.server.header_table_size
            self.h2.initiate_connection()
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        for task in self.tasks.values():
            task.cancel()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def goaway(self, last_stream_id: int | None) -> None:
        """Written by hand: h2's close_connection would refuse the streams still finishing."""
        last = self.highest if last_stream_id is None else last_stream_id
        self.last_allowed = last
        for sid, task in list(self.tasks.items()):
            if sid > last:
                task.cancel()
        self.flush()
        self.transport.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())
        if not self.tasks:
            self.transport.close()

    # ---- HTTP/2 --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.h2 is None:
            self._h1(data)
            return
        for ev in self.h2.receive_data(data):
            if isinstance(ev, RequestReceived):
                self.bodies[ev.stream_id] = bytearray()
                self.highest = max(self.highest, ev.stream_id)
                self.server.requests.append((ev.stream_id, list(ev.headers)))
            elif isinstance(ev, DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_id not in self.bodies:
                    continue  # answered early: the rest of the body is not read
                self.bodies[ev.stream_id] += ev.data
                if self.server.answer_early and ev.data and ev.stream_ended is None:
                    del self.bodies[ev.stream_id]
                    early = b'{"model":"early","mock":{"tag":"early%d"}}' % ev.stream_id
                    task = asyncio.get_running_loop().create_task(
                        self._respond(ev.stream_id, early))
                    self.tasks[ev.stream_id] = task
            elif (isinstance(ev, StreamEnded) and ev.stream_id <= self.last_allowed
                  and ev.stream_id in self.bodies):
                body = bytes(self.bodies.pop(ev.stream_id))
                if self._turned_away(ev.stream_id, body):
                    continue
                task = asyncio.get_running_loop().create_task(self._respond(ev.stream_id, body))
                self.tasks[ev.stream_id] = task
            elif isinstance(ev, StreamReset):
                self.server.resets.append((ev.stream_id, ev.error_code))
                task = self.tasks.pop(ev.stream_id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(ev, (WindowUpdated, RemoteSettingsChanged)):
                woken, self._window = self._window, asyncio.Event()
                woken.set()
            elif isinstance(ev, ConnectionTerminated):
                self.transport.close()
        self.flush()

    def _turned_away(self, sid: int, body: bytes) -> bool:
        """``refuse_streams``/``goaway_streams``: True when this request is not processed."""
        server = self.server
        tag = (orjson.loads(body).get("mock") or {}).get("tag", str(sid))
        if server.refuse_streams:
            server.refuse_streams -= 1
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        elif server.goaway_streams:
            server.goaway_streams -= 1
            self.goaway(max((s for s in self.tasks if s < sid), default=0))
        else:
            server.answered.append((tag, self.number))
            return False
        server.refused.append((tag, self.number))
        return True

    async def _respond(self, sid: int, body: bytes) -> None:
        status, headers, pieces, opts = respond(body)
        tag = opts.get("tag", str(sid))
        self.server.bodies[tag] = b"".join(pieces)
        self.server.sent[tag] = 0
        try:
            if opts.get("first_byte_delay_ms"):
                await asyncio.sleep(opts["first_byte_delay_ms"] / 1000)
            self.h2.send_headers(sid, [(b":status", str(status).encode())] + headers)
            self.flush()
            for i, piece in enumerate(pieces):
                if opts.get("hang_after") is not None and i >= opts["hang_after"]:
                    await asyncio.Future()
                if opts.get("chunk_delay_ms"):
                    await asyncio.sleep(opts["chunk_delay_ms"] / 1000)
                await self._send(sid, piece, tag)
            self.h2.end_stream(sid)
            self.flush()
            self.server.finished.add(tag)
        except asyncio.CancelledError:
            pass
        finally:
            self.tasks.pop(sid, None)
            if self.last_allowed < 2**31 and not self.tasks:
                self.transport.close()  # drained after GOAWAY

    async def _send(self, sid: int, data: bytes, tag: str) -> None:
        while data:
            size = min(self.h2.local_flow_control_window(sid), len(data),
                       self.h2.max_outbound_frame_size)
            if size <= 0:
                await self._window.wait()
                continue
            self.h2.send_data(sid, data[:size])
            self.flush()
            self.server.sent[tag] += size
            data = data[size:]

    # ---- HTTP/1.1 fallback (one request at a time, keep-alive) ---------------------
    def _h1(self, data: bytes) -> None:
        self._buf += data
        while (end := self._buf.find(b"\r\n\r\n")) >= 0:
            lines = self._buf[:end].split(b"\r\n")
            headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in lines[1:]]
            length = int(dict((k.lower(), v) for k, v in headers).get(b"content-length", b"0"))
            if len(self._buf) < end + 4 + length:
                return
            body, self._buf = self._buf[end + 4:end + 4 + length], self._buf[end + 4 + length:]
            self.server.requests.append((0, [(k.lower(), v) for k, v in headers]))
            status, out_headers, pieces, opts = respond(body)
            tag = opts.get("tag", "h1")
            self.server.bodies[tag] = b"".join(pieces)
            chunked = not any(k == b"content-length" for k, _ in out_headers)
            if chunked:
                out_headers = out_headers + [(b"transfer-encoding", b"chunked")]
            head = b"HTTP/1.1 %d OK\r\n" % status + b"".join(
                b"%s: %s\r\n" % kv for kv in out_headers) + b"\r\n"
            if chunked:
                pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
            self.transport.write(head + b"".join(pieces))
            self.server.finished.add(tag)
