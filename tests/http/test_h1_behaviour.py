"""HTTP/1.1 listener behaviour on real loopback sockets: keep-alive, pipelining,
100-continue, request bodies, connection close, timeouts, backpressure and cancellation."""
from __future__ import annotations

import asyncio
import hashlib
import re
import time

import pytest

from h1wire import (connect, decode_chunked, echo_length, is_openai_error, parse_responses,
                    read_to_eof, serve)
from harness import wait_for

pytestmark = pytest.mark.anyio

H = b"Host: example.com\r\n"


def get(path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + H + extra + b"\r\n"


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0):
    """One Content-Length response, without waiting for the connection to close."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"\r\ncontent-length: (\d+)\r\n", head)
        assert length, head
        body = await reader.readexactly(int(length.group(1)))
    (resp,) = parse_responses(head + body, eof=False)
    return resp


async def assert_open(reader: asyncio.StreamReader, wait: float = 0.2) -> None:
    """Nothing arrives and the connection is not closed within ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            data = await reader.read(1)
            pytest.fail(f"unexpected {data!r} (b'' means closed)")


# ---- keep-alive, pipelining, bodies -----------------------------------------------------


async def test_keep_alive_serves_two_requests_on_one_connection():
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(post(b"/one", b"abc"))
            first = await read_response(reader)
            await assert_open(reader)
            writer.write(post(b"/two", b"hello"))
            second = await read_response(reader)
            assert b"connection" not in first.headers
        assert (first.status, first.body) == (200, b"/one 3")
        assert (second.status, second.body) == (200, b"/two 5")
        assert [c.path for c in server.calls] == ["/one", "/two"]


async def test_pipelined_requests_are_answered_in_order():
    async def slow_first(req, sink):
        if req.path == "/slow":
            await asyncio.sleep(0.1)  # the second request must still wait its turn
        body = b"%s %d" % (req.path.encode(), len(req.body))
        sink.start(200, [], len(body))
        sink.write(body)
        sink.end()

    async with serve(slow_first) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(post(b"/slow", b"abc") + post(b"/fast", b"hello")
                         + get(b"/last", b"Connection: close\r\n"))
            data = await read_to_eof(reader)
        assert [r.body for r in parse_responses(data)] == [b"/slow 3", b"/fast 5", b"/last 0"]
        assert [c.body for c in server.calls] == [b"abc", b"hello", b""]


async def test_pipelined_request_split_across_writes_during_a_response():
    gate = asyncio.Event()

    async def gated(req, sink):
        if req.path == "/a":
            await gate.wait()
        sink.start(200, [], len(req.path))
        sink.write(req.path.encode())
        sink.end()

    async with serve(gated) as server:
        async with connect(server.port) as (reader, writer):
            req_b = get(b"/b")
            writer.write(get(b"/a") + req_b[:10])
            await asyncio.sleep(0.05)
            writer.write(req_b[10:] + get(b"/c", b"Connection: close\r\n")[:5])
            await asyncio.sleep(0.05)
            gate.set()
            writer.write(get(b"/c", b"Connection: close\r\n")[5:])
            data = await read_to_eof(reader)
        assert [r.body for r in parse_responses(data)] == [b"/a", b"/b", b"/c"]
        assert len(server.calls) == 3


async def test_bytes_read_in_the_turn_a_response_ends_keep_the_pipelined_heads_apart():
    """A response's end leaves the pipelined head it held for the next turn to parse. Bytes
    read before that turn were scanned for a head end only past the held ones, so the held
    head's end was missed and the next two heads read as one: the second's fields framed the
    first's body, and the second request was never answered."""
    ended, answer_first = asyncio.Event(), []

    async def first_answered_by_the_test(req, sink):
        if req.path == "/1":
            answer_first.append(sink)
            await ended.wait()
        else:
            await echo_length(req, sink)

    async with serve(first_answered_by_the_test) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/1"))
            await wait_for(lambda: answer_first)
            writer.write(get(b"/2"))
            (conn,) = server.conns
            await wait_for(lambda: conn._buf)  # /2 read, held while /1 is answered
            answer_first[0].respond(200, [], b"/1")  # an end (the relay's: a provider read) ...
            writer.write(post(b"/3", b"hello", b"Connection: close\r\n"))  # ... then a read
            ended.set()
            assert [(await read_response(reader)).body for _ in "12"] == [b"/1", b"/2 0"]
            assert (await read_response(reader)).body == b"/3 5"
            assert await read_to_eof(reader) == b""  # /3's Connection: close
        assert [(c.path, c.body) for c in server.calls] == [
            ("/1", b""), ("/2", b""), ("/3", b"hello")]


