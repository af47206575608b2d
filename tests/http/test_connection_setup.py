"""What a new inbound connection is given and makes before its first request: the headers
on every response, the loop it runs on, the timers it holds (in memory, one ``Wire`` each)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from h1wire import parse_responses
from kraken.config import ServerConfig
from kraken.http import connlimit
from kraken.http.connlimit import ConnectionLimiter, address_key
from kraken.http.h1 import H2_PREFACE, H1Connection
from kraken.http.h1body import ChunkedBody, FixedBody
from kraken.http.h1exchange import H1Exchange
from kraken.http.h2 import H2Connection
from kraken.http.listener import ProtocolSelector, cleartext_factory
from test_respond import Wire, respond, settle

pytestmark = pytest.mark.anyio

GET = b"GET / HTTP/1.1\r\nHost: k\r\n\r\n"
HSTS = (b"strict-transport-security", b"max-age=63072000")


class SwitchableWire(Wire):
    """A ``Wire`` a ``ProtocolSelector`` can hand to the protocol it chose."""

    protocol: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.closed.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture(params=["selector", "cleartext"])
def via(request) -> str:
    """A TLS listener's first protocol (``ProtocolSelector``, here on cleartext), or a cleartext
    listener's (``cleartext_factory``: an ``H1Connection`` from the start)."""
    return request.param


def selected(limiter: ConnectionLimiter | None = None, tracker: set | None = None,
             via: str = "selector", **cfg: Any) -> SwitchableWire:
    """A cleartext connection accepted by a listener allowing HTTP/2 prior knowledge."""
    tracker = set() if tracker is None else tracker
    wire = SwitchableWire()
    if via == "cleartext":
        wire.protocol = first = cleartext_factory(respond, ServerConfig(**cfg), tracker,
                                                  h2c=True, limiter=limiter)()
    else:
        first = ProtocolSelector(respond, ServerConfig(**cfg), tracker, h2c=True, limiter=limiter)
    first.connection_made(wire)  # type: ignore[arg-type]
    # HTTP/1.1 from the start: its head timer covers the undecided connection
    assert isinstance(wire.protocol, H1Connection)
    return wire


def heads(wire: Wire) -> list[dict[bytes, bytes]]:
    return [resp.headers for resp in parse_responses(b"".join(wire.writes), eof=False)]


async def test_always_headers_are_on_every_response_of_the_connection():
    conn = H1Connection(respond, ServerConfig(), always_headers=[HSTS, (b"x-a", b"1")])
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    for _ in range(2):
        conn.data_received(GET)
        await settle()
    assert [(h[HSTS[0]], h[b"x-a"]) for h in heads(wire)] == [(HSTS[1], b"1")] * 2
    conn.connection_lost(None)


@pytest.mark.parametrize("always", [None, []])
async def test_no_always_headers_adds_no_header_line(always):
    conn = H1Connection(respond, ServerConfig(), always_headers=always)
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(GET)
    await settle()
    (head,) = heads(wire)
    assert sorted(head) == [b"content-length", b"content-type", b"date", b"server"]
    conn.connection_lost(None)


@pytest.mark.parametrize("h2c", [True, False])
async def test_the_selector_hands_its_loop_and_headers_to_the_http1_connection(h2c):
    loop = asyncio.get_running_loop()
    selector = ProtocolSelector(respond, ServerConfig(), set(), h2c=h2c, always_headers=[HSTS],
                                limiter=ConnectionLimiter(4))
    wire = SwitchableWire()
    selector.connection_made(wire)  # type: ignore[arg-type]
    wire.protocol.data_received(GET)  # the selector chose at once
    await settle()
    conn = wire.protocol
    assert isinstance(conn, H1Connection) and conn.loop is loop
    (head,) = heads(wire)
    assert head[HSTS[0]] == HSTS[1]
    conn.connection_lost(None)


async def test_a_connection_never_paused_makes_no_stall_timer():
    conn = H1Connection(respond, ServerConfig())
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.data_received(GET)
    await settle()
    assert conn._stall_deadline is None
    conn.pause_writing()  # the client stops reading: the stall deadline runs
    assert conn._stall.timeout == ServerConfig().send_stall_timeout_s > 0
    conn.resume_writing()
    assert conn._stall.timeout == 0
    conn.connection_lost(None)
    conn.pause_writing()  # gone: nothing is armed any more
    assert conn._stall.timeout == 0


