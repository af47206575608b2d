"""Outbound HTTP/2: multiplexing, per-stream flow control, cancellation, GOAWAY, fallback.

Real TLS sockets on loopback: the provider is ``h2_server.H2Provider`` with a trustme CA the
pool trusts through ``ssl_context`` (the production context plus that CA).
"""
from __future__ import annotations

import asyncio

import orjson
import pytest
import trustme
from h2.errors import ErrorCodes

from kraken.errors import UpstreamError, UpstreamTimeout
from kraken.upstream.connection import UpstreamConnection
from kraken.upstream.h2client import STREAM_WINDOW, H2Exchange
from kraken.upstream.pool import Origin, OriginPool, default_ssl_context
from h2_server import H2Provider
from harness import wait_for

pytestmark = pytest.mark.anyio

CA = trustme.CA()


def make_pool(provider: H2Provider, **kw) -> OriginPool:
    ctx = default_ssl_context()  # offers ALPN h2, http/1.1 like production
    CA.configure_trust(ctx)
    return OriginPool(Origin(provider.url), "h2test", ssl_context=ctx, **kw)


class Collect:
    """A ResponseHandler that keeps everything; ``on_first_data`` runs once, inside on_data."""

    def __init__(self, on_first_data=None):
        self.done = asyncio.get_running_loop().create_future()
        self.head = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.reads = 0
        self._first = on_first_data

    def on_head(self, status, headers):
        self.status, self.headers = status, headers
        self.head.set_result(None)

    def on_data(self, data):
        self.body += data
        if self._first is not None:
            first, self._first = self._first, None
            first()

    def on_end(self):
        self.done.set_result(None)

    def on_error(self, exc):
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: the test looks at ``done``
        self.done.set_exception(exc)

    def on_read_end(self):
        self.reads += 1


def request(pool: OriginPool, tag: str, *, stream: bool = True, **mock):
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "stream": stream, "mock": {"tag": tag, **mock}})
    headers = [(b"host", pool.origin.authority.encode()),
               (b"content-type", b"application/json"),
               (b"authorization", b"Bearer sk-test"),
               (b"connection", b"keep-alive"),
               (b"content-length", str(len(body)).encode())]
    return "/v1/chat/completions", headers, body


async def start(pool: OriginPool, tag: str, handler: Collect | None = None, **mock):
    conn = await pool.acquire()
    handler = handler or Collect()
    target, headers, body = request(pool, tag, **mock)
    conn.send("POST", target, headers, body, handler)
    return conn, handler


async def call(pool: OriginPool, tag: str, **mock) -> tuple[object, Collect]:
    conn, handler = await start(pool, tag, **mock)
    try:
        await handler.done
    finally:
        pool.release(conn)
    return conn, handler


async def test_tls_origin_negotiates_h2_and_translates_headers():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        conn, res = await call(pool, "one", stream=False)
        assert isinstance(conn, H2Exchange) and pool.protocol == "h2"
        assert res.status == 200 and orjson.loads(res.body)["id"] == "chatcmpl-one"
        assert all(name == name.lower() and not name.startswith(b":") for name, _ in res.headers)
        assert (b"content-type", b"application/json") in res.headers
        sent = dict(provider.requests[0][1])
        assert sent[b":authority"] == pool.origin.authority.encode()
        assert sent[b":method"] == b"POST" and sent[b":path"] == b"/v1/chat/completions"
        assert b"host" not in sent and b"connection" not in sent
        assert sent[b"authorization"] == b"Bearer sk-test"
        await pool.close()


async def test_concurrent_streams_share_one_connection_byte_exact():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        results = await asyncio.gather(
            *(call(pool, f"s{i}", chunks=30, chunk_delay_ms=2) for i in range(20)))
        assert provider.connections == 1 and pool.size == 1
        for i, (conn, res) in enumerate(results):
            assert res.status == 200
            assert bytes(res.body) == provider.bodies[f"s{i}"]
        assert len({conn.stream_id for conn, _ in results}) == 20
        await pool.close()