async def test_expect_100_continue_gets_100_before_the_body():
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"POST /up HTTP/1.1\r\n" + H
                         + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            assert server.calls == []
            writer.write(b"hello")
            final = await read_response(reader)
        assert (final.status, final.body) == (200, b"/up 5")
        assert server.calls[0].body == b"hello"


async def test_chunked_request_body_arrives_intact():
    payload = bytes(range(256)) * 40
    wire = b"".join(b"%x;ext=v\r\n%s\r\n" % (n, payload[i:i + n])
                    for i, n in ((0, 1), (1, 4000), (4001, 6239))) + b"0\r\nX-Trailer: t\r\n\r\n"
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(wire), 777):  # split mid chunk-header and mid data
                writer.write(wire[i:i + 777])
                await writer.drain()
                await asyncio.sleep(0)
            resp = await read_response(reader)
        assert resp.body == b"/c %d" % len(payload)
        assert server.calls[0].body == payload


async def test_content_length_request_body_arrives_intact():
    payload = hashlib.sha256(b"seed").digest() * 3000  # 96000 bytes, binary
    async with serve(max_body_bytes=100_000) as server:
        async with connect(server.port) as (reader, writer):
            raw = post(b"/cl", payload)
            writer.write(raw[:70])
            await asyncio.sleep(0.01)
            writer.write(raw[70:])
            resp = await read_response(reader)
        assert resp.body == b"/cl 96000"
        assert server.calls[0].body == payload
        assert server.calls[0].header(b"content-length") == b"96000"


async def count_upload(req, sink) -> None:
    """Answer with the number of body bytes read from the upload's stream."""
    n = 0
    while data := await req.body_stream.read():
        n += len(data)
    sink.respond(200, [], b"%d" % n)


@pytest.mark.parametrize("ows", [b" ", b"", b"\t", b"  "])
async def test_an_upload_past_max_body_streams_whatever_space_is_before_its_type(ows):
    """An upload is not held whole: its own limit applies (bodystream.py), not
    ``max_body_bytes``. The field's optional whitespace is any run of spaces and tabs: only
    one space used to count, and the other spellings got 413."""
    body = b"x" * 3000
    async with serve(count_upload, max_body_bytes=1000) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(post(b"/up", body, b"Content-Type:" + ows
                              + b"multipart/form-data; boundary=b\r\n"))
            resp = await read_response(reader)
        assert (resp.status, resp.body) == (200, b"3000")


async def test_http10_request_is_answered_and_closed():
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"GET /old HTTP/1.0\r\n\r\n")  # no Host needed in 1.0
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert (resp.status, resp.body) == (200, b"/old 0")
        assert resp.headers[b"connection"] == b"close"
        assert server.calls[0].http_version == "1.0"


async def test_http10_streamed_response_is_close_delimited():
    async def stream(req, sink):
        sink.start(200, [], None)
        sink.write(b"part1-")
        sink.write(b"part2")
        sink.end()

    async with serve(stream) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert b"transfer-encoding" not in resp.headers
        assert resp.body == b"part1-part2"


async def test_connection_close_is_honoured():
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/x", b"Connection: keep-alive, Close\r\n") + get(b"/never"))
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert resp.status == 200 and resp.headers[b"connection"] == b"close"
        assert [c.path for c in server.calls] == ["/x"]


async def test_streamed_response_on_closing_connection_is_still_chunked():
    async def stream(req, sink):
        sink.start(200, [], None)
        sink.write(b"a" * 10)
        sink.end()

    async with serve(stream) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/", b"Connection: close\r\n"))
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert resp.headers[b"transfer-encoding"] == b"chunked"
        assert resp.body == b"a" * 10