async def test_a_connection_gone_before_any_pause_arms_no_stall_timer():
    conn = H1Connection(respond, ServerConfig())
    conn.connection_made(Wire())  # type: ignore[arg-type]
    conn.connection_lost(None)
    conn.pause_writing()
    assert conn._stall.timeout == 0


@pytest.mark.parametrize("cut", [1, 8, len(H2_PREFACE) - 1, len(H2_PREFACE)])
async def test_the_http2_preface_in_pieces_hands_the_connection_to_http2(cut, via):
    limiter, tracker = ConnectionLimiter(4), set()
    wire = selected(limiter, tracker, via)
    first = wire.protocol
    assert isinstance(first, H1Connection) and tracker == {first}
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
    first.data_received(H2_PREFACE[:cut])
    if cut < len(H2_PREFACE):
        assert wire.protocol is first and not wire.writes  # undecided: nothing answered
        first.data_received(H2_PREFACE[cut:] + settings)
    else:  # the whole preface: handed over at once
        wire.protocol.data_received(settings)
    h2 = wire.protocol
    assert isinstance(h2, H2Connection) and tracker == {h2}  # the HTTP/1.1 side is gone
    assert wire.writes and limiter.open_from("127.0.0.1") == 1  # HTTP/2 SETTINGS; counted once
    h2.connection_lost(None)
    assert limiter.open_from("127.0.0.1") == 0 and not tracker


async def test_first_bytes_that_leave_the_preface_are_read_as_http1(via):
    wire = selected(via=via)
    conn = wire.protocol
    conn.data_received(b"P")  # could be the preface
    conn.data_received(b"OST / HTTP/1.1\r\nHost: k\r\nContent-Length: 2\r\n\r\nhi")
    await settle()
    assert wire.protocol is conn
    (resp,) = parse_responses(b"".join(wire.writes), eof=False)
    assert resp.status == 200


@pytest.mark.parametrize("sent", [b"", b"PRI * HTTP/2.0\r\n"])
async def test_an_undecided_connection_is_closed_unanswered_at_the_head_timeout(sent, via):
    limiter = ConnectionLimiter(4)
    wire = selected(limiter, via=via, head_timeout_s=0.05)
    if sent:
        wire.protocol.data_received(sent)
    await asyncio.wait_for(wire.closed.wait(), 5)
    assert not wire.writes  # no 408: as before any protocol was chosen
    wire.protocol.connection_lost(None)
    assert limiter.open_from("127.0.0.1") == 0


TWO = (b"\r\nPOST /a HTTP/1.1\r\nHost: k\r\nContent-Length: 5\r\n\r\nhello"
       b"GET /b HTTP/1.1\r\nHost: k\r\n\r\n")
"""An empty line, a request with a body and a pipelined one, as one client might send them."""


async def echo(req: Any, sink: Any) -> None:
    sink.respond(200, [], req.path.encode() + b" " + req.body)


@pytest.mark.parametrize("cut", range(len(TWO) + 1))
async def test_requests_are_read_alike_wherever_the_reads_end(cut):
    """A read holding a whole head is parsed as it is, a part of one is kept: both give the
    same requests and answers."""
    conn = H1Connection(echo, ServerConfig())
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    for piece in (TWO[:cut], TWO[cut:]):
        if piece:
            conn.data_received(piece)
            await settle()
    await settle()
    bodies = [resp.body for resp in parse_responses(b"".join(wire.writes), eof=False)]
    assert bodies == [b"/a hello", b"/b "]
    conn.connection_lost(None)


async def record(req: Any, sink: Any) -> None:
    sink.respond(299 if req.path == "/odd" else 404, [(b"x-h", b"v")],
                 b"%s %s %d" % (req.method.encode(), req.http_version.encode(), len(req.body)))


@pytest.mark.parametrize("raw, line, body", [
    (b"GET / HTTP/1.1\r\nHost: k\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n", b"GET 1.1 0"),
    (b"PROPFIND /odd HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", b"HTTP/1.1 299 Unknown\r\n",
     b"PROPFIND 1.0 3"),
    (b"POST / HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
     b"HTTP/1.1 404 Not Found\r\n", b"POST 1.1 3"),
])
async def test_request_and_response_head_as_sent(raw, line, body):
    conn = H1Connection(record, ServerConfig(), always_headers=[HSTS])
    wire = Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(raw)
    await settle()
    data = b"".join(wire.writes)
    assert data.startswith(line + b"date: ")
    head, sent = data.split(b"\r\n\r\n", 1)
    names = [field.split(b":")[0] for field in head.split(b"\r\n")[1:]]
    assert names[:4] == [b"date", b"server", HSTS[0], b"x-h"] and sent == body
    conn.connection_lost(None)


