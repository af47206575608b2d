"""Handler starts paced per turn of the event loop (kraken/http/starts.py): a burst read in
one turn begins at most ``PER_TURN`` handlers a turn, the others in the order they were read,
over HTTP/1.1 connections and over one HTTP/2 connection's streams."""
from __future__ import annotations

import asyncio
import math
import socket
import time
from collections import Counter
from typing import Callable

import h2.config
import h2.connection
import pytest

from h1wire import connect, parse_responses, read_to_eof, serve
from kraken import metrics
from kraken.config import ServerConfig
from kraken.http.exchange import Request
from kraken.http.h1 import H1Connection
from kraken.http.h2 import H2Connection
from kraken.http.starts import PER_TURN, pacer_for
from test_h2 import h2_client
from test_h2 import serve as serve_h2
from test_respond import Wire, settle

pytestmark = pytest.mark.anyio

GET = b"GET / HTTP/1.1\r\nHost: k\r\n\r\n"
BURST = 80  # > 2 turns' worth; within the listener's backlog (100)


def waiting_gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("kraken_handler_starts_waiting")


def spend_the_turn() -> None:
    """Begin this turn's ``PER_TURN`` handlers: the next requests wait."""
    pacer = pacer_for(asyncio.get_running_loop())
    for _ in range(PER_TURN):
        assert pacer.now()


class Turns:
    """Counts the loop's turns (a callback that schedules itself for the next one) and, as the
    handler, records for each request the turn it began in and when it was read."""

    def __init__(self) -> None:
        self.n = 0
        self.begun: list[tuple[int, int]] = []
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        self._handle = self._loop.call_soon(self._tick)

    def __enter__(self) -> Turns:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.cancel()

    async def handler(self, req: Request, sink) -> None:
        self.begun.append((self.n, req.received_ns))
        sink.respond(200, [(b"content-type", b"text/plain")], b"ok")

    def assert_paced(self, requests: int) -> None:
        """At most PER_TURN handlers began in any turn, over as many turns as that takes, in
        the order their requests were read (``received_ns``)."""
        per_turn = Counter(turn for turn, _ in self.begun)
        assert len(self.begun) == requests
        assert max(per_turn.values()) <= PER_TURN
        assert len(per_turn) >= math.ceil(requests / PER_TURN)
        read_order = [ns for _, ns in self.begun]
        assert read_order == sorted(read_order)


async def test_a_burst_read_in_one_turn_begins_at_most_per_turn_handlers_a_turn_in_arrival_order():
    with Turns() as turns:
        async with serve(turns.handler) as server:
            # Connected and written before the loop runs again: the kernel completes the
            # handshakes into the listener's backlog, so one turn reads every request.
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(BURST)]
            try:
                for client in clients:
                    client.sendall(GET)
                loop = asyncio.get_running_loop()
                answers = []
                for client in clients:
                    client.setblocking(False)
                    data = b""
                    async with asyncio.timeout(10):
                        while not data.endswith(b"ok"):
                            data += await loop.sock_recv(client, 4096)
                    answers.append(data)
            finally:
                for client in clients:
                    client.close()
    assert [r.status for a in answers for r in parse_responses(a, eof=False)] == [200] * BURST
    turns.assert_paced(BURST)


async def test_an_http2_connections_streams_read_in_one_turn_are_paced_the_same_way():
    with Turns() as turns:
        async with serve_h2(turns.handler) as server, h2_client(server.port) as client:
            # written before the loop runs again: the server reads every stream in one turn
            streams = [client.request("GET", f"/{k}") for k in range(BURST)]
            statuses = [(await client.response(sid)).status for sid in streams]
    assert statuses == [200] * BURST
    turns.assert_paced(BURST)


async def test_an_http2_stream_reset_while_it_waits_is_never_begun():
    loop = asyncio.get_running_loop()
    pacer = pacer_for(loop)
    errors: list[dict] = []
    paths: list[str] = []

    async def handler(req: Request, sink) -> None:
        paths.append(req.path)
        sink.respond(200, [], b"ok")

    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    for k in range(3):
        client.send_headers(2 * k + 1, [(":method", "GET"), (":scheme", "http"),
                                        (":path", f"/{k}"), (":authority", "k")], end_stream=True)
    requests = client.data_to_send()
    client.reset_stream(5)
    reset = client.data_to_send()
    conn = H2Connection(handler, ServerConfig())
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        conn.connection_made(Wire())  # type: ignore[arg-type]
        spend_the_turn()  # this turn's handlers, begun: the three streams wait
        conn.data_received(requests)
        assert pacer.waiting == 3
        conn.data_received(reset)  # a later read: the third stream is reset while it waits
        await settle()
    finally:
        loop.set_exception_handler(None)
    assert paths == ["/0", "/1"]
    assert errors == [] and pacer.waiting == 0


async def test_a_request_waiting_for_its_turn_is_not_begun_once_its_client_is_gone():
    pacer = pacer_for(asyncio.get_running_loop())
    calls: list[Request] = []

    async def handler(req: Request, sink) -> None:
        calls.append(req)
        sink.respond(200, [], b"ok")

    waiting, gone = H1Connection(handler, ServerConfig()), H1Connection(handler, ServerConfig())
    waiting.connection_made(Wire())  # type: ignore[arg-type]
    gone.connection_made(Wire())  # type: ignore[arg-type]
    spend_the_turn()  # this turn's handlers, begun
    waiting.data_received(GET)
    gone.data_received(GET)
    assert pacer.waiting == 2
    assert waiting_gauge() == 2  # the gauge follows the queue
    gone.connection_lost(None)
    await settle()
    assert len(calls) == 1  # the waiting one only
    assert pacer.waiting == 0 and waiting_gauge() == 0