async def test_server_stream_limit_opens_a_few_connections():
    async with H2Provider(CA, max_concurrent_streams=5) as provider:
        pool = make_pool(provider)
        await call(pool, "warm")  # the provider's SETTINGS are known from here on
        results = await asyncio.gather(
            *(call(pool, f"s{i}", chunks=5, chunk_delay_ms=20) for i in range(12)))
        assert all(bytes(r.body) == provider.bodies[f"s{i}"] for i, (_, r) in enumerate(results))
        assert provider.connections == 3  # ceil(12 / 5), never one per request
        await pool.close()


async def test_paused_stream_does_not_stall_other_streams():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        slow_conn = None
        slow = Collect(on_first_data=lambda: slow_conn.pause_reading())
        slow_conn, slow = await start(pool, "slow", slow, chunks=64, pad=16 * 1024)
        await slow.head
        fast_conn, fast = await start(pool, "fast", chunks=50, chunk_delay_ms=1)
        assert fast_conn.connection is slow_conn.connection  # same TCP connection
        await asyncio.wait_for(fast.done, 5)
        assert bytes(fast.body) == provider.bodies["fast"]
        await asyncio.sleep(0.1)
        # The provider is held by the stream window alone, well short of the ~1 MiB body.
        assert "slow" not in provider.finished
        assert provider.sent["slow"] <= STREAM_WINDOW < len(provider.bodies["slow"])
        slow_conn.resume_reading()
        await asyncio.wait_for(slow.done, 5)
        assert bytes(slow.body) == provider.bodies["slow"]
        pool.release(fast_conn)
        pool.release(slow_conn)
        assert provider.connections == 1
        await pool.close()


async def test_abort_resets_only_that_stream():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        streams = [await start(pool, f"s{i}", chunks=20, chunk_delay_ms=10) for i in range(3)]
        victim, victim_res = streams[1]
        await victim_res.head
        victim.abort()
        await wait_for(lambda: provider.resets)
        assert provider.resets == [(victim.stream_id, ErrorCodes.CANCEL)]
        for i in (0, 2):
            conn, res = streams[i]
            await asyncio.wait_for(res.done, 5)
            assert bytes(res.body) == provider.bodies[f"s{i}"]
        assert not victim_res.done.done()  # an aborted exchange reports nothing more
        for conn, _ in streams:
            pool.release(conn)
        await call(pool, "after")  # the connection lives on
        assert provider.connections == 1
        await pool.close()


async def test_goaway_moves_new_requests_to_a_new_connection():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        streams = [await start(pool, f"s{i}", chunks=20, chunk_delay_ms=10) for i in range(3)]
        await asyncio.gather(*(res.head for _, res in streams))
        first = streams[0][0].connection
        provider.goaway()  # last stream id = the highest the provider has seen
        await wait_for(lambda: first.draining)
        conn, res = await call(pool, "new")
        assert conn.connection is not first and provider.connections == 2
        for i, (conn, res) in enumerate(streams):
            await asyncio.wait_for(res.done, 5)  # in flight below last_stream_id: complete
            assert bytes(res.body) == provider.bodies[f"s{i}"]
            pool.release(conn)
        await wait_for(lambda: pool.size == 1)  # drained, then closed and forgotten
        assert first.closed
        await pool.close()


async def test_a_request_sent_first_is_answered_to_the_handler_expect_names():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        conn = await pool.acquire()
        conn.send("POST", *request(pool, "first", chunks=5))
        conn.expect(res := Collect())
        await asyncio.wait_for(res.done, 5)
        assert res.status == 200 and bytes(res.body) == provider.bodies["first"]
        pool.release(conn)
        await pool.close()


