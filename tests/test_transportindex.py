"""uvloop's index of transports made lean (kraken/transportindex.py): plain weak references,
and the refusal it exists for still stands, on real sockets."""
from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import pytest
import uvloop

from harness import kraken_mapping, running_kraken, running_mock
from kraken.transportindex import LeanTransportIndex, lean_transport_index, transport_index

pytestmark = pytest.mark.anyio


def index_of(loop: asyncio.AbstractEventLoop) -> weakref.WeakValueDictionary:
    index = transport_index(loop)
    assert index is not None
    return index


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


async def connected_pair() -> tuple[asyncio.Transport, Client, socket.socket]:
    """A client transport on this loop, its protocol, and its peer: a plain socket (the
    loop tracks no transport for it)."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        transport, client = await loop.create_connection(Client, "127.0.0.1",
                                                         listener.getsockname()[1])
        peer, _ = listener.accept()
    return transport, client, peer  # type: ignore[return-value]


async def close(transport: asyncio.Transport, client: Client, peer: socket.socket) -> None:
    transport.close()
    peer.close()
    await client.lost


async def collected(gone: weakref.ref) -> None:
    """Return once a closed transport is garbage: after its loss is reported, uvloop lets go
    of it when libuv's close callback runs, a turn or two of the loop later."""
    for _ in range(100):
        gc.collect()
        if gone() is None:
            return
        await asyncio.sleep(0)  # one turn of the loop: no time passes
    raise AssertionError("the closed transport is still referenced")


async def test_a_uvloop_index_becomes_lean_and_still_refuses_a_transports_descriptor():
    loop = asyncio.get_running_loop()
    assert type(index_of(loop)) is weakref.WeakValueDictionary
    assert lean_transport_index(loop)
    assert type(index_of(loop)) is LeanTransportIndex
    assert lean_transport_index(loop)  # twice: still the one index
    transport, client, peer = await connected_pair()
    fd = transport.get_extra_info("socket").fileno()
    entry = index_of(loop).data[fd]
    assert type(entry) is weakref.ref and entry() is transport  # no KeyedRef, no callback
    with pytest.raises(RuntimeError, match="is used by transport"):
        loop.add_reader(fd, lambda: None)
    gone = weakref.ref(transport)
    await close(transport, client, peer)
    del entry, transport, client
    await collected(gone)
    with pytest.raises(KeyError):  # a dead transport's entry reads as absent
        index_of(loop)[fd]


async def test_a_reused_descriptor_takes_its_new_transport():
    loop = asyncio.get_running_loop()
    lean_transport_index(loop)
    entries = len(index_of(loop).data)
    seen: dict[int, int] = {}
    for _ in range(3):
        transport, client, peer = await connected_pair()
        fd = transport.get_extra_info("socket").fileno()
        seen[fd] = seen.get(fd, 0) + 1
        assert index_of(loop)[fd] is transport
        gone = weakref.ref(transport)
        await close(transport, client, peer)
        del transport, client
        await collected(gone)
    assert max(seen.values()) >= 2  # a closed transport's descriptor came back (the lowest free)
    assert len(index_of(loop).data) - entries <= len(seen)  # an entry per descriptor number


def test_another_loop_is_left_alone():
    loop = asyncio.new_event_loop()  # the stock loop: no such index
    try:
        assert not lean_transport_index(loop)
    finally:
        loop.close()
    uv = uvloop.new_event_loop()
    try:
        assert lean_transport_index(uv)
    finally:
        uv.close()


async def test_kraken_serves_with_the_lean_index(tmp_path):
    loop = asyncio.get_running_loop()
    async with running_mock() as mock, running_kraken(kraken_mapping(tmp_path, mock.port)):
        assert type(index_of(loop)) is LeanTransportIndex
