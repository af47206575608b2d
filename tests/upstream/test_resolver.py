"""Provider host names are looked up once per TTL for every dial (kraken/upstream/resolver.py),
against real sockets and the system's resolver (``localhost`` from /etc/hosts: no network)."""
from __future__ import annotations

import asyncio

import pytest

from kraken import metrics
from kraken.errors import UpstreamError
from kraken.upstream.pool import Origin, OriginPool
from kraken.upstream.resolver import HostAddresses, is_ip_literal
from harness import free_port, running_mock

pytestmark = pytest.mark.anyio


def lookups(provider: str, result: str = "ok") -> float:
    return metrics.UPSTREAM_DNS_LOOKUPS.labels(provider, result).value


def by_name(url: str) -> Origin:
    """The mock's origin spelled with a host name (it listens on 127.0.0.1)."""
    return Origin(url.replace("127.0.0.1", "localhost"))


async def test_a_burst_of_dials_to_a_host_name_looks_it_up_once():
    async with running_mock() as mock:
        pool = OriginPool(by_name(mock.url), "dns-burst")
        before = lookups("dns-burst")
        conns = await asyncio.gather(*(pool.acquire() for _ in range(50)))
        assert lookups("dns-burst") - before == 1
        assert {c.transport.get_extra_info("peername")[0] for c in conns} == {"127.0.0.1"}
        more = [await pool.acquire() for _ in range(5)]  # later dials: no lookup either
        assert lookups("dns-burst") - before == 1
        for conn in conns + more:
            pool.release(conn)
        await pool.close()


async def test_an_ip_literal_is_never_looked_up():
    async with running_mock() as mock:
        pool = OriginPool(Origin(mock.url), "dns-literal")
        conns = await asyncio.gather(*(pool.acquire() for _ in range(10)))
        assert lookups("dns-literal") == 0 and lookups("dns-literal", "error") == 0
        for conn in conns:
            pool.release(conn)
        await pool.close()


async def test_past_the_ttl_the_known_addresses_serve_while_one_lookup_refreshes_them():
    loop = asyncio.get_running_loop()
    host = HostAddresses("localhost", 80, "dns-ttl", ttl_s=0.0)  # expired as soon as found
    first = await host.resolve(loop)
    assert "127.0.0.1" in first
    before = lookups("dns-ttl")
    served = [host.current(loop) for _ in range(20)]  # no dial waits: a refresh starts
    assert all(s is not None and set(s) == set(first) for s in served)
    await asyncio.sleep(0)  # the refresh runs: one, for the twenty dials
    while host._lookup is not None:  # noqa: SLF001 (the lookup in flight, read to wait on it)
        await asyncio.shield(host._lookup)  # noqa: SLF001
    assert lookups("dns-ttl") - before == 1


async def test_dials_take_the_addresses_in_turn():
    loop = asyncio.get_running_loop()
    host = HostAddresses("localhost", 80, "dns-turns")
    # three addresses as a lookup leaves them (localhost has one here)
    host._addresses = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # noqa: SLF001
    host._expires = loop.time() + 60  # noqa: SLF001
    firsts = [host.current(loop)[0] for _ in range(6)]
    assert firsts == ["127.0.0.2", "127.0.0.3", "127.0.0.1"] * 2
    assert sorted(host.current(loop)) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


async def test_when_every_address_refuses_the_next_dial_looks_the_host_up_again():
    pool = OriginPool(Origin(f"http://localhost:{free_port()}"), "dns-refused")  # nobody listens
    before = lookups("dns-refused")
    with pytest.raises(UpstreamError, match="connection refused"):
        await pool.acquire()
    assert lookups("dns-refused") - before == 1
    with pytest.raises(UpstreamError, match="connection refused"):
        await pool.acquire()
    assert lookups("dns-refused") - before == 2  # the refused answer was not kept
    await pool.close()


async def test_a_name_that_does_not_resolve_is_a_clear_upstream_error():
    # glibc refuses a name with a space before asking any DNS server: no network
    pool = OriginPool(Origin("http://bad host.invalid:80"), "dns-bad")
    before = lookups("dns-bad", "error")
    with pytest.raises(UpstreamError, match="host name did not resolve"):
        await pool.acquire()
    assert lookups("dns-bad", "error") - before == 1
    too_long = OriginPool(Origin(f"http://{'a' * 64}.invalid:80"), "dns-long")  # IDNA refuses it
    with pytest.raises(UpstreamError, match="host name did not resolve"):
        await too_long.acquire()
    await pool.close()
    await too_long.close()


async def test_a_cancelled_dial_leaves_the_lookup_to_the_others():
    loop = asyncio.get_running_loop()
    host = HostAddresses("localhost", 80, "dns-cancel")
    before = lookups("dns-cancel")
    first = loop.create_task(host.resolve(loop))
    second = loop.create_task(host.resolve(loop))
    await asyncio.sleep(0)
    first.cancel()
    assert "127.0.0.1" in await second
    assert first.cancelled()
    assert lookups("dns-cancel") - before == 1


def test_ip_literals():
    assert is_ip_literal("127.0.0.1") and is_ip_literal("::1")
    assert not is_ip_literal("localhost") and not is_ip_literal("api.openai.com")
    assert not is_ip_literal("fe80::1%eth0")  # scoped: getaddrinfo reads the scope