async def test_a_send_that_fails_at_once_reaches_the_handler_expect_names():
    """A stream acquired before the provider's GOAWAY is refused as it is sent, before the
    relay exists: the refusal (retryable) waits for ``expect``."""
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        await call(pool, "warm")
        conn = await pool.acquire()
        provider.goaway()
        await wait_for(lambda: conn.connection.draining)
        conn.send("POST", *request(pool, "late"))
        conn.expect(res := Collect())
        with pytest.raises(UpstreamError, match="closing"):
            await asyncio.wait_for(res.done, 5)
        assert conn.used >= 2  # refused unprocessed: the gateway retries it fresh
        assert "late" not in provider.bodies
        pool.release(conn)
        await pool.close()


async def test_goaway_fails_streams_above_last_id_as_retryable():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        kept = await start(pool, "kept", chunks=10, chunk_delay_ms=10)
        await kept[1].head
        dropped = [await start(pool, f"d{i}", first_byte_delay_ms=2000) for i in range(2)]
        await wait_for(lambda: len(provider.requests) == 3)
        provider.goaway(last_stream_id=kept[0].stream_id)
        for conn, res in dropped:
            with pytest.raises(UpstreamError):
                await asyncio.wait_for(res.done, 5)
            # The relay's rule for a safe retry on a fresh connection:
            assert conn.used > 1 and not conn.received_any
            pool.release(conn)
        await asyncio.wait_for(kept[1].done, 5)
        assert bytes(kept[1].body) == provider.bodies["kept"]
        pool.release(kept[0])
        conn, res = await call(pool, "retry")
        assert res.status == 200 and conn.connection is not kept[0].connection
        await pool.close()


async def test_connection_loss_fails_every_stream():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        streams = [await start(pool, f"s{i}", chunks=50, chunk_delay_ms=20) for i in range(3)]
        await asyncio.gather(*(res.head for _, res in streams))
        provider.drop_connections()
        for conn, res in streams:
            with pytest.raises(UpstreamError):
                await asyncio.wait_for(res.done, 5)
            pool.release(conn)
        await wait_for(lambda: pool.size == 0)
        _, res = await call(pool, "again")
        assert res.status == 200 and provider.connections == 2
        await pool.close()


async def test_hung_stream_times_out_alone():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider, read_timeout_s=0.3)
        hung, hung_res = await start(pool, "hung", chunks=10, hang_after=2)
        busy, busy_res = await start(pool, "busy", chunks=40, chunk_delay_ms=20)
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(hung_res.done, 5)
        assert len(hung_res.body) > 0  # it did start streaming
        await wait_for(lambda: (hung.stream_id, ErrorCodes.CANCEL) in provider.resets)
        await asyncio.wait_for(busy_res.done, 5)  # same connection, unaffected
        assert bytes(busy_res.body) == provider.bodies["busy"]
        pool.release(hung)
        pool.release(busy)
        assert provider.connections == 1
        await pool.close()


async def test_paused_stream_is_not_timed_out():
    """A stalled client is not a slow provider (same rule as HTTP/1.1)."""
    async with H2Provider(CA) as provider:
        pool = make_pool(provider, read_timeout_s=0.2)
        conn = None
        res = Collect(on_first_data=lambda: conn.pause_reading())
        conn, res = await start(pool, "p", res, chunks=64, pad=16 * 1024)
        await asyncio.sleep(0.5)
        assert not res.done.done()
        conn.resume_reading()
        await asyncio.wait_for(res.done, 5)
        assert bytes(res.body) == provider.bodies["p"]
        pool.release(conn)
        await pool.close()


async def test_http11_only_provider_falls_back():
    async with H2Provider(CA, alpn=("http/1.1",)) as provider:
        pool = make_pool(provider)
        conn, res = await call(pool, "h1", chunks=7)
        assert isinstance(conn, UpstreamConnection) and pool.protocol == "http/1.1"
        assert provider.protocols == ["http/1.1"]
        assert bytes(res.body) == provider.bodies["h1"]
        conn2, res2 = await call(pool, "h1b", stream=False)
        assert conn2 is conn and res2.status == 200  # keep-alive as before
        await pool.close()


async def test_cleartext_origin_stays_http11():
    pool = OriginPool(Origin("http://127.0.0.1:9/v1"), "plain")
    assert pool.protocol == "http/1.1"