async def test_head_request_gets_no_body():
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"HEAD /h HTTP/1.1\r\n" + H + b"\r\n" + get(b"/g"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"content-length: 4\r\n" in head
            resp = await read_response(reader)  # the next response follows immediately
        assert resp.body == b"/g 0"


async def test_handler_error_becomes_openai_error_and_connection_stays_usable():
    from kraken.errors import NotFound

    async def handler(req, sink):
        if req.path == "/missing":
            raise NotFound("no such thing")
        if req.path == "/boom":
            raise ValueError("bug")
        sink.start(200, [], 2)
        sink.write(b"ok")
        sink.end()

    async with serve(handler) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/missing") + get(b"/boom") + get(b"/ok"))
            missing = await read_response(reader)
            boom = await read_response(reader)
            ok = await read_response(reader)
        assert is_openai_error(missing, 404) and missing.json()["error"]["code"] == "not_found"
        assert is_openai_error(boom, 500) and "bug" not in boom.body.decode()
        assert ok.body == b"ok"


async def test_handler_returning_without_a_response_gets_500():
    async def forgetful(req, sink):
        return None

    async with serve(forgetful) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/"))
            resp = await read_response(reader)
        assert is_openai_error(resp, 500)


async def test_handler_running_on_after_end_does_not_lose_the_next_task():
    """The task of the request in flight stays visible (drain waits on it) even when the
    previous handler returns only after the next request was dispatched."""
    release = asyncio.Event()
    second_started = asyncio.Event()

    async def handler(req, sink):
        if req.path == "/first":
            sink.start(200, [], 0)
            sink.end()
            await release.wait()  # still running after its response ended
        else:
            second_started.set()
            await asyncio.sleep(30)

    async with serve(handler) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/first") + get(b"/second"))
            await asyncio.wait_for(second_started.wait(), 5)
            (conn,) = server.conns
            second_task = conn.task
            assert second_task is not None
            release.set()
            await asyncio.sleep(0.05)
            assert conn.task is second_task and not second_task.done()


# ---- timeouts ---------------------------------------------------------------------------

TIMEOUTS = dict(head_timeout_s=0.3, body_idle_timeout_s=0.3, keepalive_timeout_s=0.3)


async def test_half_a_head_gets_408_at_the_head_timeout():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            t0 = time.monotonic()
            writer.write(b"GET / HTTP/1.1\r\nHost: exa")
            data = await read_to_eof(reader, timeout=5)
            elapsed = time.monotonic() - t0
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 408)
        assert 0.25 <= elapsed < 3
        assert server.calls == []


async def test_idle_body_gets_408_at_the_body_idle_timeout():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(post(b"/", b"0123456789")[:-7])  # 3 of 10 body bytes
            data = await read_to_eof(reader, timeout=5)
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 408)
        assert server.calls == []


async def test_body_idle_timeout_is_per_read_not_per_body():
    """A slow body that keeps arriving is not cut at the idle timeout."""
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\n")
            for byte in b"abcdef":
                await asyncio.sleep(0.1)
                writer.write(bytes([byte]))
            resp = await read_response(reader)
        assert resp.body == b"/ 6"


async def test_idle_keep_alive_connection_is_closed():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/"))
            await read_response(reader)
            t0 = time.monotonic()
            rest = await read_to_eof(reader, timeout=5)
            elapsed = time.monotonic() - t0
        assert rest == b""  # closed silently, no 408 for an idle connection
        assert 0.25 <= elapsed < 3


async def test_connection_that_never_sends_is_closed():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            assert await read_to_eof(reader, timeout=5) == b""


async def test_slowloris_is_cut_at_the_head_timeout_while_still_sending():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):
            t0 = time.monotonic()

            async def trickle():  # a header line every 20 ms, never the blank line
                writer.write(b"GET / HTTP/1.1\r\n" + H)
                for i in range(1000):
                    writer.write(b"X-%d: y\r\n" % i)
                    await asyncio.sleep(0.02)

            sender = asyncio.create_task(trickle())
            try:
                data = await read_to_eof(reader, timeout=5)
            finally:
                sender.cancel()
            elapsed = time.monotonic() - t0
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 408)
        assert 0.25 <= elapsed < 2


