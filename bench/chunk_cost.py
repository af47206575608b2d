"""Per-chunk CPU cost of Kraken's relay path, without sockets.

One provider SSE event goes: the provider connection's read (upstream/connection.py) → the
relay's fast read of a whole plain chunk (gateway/relay.py), or else chunked-transfer decoding
(upstream/response.py) → relay (ttfb stamp, SSE tap for usage) → HTTP/1.1 chunk framing
(http/h1exchange.py) → transport.write. Here the transports are in-memory, so the figure is Kraken's own
Python work per chunk; the write syscall comes on top (see bench/run.py for end to end).

    .venv/bin/python bench/chunk_cost.py [--chunks 200000]
    .venv/bin/python bench/chunk_cost.py --requests 5000   # also: one request's HTTP/1.1 server side
    .venv/bin/python bench/chunk_cost.py --answers 3000    # also: a whole answer in one read
    .venv/bin/python bench/chunk_cost.py --connections 5000  # also: a new connection's first request

``--requests N`` adds the fixed per-request cost of the client side of HTTP/1.1 (head parse and
checks, exchange, handler task, response head and write) on the same in-memory transport: a
bench-like request, a handler that answers at once; the minimum of 5 rounds of N.

``--connections N`` adds the cost of a new connection with one request, as the cleartext listener
makes it (``listener.cleartext_factory``: HTTP/2 prior knowledge allowed, the per-address limiter
with the peer a trusted proxy, as bench/run.py configures Kraken; ``--via-selector``: through the
``ProtocolSelector`` a TLS listener uses), its first read holding the whole head and body, the
answer, then the client's close; the minimum of 7 rounds of N, CPU per connection.

``--answers N`` times a whole streamed answer arriving in one provider read, as the mock
(``kraken.mock --chunks 20``, no chunk delay) sends it: head, 24 chunks (role, 20 pieces, finish,
usage, [DONE]) and the last chunk in one write. From the read to the response's end written
(the record is not made here); the median of N answers, each with a fresh request and relay.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial
from typing import Callable

from kraken.config import ProviderConfig, ServerConfig
from kraken.gateway.call import Call
from kraken.gateway.relay import Relay
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.h1 import H1Connection
from kraken.http.listener import ProtocolSelector, cleartext_factory
from kraken.mock.http1 import frame as mock_frame, response_head
from kraken.mock.openai_mock import build_stream, plan_chat
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.connection import UpstreamConnection
from kraken.upstream.response import ResponseParser

EVENT = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
         b'"choices":[{"index":0,"delta":{"content":" tok42"},"finish_reason":null}],"usage":null}\n\n')


REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"Content-Type: application/json\r\nContent-Length: 64\r\n"
           b"Authorization: Bearer kr_test_demo_krakendemokeyfordocs0000\r\n"
           b"User-Agent: OpenAI/Python 1.40.0\r\nAccept: application/json\r\n"
           b"Connection: keep-alive\r\n\r\n"
           b'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}')


class NullTransport:
    """Accepts writes like a socket transport with an empty buffer."""

    written = 0
    protocol = None

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol  # a provider connection's C pipe (kraken._speedups), if built

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class SwitchableTransport(NullTransport):
    """A ``NullTransport`` the selector can hand to the protocol it chose, and close."""

    protocol = None
    closing = False

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write_eof(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def request_sink() -> tuple[H1Connection, object]:
    """A connection with one request in flight, and that request's sink (its handler
    waits until the connection is lost)."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    async def handler(req, sink) -> None:
        got.set_result(sink)
        await loop.create_future()

    conn = H1Connection(handler, ServerConfig(), None)
    conn.connection_made(NullTransport())
    conn.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
                       b"Content-Length: 0\r\n\r\n")
    return conn, await got


def relay_for(sink, family) -> tuple[Relay, ResponseParser]:
    """A streamed chat call's relay to ``sink`` (usage hidden, as for a client that did not ask
    for it) and its parser, wired as ``UpstreamConnection.send`` wires them."""
    call = Call(time.perf_counter_ns(), "chat_completions")
    call.provider = "p"
    relay = Relay(call, sink, family, stream=True, hide_usage=True, on_complete=lambda: None)
    parser = ResponseParser(relay)
    if hasattr(parser, "on_chunk"):
        parser.on_chunk = relay.on_chunk
    return relay, parser


def family_p() -> OpenAICompat:
    return OpenAICompat(ProviderConfig(name="p", base_url="http://x/v1"), "/v1", "x")


def provider_connection(relay: Relay) -> tuple[UpstreamConnection, Callable[[bytes], object]]:
    """A provider connection on an in-memory transport with ``relay``'s exchange started, and
    where its reads go: the transport's protocol (the C pipe, where built) or the connection."""
    upstream = UpstreamConnection("http://bench", 300.0)
    transport = NullTransport()
    upstream.connection_made(transport)
    upstream.send("POST", "/v1/chat/completions", [(b"host", b"bench")], b"{}", relay)
    return upstream, (transport.protocol or upstream).data_received


