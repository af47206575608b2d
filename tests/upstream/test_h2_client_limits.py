"""The outbound HTTP/2 client keeps, per provider connection, what the inbound server keeps
per client connection (``kraken/h2common.py``): an HPACK encoder table of at most 4 KiB
whatever the provider allows, and the ends of at most 1024 closed streams. A pooled provider
connection lives for hours and carries every request of its origin."""
from __future__ import annotations

import asyncio

import pytest
from h2_server import H2Provider
from test_h2_upstream import CA, Collect, make_pool, request

from kraken.upstream.h2client import H2Exchange

pytestmark = pytest.mark.anyio


async def send(pool, tag: str, extra: list[tuple[bytes, bytes]]) -> H2Exchange:
    """One non-streamed call with ``extra`` request fields, answered and released."""
    conn = await pool.acquire()
    assert isinstance(conn, H2Exchange)
    handler = Collect()
    target, headers, body = request(pool, tag, stream=False)
    headers = [h for h in headers if h[0] != b"connection"] + extra
    conn.send("POST", target, headers, body, handler)
    try:
        await handler.done
    finally:
        pool.release(conn)
    assert handler.status == 200
    return conn


async def test_the_request_hpack_table_stays_at_4_kib_whatever_the_provider_allows():
    """Taken as the size, a provider's 1 GiB SETTINGS_HEADER_TABLE_SIZE let Kraken's encoder
    index every request's unique field for as long as the connection lasted: its table (which
    the provider's decoder mirrors) grew by each one."""
    async with H2Provider(CA, header_table_size=2**30) as provider:
        pool = make_pool(provider)
        try:
            for i in range(200):  # ~300 bytes of unique field each: 60 KB if all kept
                conn = await send(pool, f"t{i}", [(b"x-unique", b"%0250d" % i)])
            encoder = conn.connection.h2.encoder
            assert encoder.header_table.maxsize == 4096
            assert encoder.header_table._current_size <= 4096
            (provider_conn,) = provider.open
            mirrored = provider_conn.h2.decoder.header_table
            assert mirrored._current_size <= 4096 and len(mirrored.dynamic_entries) < 20
            assert provider.connections == 1
        finally:
            await pool.close()


async def test_a_long_lived_provider_connection_remembers_at_most_1024_closed_streams():
    """h2 remembers how every closed stream ended, up to 65536 (~8 MB) by default."""
    async with H2Provider(CA) as provider:
        pool = make_pool(provider)
        try:
            conns = []
            for batch in range(13):  # 1300 streams, 100 at a time
                conns += await asyncio.gather(*(send(pool, f"c{batch}.{i}", [])
                                                for i in range(100)))
            h2 = conns[-1].connection.h2
            assert provider.connections == 1 and h2.highest_outbound_stream_id == 2599
            assert len(h2._closed_streams) <= 1024
        finally:
            await pool.close()
