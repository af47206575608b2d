"""HTTP/1.1 frees what it is done with, like HTTP/2 (test_h2_memory.py): a closed connection
and a finished exchange are unreachable by reference counting alone, not when a timer they
armed would have fired, nor at the next full gc run."""
from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from h1wire import connect, parse_responses, read_to_eof, serve
from kraken.http.exchange import Request
from kraken.http.h1 import H1Connection
from kraken.http.h1exchange import H1Exchange
from test_h2_memory import LONG, live, settle

pytestmark = pytest.mark.anyio


def counts() -> tuple[int, int]:
    """(H1Connection, H1Exchange) objects alive, without a gc run."""
    return live(H1Connection), live(H1Exchange)


HUNG: list[Request] = []


async def hang(req: Request, sink: H1Exchange) -> None:
    HUNG.append(req)
    await asyncio.sleep(3600)  # cancelled when the client goes


@contextlib.contextmanager
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_closed_connections_and_their_exchanges_need_no_cycle_collection():
    with no_gc():
        before = counts()
        async with serve(**LONG) as server:
            for _ in range(50):
                async with connect(server.port) as (reader, writer):
                    writer.write(b"POST /a HTTP/1.1\r\nHost: k\r\nContent-Length: 3\r\n\r\nabc"
                                 b"GET /b HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
                    responses = parse_responses(await read_to_eof(reader))
                    assert [r.body for r in responses] == [b"/a 3", b"/b 0"]
            for _ in range(20):  # the client leaves while its connection waits for a head
                async with connect(server.port) as (reader, writer):
                    writer.write(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n")
                    await reader.readuntil(b"/ 0")
            assert await settle(counts, before) == before


async def test_connection_lost_mid_request_frees_connection_and_exchange():
    HUNG.clear()
    with no_gc():
        before = counts()
        async with serve(hang, **LONG) as server:
            for i in range(1, 11):
                async with connect(server.port) as (reader, writer):
                    writer.write(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n")
                    await settle(lambda: len(HUNG), i)
                    assert len(HUNG) == i  # the handler is running
            HUNG.clear()
            # the handlers were cancelled with their connections, the exchanges with them
            assert await settle(counts, before) == before