@pytest.mark.parametrize("reads, size", [([b"abc"], 3), ([b"2\r\nab\r\n1\r\nc\r\n"], 3),
                                         ([b"2\r\nab\r\n", b"1\r\nc\r\n"], 3)])
async def test_an_exchange_counts_every_body_piece_of_a_read(reads, size):
    conn = H1Connection(record, ServerConfig())
    reader = FixedBody(3) if reads == [b"abc"] else ChunkedBody(1 << 20, 1 << 14)
    exchange = H1Exchange(conn, None, reader)
    for read in reads:
        exchange.receive(read)
    assert exchange.body_size == size and b"".join(exchange.body) == b"abc"


PEERS = ["192.0.2.1", "192.0.2.2", "10.1.2.3", "::ffff:192.0.2.1", "2001:db8:1:2::1",
         "2001:db8:1:2::ffff", "fe80::1%lo", "", "not an address", "::ffff:10.9.9.9"]


def test_a_limiter_gives_each_peer_its_key_again_from_memory():
    limiter = ConnectionLimiter(4, exempt=["10.0.0.0/8"])
    first = [limiter.key_of(peer) for peer in PEERS]
    assert first == [None if peer.endswith(("10.1.2.3", "10.9.9.9")) else address_key(peer)
                     for peer in PEERS]
    assert [limiter.key_of(peer) for peer in PEERS] == first  # remembered: the same answers
    assert ConnectionLimiter(4).key_of("10.1.2.3") == address_key("10.1.2.3")  # per limiter


def test_a_limiter_remembers_a_bounded_number_of_peers():
    limiter = ConnectionLimiter(4)
    for n in range(connlimit._KEYS_KEPT + 10):
        peer = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert limiter.key_of(peer) == address_key(peer)
    assert 0 < len(limiter._keys) <= connlimit._KEYS_KEPT
    assert limiter.key_of("192.0.2.9") == address_key("192.0.2.9")


async def test_a_cleartext_connection_over_the_cap_is_answered_and_handed_to_a_dropper():
    """Refused in its own connection_made: the minimal 503 and FIN, no tracker entry, no head
    timer left armed, and the client's bytes dropped until it closes."""
    limiter, tracker = ConnectionLimiter(1), set()
    factory = cleartext_factory(respond, ServerConfig(), tracker, limiter=limiter)
    kept, refused = SwitchableWire(), SwitchableWire()
    first, second = factory(), factory()
    kept.protocol, refused.protocol = first, second
    first.connection_made(kept)  # type: ignore[arg-type]
    second.connection_made(refused)  # type: ignore[arg-type]
    assert tracker == {first} and limiter.refused == 1 and limiter.open_from("127.0.0.1") == 1
    (resp,) = parse_responses(b"".join(refused.writes), eof=False)
    assert resp.status == 503 and resp.json()["error"]["code"] == "too_many_connections"
    dropper = refused.protocol
    assert not isinstance(dropper, H1Connection)
    assert second._deadline._handle is None  # no head timer for a connection it never served
    dropper.data_received(GET)  # dropped, not answered
    assert len(refused.writes) == 1
    dropper.connection_lost(None)
    first.connection_lost(None)
    assert limiter.open_from("127.0.0.1") == 0 and not tracker


async def test_a_trusted_proxy_is_never_counted_on_a_cleartext_listener():
    limiter = ConnectionLimiter(1, exempt=["127.0.0.1"])
    factory = cleartext_factory(respond, ServerConfig(), set(), limiter=limiter)
    conns = [factory() for _ in range(3)]
    for conn in conns:
        wire = SwitchableWire()
        wire.protocol = conn
        conn.connection_made(wire)  # type: ignore[arg-type]
        assert conn._on_lost is None  # nothing to release
    assert limiter.refused == 0 and len(limiter) == 0
    for conn in conns:
        conn.connection_lost(None)