async def test_endless_empty_lines_do_not_extend_the_head_timeout():
    async with serve(**TIMEOUTS) as server:
        async with connect(server.port) as (reader, writer):

            async def trickle():
                for _ in range(1000):
                    writer.write(b"\r\n")
                    await asyncio.sleep(0.02)

            sender = asyncio.create_task(trickle())
            try:
                await read_to_eof(reader, timeout=3)
            finally:
                sender.cancel()


# ---- backpressure -----------------------------------------------------------------------


class CountingProducer:
    """Stands in for an upstream connection: counts pause/resume calls."""

    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0
        self.running = asyncio.Event()
        self.running.set()

    def pause_reading(self) -> None:
        self.pauses += 1
        self.running.clear()

    def resume_reading(self) -> None:
        self.resumes += 1
        self.running.set()


async def test_slow_client_pauses_the_producer_and_resumes_it_when_read():
    producer = CountingProducer()
    written: list[bytes] = []
    finished = asyncio.Event()

    async def stream(req, sink):
        sink.start(200, [(b"content-type", b"application/octet-stream")], None)
        sink.set_producer(producer)
        for i in range(256):  # 16 MiB in 64 KiB chunks, each different
            await producer.running.wait()  # a paused producer stops producing
            chunk = hashlib.sha256(b"%d" % i).digest() * 2048
            written.append(chunk)
            sink.write(chunk)
            await asyncio.sleep(0)
        sink.set_producer(None)
        sink.end()
        finished.set()

    async with serve(stream) as server:
        async with connect(server.port, rcvbuf=16384) as (reader, writer):
            writer.write(get(b"/stream", b"Connection: close\r\n"))
            async with asyncio.timeout(10):
                while producer.pauses == 0:
                    await asyncio.sleep(0.01)
            assert producer.resumes == 0  # the client has not read anything yet
            assert not finished.is_set()
            data = await read_to_eof(reader, timeout=30)
        assert finished.is_set()
        assert producer.resumes >= 1
        (resp,) = parse_responses(data)
        assert resp.headers[b"transfer-encoding"] == b"chunked"
        assert decode_chunked(resp.raw_body) == b"".join(written)
        assert len(resp.body) == 256 * 65536


async def test_producer_registered_while_paused_is_paused_at_once():
    producer = CountingProducer()
    first = CountingProducer()
    swapped = asyncio.Event()

    async def stream(req, sink):
        sink.start(200, [], None)
        sink.set_producer(first)
        while first.pauses == 0:
            sink.write(b"z" * 65536)
            await asyncio.sleep(0)
        sink.set_producer(producer)  # e.g. a fallback producer after a retry
        swapped.set()
        await producer.running.wait()
        sink.end()

    async with serve(stream) as server:
        async with connect(server.port, rcvbuf=16384) as (reader, writer):
            writer.write(get(b"/", b"Connection: close\r\n"))
            await asyncio.wait_for(swapped.wait(), 10)
            assert producer.pauses == 1
            data = await read_to_eof(reader, timeout=30)
        assert producer.resumes >= 1
        assert parse_responses(data)[0].status == 200


# ---- cancellation -----------------------------------------------------------------------


async def test_client_disconnect_cancels_the_handler():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hanging(req, sink):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve(hanging) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/"))
            await asyncio.wait_for(started.wait(), 5)
        # the client's socket is closed here
        await asyncio.wait_for(cancelled.wait(), 5)
        async with asyncio.timeout(5):
            while server.conns:
                await asyncio.sleep(0.01)


async def test_client_disconnect_mid_stream_cancels_the_handler():
    cancelled = asyncio.Event()
    sink_seen = []

    async def streaming(req, sink):
        sink_seen.append(sink)
        sink.start(200, [], None)
        try:
            while True:
                sink.write(b"data: x\n\n")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve(streaming) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/"))
            await asyncio.wait_for(reader.readuntil(b"data: x\n\n"), 5)
        await asyncio.wait_for(cancelled.wait(), 5)
        assert sink_seen[0].disconnected


