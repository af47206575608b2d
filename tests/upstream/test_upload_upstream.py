"""A request body streamed after its head (an upload) on an HTTP/2 provider connection: the
body passes the provider's flow-control windows piece by piece (``writable`` waits for them)
and END_STREAM goes only with ``end_body``."""
from __future__ import annotations

import orjson
import pytest
from h2_server import H2Provider
from test_h2_upstream import CA, Collect, make_pool

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
