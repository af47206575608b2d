"""Per-origin pools against a real local server: bounds, reuse, reaping, TLS verification."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import pytest
import trustme

from kraken.errors import PoolExhausted, PoolShareExceeded, UpstreamError, UpstreamTimeout
from kraken.upstream.pool import Origin, OriginPool
from harness import running_mock, wait_for

pytestmark = pytest.mark.anyio


class Collect:
    def __init__(self):
        self.done = asyncio.get_running_loop().create_future()
        self.status, self.body = 0, b""

    def on_head(self, status, headers):
        self.status = status

    def on_data(self, data):
        self.body += data

    def on_end(self):
        self.done.set_result(None)

    def on_error(self, exc):
        self.done.set_exception(exc)

    def on_read_end(self):
        pass


async def exchange(pool: OriginPool, mock) -> Collect:
    conn = await pool.acquire()
    sink = Collect()
    conn.send("GET", "/v1/models", [(b"host", b"x"), (b"authorization", b"Bearer " + mock.api_key.encode())],
              b"", sink)
    try:
        await sink.done
    finally:
        pool.release(conn)
    return sink


async def test_keep_alive_reuses_one_connection():
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m")
        for _ in range(5):
            assert (await exchange(pool, mock)).status == 200
        assert pool.size == 1 and len(mock._conns) == 1
        await pool.close()


async def test_max_connections_bounds_concurrency():
    async with running_mock(first_byte_delay_ms=0) as mock:
        pool = OriginPool(Origin(mock.url), "m", max_connections=2)

        async def one():
            return await exchange(pool, mock)

        results = await asyncio.gather(*(one() for _ in range(10)))
        assert all(r.status == 200 for r in results)
        assert pool.size == 2 and len(mock._conns) == 2  # both used, never a third
        await pool.close()


async def test_a_full_pool_refuses_after_pool_wait_s_with_its_own_error_not_a_timeout():
    """Waiting for a slot is Kraken's bound, not the provider failing (no 504, no breaker)."""
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m", max_connections=1, pool_wait_s=0.1,
                          connect_timeout_s=30)
        held = await pool.acquire()
        with pytest.raises(PoolExhausted) as caught:
            await pool.acquire()
        assert caught.value.status == 503 and caught.value.code == "pool_exhausted"
        pool.release(held)
        assert (await exchange(pool, mock)).status == 200  # the freed slot serves at once
        await pool.close()


def test_one_owner_holds_at_most_its_share_of_the_pool():
    pool = OriginPool(Origin("http://127.0.0.1:9"), "m", max_connections=4, per_key_share=0.5)
    first, second = pool.claim("a"), pool.claim("a")
    with pytest.raises(PoolShareExceeded) as caught:
        pool.claim("a")
    assert caught.value.status == 429 and caught.value.limit == 2
    with pool.claim("b"), pool.claim(None):  # others, and unkeyed calls, are not held back
        pass
    with first:
        pass  # one of a's requests ends: a may start another
    with pool.claim("a"), second:
        pass
    tiny = OriginPool(Origin("http://127.0.0.1:9"), "m", max_connections=1, per_key_share=0.5)
    with tiny.claim("a"):  # always at least one
        with pytest.raises(PoolShareExceeded):
            tiny.claim("a")
    whole = OriginPool(Origin("http://127.0.0.1:9"), "m", max_connections=1, per_key_share=1)
    with whole.claim("a"), whole.claim("a"):  # a share of 1: no per-key bound
        pass


async def test_idle_connections_are_reaped():
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m", idle_timeout_s=0.2)
        await exchange(pool, mock)
        assert len(mock._conns) == 1
        await wait_for(lambda: len(mock._conns) == 0)
        assert pool.size == 0
        await pool.close()


async def test_refused_connection_is_upstream_error():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = OriginPool(Origin(f"http://127.0.0.1:{port}/v1"), "m", connect_timeout_s=1)
    with pytest.raises(UpstreamError):
        await pool.acquire()
    assert pool.size == 0


async def tls_server(ca: trustme.CA) -> tuple[asyncio.Server, int]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_ctx)
    return server, server.sockets[0].getsockname()[1]


async def test_untrusted_certificate_is_refused():
    """Providers are verified against the system CAs: a self-made CA is not trusted."""
    server, port = await tls_server(trustme.CA())
    pool = OriginPool(Origin(f"https://localhost:{port}/v1"), "m", connect_timeout_s=2)
    with pytest.raises(UpstreamError) as err:
        await pool.acquire()
    assert "TLS" in str(err.value)
    server.close()