async def test_crlf_after_a_body_keeps_the_keep_alive_timeout():
    """An extra CRLF after a POST body (RFC 9112 §2.2) is not the start of a slow head."""
    async with serve(head_timeout_s=0.2, keepalive_timeout_s=5.0) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(post(b"/one", b"abc") + b"\r\n")
            await read_response(reader)
            await assert_open(reader, wait=0.6)  # three head timeouts later: still open
            writer.write(get(b"/two"))
            second = await read_response(reader)
        assert second.body == b"/two 0"


async def test_half_a_head_after_a_keep_alive_answer_gets_408_at_the_head_timeout():
    """The head timeout (not the longer keep-alive one) runs once a next head has begun."""
    async with serve(head_timeout_s=0.3, keepalive_timeout_s=30.0) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/one"))
            await read_response(reader)
            t0 = time.monotonic()
            writer.write(b"GET /two HTTP/1.1\r\nHost: exa")
            data = await read_to_eof(reader, timeout=5)
            elapsed = time.monotonic() - t0
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 408)
        assert 0.25 <= elapsed < 3
        assert [req.path for req in server.calls] == ["/one"]


async def test_whole_heads_on_a_keep_alive_connection_keep_the_keep_alive_timeout():
    """Answered requests leave the connection to the keep-alive timeout, not the head one."""
    async with serve(head_timeout_s=0.2, keepalive_timeout_s=5.0) as server:
        async with connect(server.port) as (reader, writer):
            for path in (b"/one", b"/two"):
                writer.write(get(path))
                await read_response(reader)
            await assert_open(reader, wait=0.6)  # three head timeouts later: still open
            writer.write(get(b"/three"))
            third = await read_response(reader)
        assert third.body == b"/three 0"


async def test_each_request_runs_in_a_named_task_of_its_own():
    """The handler runs in a task of its own per request, named as Kraken's (not "Task-<n>")."""
    seen = []

    async def naming(req, sink):
        task = asyncio.current_task()
        seen.append((task, task.get_name()))
        sink.respond(200, [(b"content-type", b"text/plain")], b"ok")

    async with serve(naming) as server:
        async with connect(server.port) as (reader, writer):
            for _ in range(2):
                writer.write(get(b"/"))
                assert (await read_response(reader)).body == b"ok"
    assert [name for _, name in seen] == ["kraken-h1-request"] * 2
    assert seen[0][0] is not seen[1][0]


class _CountingLoop:
    """The connection's loop as its deadline sees it, counting the timers it schedules."""

    def __init__(self, loop):
        self._loop, self.timers = loop, 0

    def time(self):
        return self._loop.time()

    def call_at(self, when, callback):
        self.timers += 1
        return self._loop.call_at(when, callback)


async def test_requests_on_a_kept_alive_connection_reuse_its_timer():
    """After the first answer, a request's dispatch disarms the keep-alive timer without
    dropping it, and the next keep-alive wait re-arms that same timer: no timer a request."""
    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/one"))
            await read_response(reader)
            (conn,) = server.conns
            counting = conn._deadline._loop = _CountingLoop(conn._deadline._loop)
            for path in (b"/two", b"/three", b"/four"):
                writer.write(get(path))
                assert (await read_response(reader)).body == path + b" 0"
            assert counting.timers == 0


async def test_a_request_outlasting_the_keep_alive_timeout_is_answered_and_kept_open():
    """The kept timer fires during a request into nothing (disarmed); the connection is
    closed only by the keep-alive wait after the answer."""
    async def slow(req, sink):
        if req.path == "/slow":
            await asyncio.sleep(0.5)  # longer than the keep-alive timeout: the point of the test
        await echo_length(req, sink)

    async with serve(slow, keepalive_timeout_s=0.2) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(get(b"/one"))
            await read_response(reader)
            writer.write(get(b"/slow"))
            assert (await read_response(reader)).body == b"/slow 0"
            writer.write(get(b"/three"))
            assert (await read_response(reader)).body == b"/three 0"
            assert await read_to_eof(reader, timeout=5) == b""  # then idle: closed
