"""A request body streamed after its head (an upload) on an HTTP/2 provider connection: the
body passes the provider's flow-control windows piece by piece (``writable`` waits for them)
and END_STREAM goes only with ``end_body``."""
from __future__ import annotations

import orjson
import pytest
from h2.errors import ErrorCodes
from h2_server import H2Provider
from harness import wait_for
from test_h2_upstream import CA, Collect, call, make_pool

from kraken.upstream.h2client import H2Exchange

pytestmark = pytest.mark.anyio


async def test_streamed_body_crosses_the_windows_and_ends_with_end_body():
    pad = "x" * 300_000  # several times the provider's initial windows
    body = orjson.dumps({"model": "up-model", "stream": False, "mock": {"tag": "up"}, "pad": pad})
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        conn = await pool.acquire()
        assert isinstance(conn, H2Exchange)
        handler = Collect()
        headers = [(b"host", pool.origin.authority.encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        conn.send("POST", "/v1/chat/completions", headers, body[:1000], handler, more=True)
        for start in range(1000, len(body), 50_000):
            conn.send_more(body[start:start + 50_000])
            await conn.writable()
        assert not handler.done.done(), "no END_STREAM before end_body: no answer yet"
        conn.end_body()
        await handler.done
        pool.release(conn)
        assert handler.status == 200
        assert orjson.loads(handler.body)["model"] == "up-model", "the whole body arrived"
        await pool.close()


@pytest.mark.parametrize("body_ends_after_answer", [False, True])
async def test_a_stream_answered_before_its_upload_ended_is_reset_on_release(
        body_ends_after_answer):
    """The provider answers an upload at its first bytes and leaves the stream to the client
    (RFC 9113 §8.1). The relay stops pumping (or its last ``end_body`` comes after the
    answer) and releases the exchange: Kraken's half of the stream must end there, or it
    stays open in h2's count against the provider's MAX_CONCURRENT_STREAMS, and once that
    many piled up every new stream on the connection was refused."""
    async with H2Provider(CA, max_concurrent_streams=2, answer_early=True) as provider:
        pool = make_pool(provider)
        streams = []
        for _ in range(3):
            conn = await pool.acquire()
            handler = Collect()
            headers = [(b"host", pool.origin.authority.encode()),
                       (b"content-type", b"application/json"), (b"content-length", b"100000")]
            conn.send("POST", "/v1/chat/completions", headers, b"{" + b" " * 999, handler,
                      more=True)
            await handler.done  # answered early, the 99 000 bytes left are never sent
            if body_ends_after_answer:
                conn.end_body()
            pool.release(conn)
            assert handler.status == 200
            assert orjson.loads(handler.body)["id"] == f"chatcmpl-early{conn.stream_id}"
            streams.append(conn.stream_id)
        _, after = await call(pool, "after", stream=False)
        assert after.status == 200 and orjson.loads(after.body)["id"] == "chatcmpl-after"
        assert provider.connections == 1
        await wait_for(lambda: provider.resets == [(sid, ErrorCodes.CANCEL) for sid in streams])
        await pool.close()