async def test_trusted_certificate_connects():
    ca = trustme.CA()
    server, port = await tls_server(ca)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    pool = OriginPool(Origin(f"https://localhost:{port}/v1"), "m", ssl_context=client_ctx)
    conn = await pool.acquire()
    assert conn.transport.get_extra_info("ssl_object") is not None
    conn.close()
    server.close()


async def test_a_released_connection_keeps_the_idle_time_its_response_ended_at(monkeypatch):
    """The pool does not stamp a released connection (no asyncio.get_running_loop(), a getpid
    syscall on 3.11): the connection stamped itself when it opened and when its answer ended."""
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m")
        conn = await pool.acquire()
        pool.release(conn)  # unused; schedules the reaper (once per idle period, not per release)
        conn = await pool.acquire()
        opened = conn.idle_since
        assert opened > 0  # an unused connection is idle from its connect, not from 0
        sink = Collect()
        conn.send("GET", "/v1/models", [(b"host", b"x"),
                  (b"authorization", b"Bearer " + mock.api_key.encode())], b"", sink)
        await sink.done
        ended = conn.idle_since
        assert ended >= opened

        def no_lookup():
            raise AssertionError("release looked the loop up")

        monkeypatch.setattr(asyncio, "get_running_loop", no_lookup)
        pool.release(conn)
        monkeypatch.undo()
        assert conn.idle_since == ended
        assert await pool.acquire() is conn  # reused: it went back to the idle list
        pool.release(conn)
        await pool.close()


@contextlib.contextmanager
def unanswered_listener():
    """A loopback port whose accept queue is full: a further connect hangs (its SYN dropped)."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())  # fills the queue; never accepted
        yield listener.getsockname()[1]


async def test_a_connect_past_its_timeout_is_an_upstream_timeout_and_frees_its_slot():
    with unanswered_listener() as port:
        pool = OriginPool(Origin(f"http://127.0.0.1:{port}/v1"), "m", connect_timeout_s=0.2)
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.acquire()
        assert str(caught.value) == "provider connect timed out"
        assert pool.size == 0
        assert asyncio.current_task().cancelling() == 0  # the timer's cancel was withdrawn
        await pool.close()


async def test_a_dial_cancelled_from_outside_stays_a_cancellation():
    """Only the connect timer's own cancellation becomes a timeout (a client gone, a shutdown:
    the task is cancelled, and the dial gives its slot back)."""
    with unanswered_listener() as port:
        pool = OriginPool(Origin(f"http://127.0.0.1:{port}/v1"), "m", connect_timeout_s=30)
        task = asyncio.get_running_loop().create_task(pool.acquire())
        await wait_for(lambda: pool.size == 1)  # dialling
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled() and pool.size == 0
        await pool.close()


async def test_a_connected_dial_leaves_no_timer_to_cancel_its_task_later():
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m", connect_timeout_s=0.05)
        conn = await pool.acquire()
        await asyncio.sleep(0.15)  # past the connect timeout: nothing cancels this task
        assert asyncio.current_task().cancelling() == 0
        other = await pool.acquire()  # and the pool still dials
        assert other is not conn
        conn.close()
        other.close()
        await pool.close()


async def test_every_connection_shares_the_pools_one_on_close_and_is_forgotten_on_close():
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m")
        first, second = await pool.acquire(), await pool.acquire()
        assert first.on_close is second.on_close  # bound once, not per connection
        assert pool.size == 2
        first.close()
        await wait_for(lambda: pool.size == 1)
        second.close()
        await wait_for(lambda: pool.size == 0)
        await pool.close()


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on():
    """A client may go away in the loop turn its waiting request is handed a released
    connection: that connection must serve the next request, not be lost with the waiter
    (it stayed open and counted, neither idle nor busy: the pool was one slot short)."""
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "m", max_connections=1, pool_wait_s=5)
        held = await pool.acquire()
        waiter = asyncio.get_running_loop().create_task(pool.acquire())
        await wait_for(lambda: pool._waiters)
        pool.release(held)  # handed to the waiter ...
        waiter.cancel()  # ... whose client is gone before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        again = await asyncio.wait_for(pool.acquire(), 2)
        assert again is held and pool.size == 1
        pool.release(again)
        assert (await exchange(pool, mock)).status == 200 and len(mock._conns) == 1
        await pool.close()