async def test_idle_h2_connection_is_reaped():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider, idle_timeout_s=0.2)
        await call(pool, "x")
        assert len(provider.open) == 1
        await wait_for(lambda: not provider.open)
        assert pool.size == 0
        await call(pool, "y")  # a fresh connection, still h2
        assert provider.connections == 2 and provider.protocols == ["h2", "h2"]
        await pool.close()


async def test_gateway_relays_over_h2_unchanged(tmp_path, monkeypatch):
    """The real pipeline (acquire → send → set_producer → release) over HTTP/2: concurrent
    client requests share one provider connection and arrive byte for byte."""
    from harness import auth_headers, http, kraken_mapping, running_kraken

    ca_file = tmp_path / "ca.pem"
    CA.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # default_ssl_context() trusts it
    async with H2Provider(CA) as provider:
        doc = kraken_mapping(tmp_path, provider.port)
        doc["providers"]["mockai"]["base_url"] = provider.url

        def body(tag: str, stream: bool) -> bytes:
            return orjson.dumps({"model": "mock-gpt", "stream": stream,
                                 "messages": [{"role": "user", "content": "hi"}],
                                 "stream_options": {"include_usage": True},
                                 "mock": {"tag": tag, "chunks": 20, "chunk_delay_ms": 2}})

        async with running_kraken(doc) as k:
            replies = await asyncio.gather(*(
                http(k.port, "POST", "/v1/chat/completions", body(f"g{i}", True), auth_headers())
                for i in range(10)))
            plain = await http(k.port, "POST", "/v1/chat/completions",
                               orjson.dumps({"model": "mock-gpt", "mock": {"tag": "json"},
                                             "messages": [{"role": "user", "content": "hi"}]}),
                               auth_headers())
        for i, reply in enumerate(replies):
            assert reply.status == 200
            assert reply.body == provider.bodies[f"g{i}"]
        assert plain.status == 200 and plain.json()["id"] == "chatcmpl-json"
        assert provider.connections == 1 and provider.protocols == ["h2"]


async def test_request_body_larger_than_the_initial_window():
    """The provider's 64 KiB initial window: the rest follows its WINDOW_UPDATEs."""
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        conn = await pool.acquire()
        res = Collect()
        body = orjson.dumps({"model": "m", "stream": False, "mock": {"tag": "big"},
                             "messages": [{"role": "user", "content": "y" * 300_000}]})
        conn.send("POST", "/v1/chat/completions",
                  [(b"host", b"x"), (b"content-length", str(len(body)).encode())], body, res)
        await asyncio.wait_for(res.done, 5)
        pool.release(conn)
        assert res.status == 200 and orjson.loads(res.body)["id"] == "chatcmpl-big"
        await pool.close()


async def test_release_of_an_unfinished_stream_cancels_it():
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        conn, res = await start(pool, "left", chunks=50, chunk_delay_ms=20)
        await res.head
        pool.release(conn)
        await wait_for(lambda: provider.resets == [(conn.stream_id, ErrorCodes.CANCEL)])
        _, again = await call(pool, "next")
        assert again.status == 200 and provider.connections == 1
        await pool.close()


async def test_a_lost_connection_is_freed_without_a_cycle_collection():
    """Like the inbound side: once the provider's socket is gone, nothing keeps the h2 client
    connection alive, not even a reference cycle waiting for the next gc run."""
    import gc
    import weakref

    from kraken.upstream.h2client import H2UpstreamConnection

    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        exchange, res = await call(pool, "once")
        assert res.status == 200 and isinstance(exchange.connection, H2UpstreamConnection)
        refs = [weakref.ref(exchange.connection), weakref.ref(exchange.connection.h2)]
        del exchange, res
        gc.collect()
        gc.disable()
        try:
            provider.drop_connections()
            await wait_for(lambda: pool.size == 0)
            await asyncio.sleep(0)  # let the transport's own callbacks finish
            assert [ref() for ref in refs] == [None, None]
        finally:
            gc.enable()
        await pool.close()