async def measure(chunks: int, per_read: int) -> float:
    conn, sink = await request_sink()
    relay, _ = relay_for(sink, family_p())
    upstream, receive = provider_connection(relay)
    receive(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    read = frame * per_read  # what one socket read carries
    reads = chunks // per_read
    t0 = time.perf_counter()
    for _ in range(reads):
        receive(read)
    elapsed = time.perf_counter() - t0
    upstream.abort()
    conn.connection_lost(None)
    return elapsed / (reads * per_read) * 1e6


def mock_answer() -> bytes:
    """The mock's whole answer to a streamed chat request with usage asked for (as Kraken asks)."""
    req = {"model": "mock-gpt", "stream": True, "stream_options": {"include_usage": True},
           "messages": [{"role": "user", "content": "hi"}]}
    events = build_stream(plan_chat(req, {}, 20, 12))
    head = response_head(200, b"text/event-stream; charset=utf-8", None, False, False)
    return head + b"".join(mock_frame(e) for e in events) + b"0\r\n\r\n"


async def whole_answer_cost(answers: int) -> float:
    """Median µs from a whole answer's read to its response's end written (see the module doc)."""
    family, read = family_p(), mock_answer()
    perf = time.perf_counter_ns
    times = []
    for _ in range(answers):
        conn, sink = await request_sink()
        relay, parser = relay_for(sink, family)
        t0 = perf()
        parser.feed(read)
        relay.on_read_end()
        times.append(perf() - t0)
        assert relay.state == "done"
        conn.connection_lost(None)
    return sorted(times)[len(times) // 2] / 1000


async def request_cost(requests: int) -> float:
    """µs of CPU per request for the HTTP/1.1 server side alone (see the module doc)."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future | None = None

    async def handler(req, sink) -> None:
        sink.respond(200, [(b"content-type", b"application/json")], b'{"ok":true}')
        answered.set_result(None)

    conn = H1Connection(handler, ServerConfig(), None)
    conn.connection_made(NullTransport())
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(requests):
            answered = loop.create_future()
            conn.data_received(REQUEST)
            await answered
            await asyncio.sleep(0)  # the handler's task ends; the connection is idle again
        rounds.append((time.process_time() - t0) / requests * 1e6)
    conn.connection_lost(None)
    return min(rounds)


async def connection_cost(connections: int, via_selector: bool = False) -> float:
    """µs of CPU per new connection and its one request (see the module doc)."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future | None = None

    async def handler(req, sink) -> None:
        sink.respond(200, [(b"content-type", b"application/json")], b'{"ok":true}')
        answered.set_result(None)

    cfg, tracker = ServerConfig(), set()
    limiter = ConnectionLimiter(cfg.max_connections_per_ip, exempt=["127.0.0.1"])
    factory = (partial(ProtocolSelector, handler, cfg, tracker, h2c=True, always_headers=[],
                       limiter=limiter, loop=loop) if via_selector else
               cleartext_factory(handler, cfg, tracker, h2c=True, limiter=limiter, loop=loop))
    rounds = []
    for _ in range(7):
        t0 = time.process_time()
        for _ in range(connections):
            answered = loop.create_future()
            first = factory()
            transport = SwitchableTransport()
            transport.protocol = first
            first.connection_made(transport)
            transport.protocol.data_received(REQUEST)  # the selector, if any, chose at once
            await answered
            await asyncio.sleep(0)  # the handler's task ends
            transport.protocol.connection_lost(None)
        rounds.append((time.process_time() - t0) / connections * 1e6)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=0,
                        help="also time N requests' HTTP/1.1 server side (0 = skip)")
    parser.add_argument("--answers", type=int, default=0,
                        help="also time N whole answers, each in one read (0 = skip)")
    parser.add_argument("--connections", type=int, default=0,
                        help="also time N new connections with one request each (0 = skip)")
    parser.add_argument("--via-selector", action="store_true",
                        help="--connections through the ProtocolSelector a TLS listener uses")
    args = parser.parse_args()
    for per_read in (1, 4, 20) if args.chunks else ():  # --chunks 0: the other figures only
        us = asyncio.run(measure(args.chunks, per_read))
        print(f"{per_read:>3} event(s) per provider read: {us:6.2f} µs of Kraken CPU per chunk")
    if args.answers:
        us = asyncio.run(whole_answer_cost(args.answers))
        print(f"a whole answer (head, 24 chunks, end) in one read: {us:6.2f} µs to its end written")
    if args.requests:
        us = asyncio.run(request_cost(args.requests))
        print(f"one request, HTTP/1.1 server side (head to answer written): {us:6.2f} µs of CPU")
    if args.connections:
        import uvloop  # as Kraken serves: the loop's timers and handles are part of the cost

        us = uvloop.run(connection_cost(args.connections, args.via_selector))
        print(f"a new connection and its one request (accept to close): {us:6.2f} µs of CPU")


if __name__ == "__main__":
    main()
