"""The addresses one provider host resolves to, looked up once per ``ttl_s`` for every dial.

Given a host name, ``loop.create_connection`` asks ``getaddrinfo`` on every call, in
libuv's pool of four threads. A burst of 1000 streams to an HTTP/1.1 provider named by host
(a vLLM or Ollama server behind a DNS name) dials 1000 times, so it queued 1000 lookups on
those threads: each one a thread hand-off, a read of /etc/hosts and, past it, a DNS round
trip. On loopback, with the name in /etc/hosts, a dial to ``localhost`` cost 28-33 µs of
CPU against 17 µs to ``127.0.0.1`` (1000 dials, 100 at once).

``HostAddresses`` looks the host up when the first dial needs it; dials arriving meanwhile
wait for that same lookup, and the answer serves every dial after. Once ``ttl_s`` has passed
the next dial starts a lookup in the background and the known addresses serve until it
answers (they also outlive a lookup that fails). An IP literal is never looked up. Dials
take the addresses in turn (each starts one further along) and try the next when one
refuses; when all refuse, the answer is dropped and the next dial looks the host up again,
so a provider that moved is found without waiting out ``ttl_s``.
"""
from __future__ import annotations

import asyncio
import socket

from kraken import metrics

DNS_TTL_S = 30.0
"""How long a host's addresses serve dials (getaddrinfo does not say the record's TTL)."""


def is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


class HostAddresses:
    """One provider host's addresses, shared by its pool's dials (one per pool: bounded)."""

    __slots__ = ("host", "port", "provider", "ttl_s", "_literal", "_addresses", "_expires",
                 "_lookup", "_turn")

    def __init__(self, host: str, port: int, provider: str = "", ttl_s: float = DNS_TTL_S):
        self.host, self.port, self.provider, self.ttl_s = host, port, provider, ttl_s
        self._literal = is_ip_literal(host)
        self._addresses: tuple[str, ...] = (host,) if self._literal else ()
        self._expires = 0.0
        self._lookup: asyncio.Task[None] | None = None
        self._turn = 0

    def current(self, loop: asyncio.AbstractEventLoop) -> tuple[str, ...] | None:
        """The addresses to dial, in the order this dial tries them; None: ``resolve`` first.
        Past ``ttl_s`` they still serve while a lookup in the background refreshes them."""
        addresses = self._addresses
        if self._literal:
            return addresses
        if not addresses:
            return None
        if self._lookup is None and loop.time() >= self._expires:
            self._start(loop)
        if len(addresses) == 1:
            return addresses
        turn = self._turn = (self._turn + 1) % len(addresses)
        return addresses[turn:] + addresses[:turn]

    async def resolve(self, loop: asyncio.AbstractEventLoop) -> tuple[str, ...]:
        """The addresses after the lookup in flight (started here if none is); raises
        ``OSError`` (``socket.gaierror``) when the host does not resolve."""
        lookup = self._lookup or self._start(loop)
        await asyncio.shield(lookup)  # a cancelled dial leaves the lookup to the others
        addresses = self.current(loop)
        if addresses is None:  # forgotten again meanwhile: every address refused
            raise ConnectionRefusedError("no address of the provider accepted the connection")
        return addresses

    def forget(self) -> None:
        """Every address refused: the next dial waits for a new lookup."""
        if not self._literal:
            self._addresses = ()

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
        lookup = self._lookup = loop.create_task(self._look_up(loop))
        lookup.add_done_callback(_retrieved)  # a refresh nobody waits for may fail
        return lookup

    async def _look_up(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except UnicodeError:  # not a name IDNA can spell (a label over 63 characters)
                raise socket.gaierror(socket.EAI_NONAME, "not a host name") from None
            # A scoped IPv6 address (fe80::1%eth0) keeps its scope: the dial resolves it.
            found = tuple(dict.fromkeys(
                f"{addr[0]}%{addr[3]}" if len(addr) == 4 and addr[3] else addr[0]
                for *_, addr in infos))
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, "no address")
        except OSError:
            metrics.UPSTREAM_DNS_LOOKUPS.labels(self.provider, "error").inc()
            if self._addresses:  # a failed refresh: the known addresses serve another while
                self._expires = loop.time() + self.ttl_s
            raise
        finally:
            self._lookup = None
        metrics.UPSTREAM_DNS_LOOKUPS.labels(self.provider, "ok").inc()
        self._addresses, self._expires = found, loop.time() + self.ttl_s


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