async def test_a_turn_after_the_queue_empties_begins_at_once_and_flush_begins_every_waiting():
    pacer = pacer_for(asyncio.get_running_loop())
    order: list[int] = []
    spend_the_turn()
    assert not pacer.now()  # the turn's budget is spent
    for k in range(3):
        pacer.later(lambda k=k: order.append(k))
    pacer.flush()  # shutdown: every waiting handler begins now, in order
    assert order == [0, 1, 2] and pacer.waiting == 0
    await settle()
    assert pacer.now()  # a new turn, nothing waiting: at once


async def test_a_begin_that_raises_does_not_stop_the_line():
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    pacer = pacer_for(loop)
    begun: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug in a handler's start")

    try:
        spend_the_turn()
        pacer.later(broken)
        pacer.later(lambda: begun.append("next"))
        await settle()
    finally:
        loop.set_exception_handler(None)
    assert begun == ["next"] and pacer.waiting == 0
    assert [type(e.get("exception")) for e in errors] == [RuntimeError]


class PausingWire(Wire):
    """A ``Wire`` that records its reading being paused and resumed."""

    def __init__(self) -> None:
        super().__init__()
        self.reading: list[str] = []

    def pause_reading(self) -> None:
        self.reading.append("paused")

    def resume_reading(self) -> None:
        self.reading.append("resumed")


async def test_a_head_read_while_others_wait_is_parsed_at_its_turn_keeping_its_arrival_time():
    pacer = pacer_for(asyncio.get_running_loop())
    seen: list[tuple[str, int]] = []

    async def handler(req: Request, sink) -> None:
        seen.append((req.path, req.received_ns))
        sink.respond(200, [], b"ok")

    conns = [H1Connection(handler, ServerConfig()) for _ in range(3)]
    wires = [Wire() for _ in conns]
    for conn, wire in zip(conns, wires):
        conn.connection_made(wire)  # type: ignore[arg-type]
    spend_the_turn()  # this turn's handlers, begun: the next requests wait
    conns[0].data_received(b"GET /0 HTTP/1.1\r\nHost: k\r\n\r\n")
    conns[1].data_received(b"GET /1 HTTP/1.1\r\n\x00bad\r\n\r\n")  # malformed: a 400, in turn
    conns[2].data_received(b"GET /2 HTTP/1.1\r\nHost: k\r\n\r\n")
    read_ns = time.perf_counter_ns()
    assert pacer.waiting == 3
    assert wires[1].writes == []  # not parsed yet: its answer waits for its turn too
    await settle()
    assert [path for path, _ in seen] == ["/0", "/2"]
    assert all(received < read_ns for _, received in seen)  # the wait counts in its latency
    (answer,) = parse_responses(b"".join(wires[1].writes), eof=False)
    assert answer.status == 400
    assert pacer.waiting == 0


def queued_upload(size: int) -> tuple[H1Connection, PausingWire, list[int]]:
    """A connection whose upload of ``size`` bytes will queue (this turn's handlers begun), its
    wire, and the body lengths its handler saw."""
    bodies: list[int] = []

    async def handler(req: Request, sink) -> None:
        bodies.append(len(req.body))
        sink.respond(200, [], b"ok")

    conn, wire = H1Connection(handler, ServerConfig()), PausingWire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    spend_the_turn()
    return conn, wire, bodies


async def test_a_queued_request_whose_body_keeps_coming_pauses_reading_until_its_turn():
    bound = ServerConfig().pipeline_buffer_bytes
    size = 3 * bound
    conn, wire, bodies = queued_upload(size)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: %d\r\n\r\n" % size)
    piece = b"x" * (bound // 2)
    sent = 0
    while wire.reading != ["paused"]:  # kept while queued, up to the bound
        conn.data_received(piece)
        sent += len(piece)
        assert sent <= bound + len(piece)
    await settle()  # its turn: parsed, reading resumed for the rest of the body
    assert wire.reading == ["paused", "resumed"]
    conn.data_received(b"x" * (size - sent))
    await settle()
    assert bodies == [size]


async def test_a_queued_first_read_past_the_bound_pauses_reading_at_once():
    size = 2 * ServerConfig().pipeline_buffer_bytes
    conn, wire, bodies = queued_upload(size)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: %d\r\n\r\n" % size
                       + b"x" * size)  # head and whole body in one read
    assert wire.reading == ["paused"]
    await settle()
    assert wire.reading == ["paused", "resumed"] and bodies == [size]


def hold_the_line(until: Callable[[], bool]) -> None:
    """Keep the pacer's line busy (a callback that queues itself again each turn) until
    ``until()``: every head a real socket brings meanwhile is queued unparsed
    (``H1Connection._queue``)."""
    pacer = pacer_for(asyncio.get_running_loop())

    def again() -> None:
        if not until():
            pacer.later(again)

    pacer.later(again)


async def test_a_queued_head_that_cannot_be_parsed_is_still_answered_and_closed():
    """Its parse runs in the pacer's turn: a parse that raised left the connection with no
    timer and no answer, held open for as long as its client liked."""
    async with serve(head_timeout_s=0.5) as server:
        hold_the_line(lambda: any(conn.state == "QUEUED" for conn in server.conns))
        async with connect(server.port) as (reader, writer):
            writer.write(b"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: "
                         + b"9" * 5000 + b"\r\n\r\n")
            (answer,) = parse_responses(await read_to_eof(reader))
    assert answer.status == 413 and server.calls == []
