"""Per-address connection cap: one client address may hold at most ``max_per_ip`` connections.

IPv4 is counted per address; IPv6 per /64, the smallest block a single subscriber usually
gets (one host can use any of its 2^64 addresses, so counting per address would cap nothing).
An IPv4-mapped IPv6 peer (``::ffff:a.b.c.d`` on a dual-stack socket) counts as its IPv4
address. Entries are removed when their count returns to zero, so memory is bounded by the
open connections themselves. No I/O here: the listener asks, and answers the client. Every
refusal is counted as ``kraken_refused_total{reason="per_ip_connections"}``.

Peers in ``[limits] trusted_proxies`` are exempt: a load balancer or TLS terminator in front of
Kraken is one address carrying every client, so capping it would cap the whole service. The
forwarded address cannot be counted instead, because the cap applies when the connection is
accepted, before any request header exists; per-client limits behind a proxy are the rate
limits, which do read X-Forwarded-For from trusted peers.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

from kraken import shedding

_MAPPED_V4 = b"\x00" * 10 + b"\xff\xff"
_KEYS_KEPT = 4096
"""Peers whose key a limiter remembers (then it starts over): one load balancer, or a client
reconnecting, costs a dict lookup per connection instead of ~0.5 µs of parsing and masks."""
_UNKNOWN = object()


def address_key(peer: str) -> bytes | None:
    """What ``peer`` is counted under: 4 bytes of IPv4 or 8 bytes of an IPv6 /64 prefix.

    None for anything that is not an IP address (a Unix socket): never limited."""
    packed = _packed(peer)
    return None if packed is None else _count_key(packed)


def _count_key(packed: bytes) -> bytes:
    return packed if len(packed) == 4 else packed[:8]  # IPv6: its /64


def _packed(peer: str) -> bytes | None:
    """The address as 4 (IPv4, also IPv4-mapped IPv6) or 16 bytes; None: not an address."""
    if not peer:
        return None
    try:
        if ":" in peer:
            packed = socket.inet_pton(socket.AF_INET6, peer.split("%", 1)[0])
            return packed[12:] if packed[:12] == _MAPPED_V4 else packed
        return socket.inet_pton(socket.AF_INET, peer)
    except OSError:
        return None


def _as_masks(networks: Iterable[str]) -> tuple[tuple[int, int, int], ...]:
    """Each network as (address bytes, network number, mask) for an integer test per
    connection (``ipaddress`` objects cost ~5 µs a connection; this ~0.5 µs)."""
    out = []
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
                and net.prefixlen >= 96:  # ::ffff:a.b.c.d/n: the IPv4 network it names
            net = ipaddress.ip_network((net.network_address.ipv4_mapped, net.prefixlen - 96))
        out.append((4 if net.version == 4 else 16, int(net.network_address), int(net.netmask)))
    return tuple(out)


class ConnectionLimiter:
    """Counts open connections per address key; ``max_per_ip`` 0 means unlimited.

    ``exempt``: addresses or networks (the trusted proxies) that are never counted."""

    __slots__ = ("max_per_ip", "_open", "refused", "_exempt", "_keys")

    def __init__(self, max_per_ip: int, exempt: Iterable[str] = ()):
        self.max_per_ip = max_per_ip
        self._open: dict[bytes, int] = {}
        self.refused = 0
        """Connections refused since start (for logs and tests)."""
        self._exempt = _as_masks(exempt)
        self._keys: dict[str, bytes | None] = {}
        """``key_of``'s recent answers (at most ``_KEYS_KEPT``)."""

    def key_of(self, peer: str) -> bytes | None:
        """``address_key(peer)``, or None (never limited) when ``peer`` is exempt."""
        key = self._keys.get(peer, _UNKNOWN)
        if key is _UNKNOWN:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            key = self._keys[peer] = self._find_key(peer)
        return key  # type: ignore[return-value]

    def _find_key(self, peer: str) -> bytes | None:
        packed = _packed(peer)
        if packed is None:
            return None
        if self._exempt:
            size, number = len(packed), int.from_bytes(packed, "big")
            for net_size, network, mask in self._exempt:
                if size == net_size and number & mask == network:
                    return None
        return _count_key(packed)

    def acquire(self, key: bytes | None) -> bool:
        """Count a new connection under ``key`` (from ``address_key``); False, counting
        nothing, when that key already holds ``max_per_ip`` connections."""
        if key is None or self.max_per_ip <= 0:
            return True
        count = self._open.get(key, 0)
        if count >= self.max_per_ip:
            self.refused += 1
            shedding.refused("per_ip_connections")
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: bytes | None) -> None:
        """A connection that ``acquire`` accepted under ``key`` has closed."""
        if key is None or self.max_per_ip <= 0:
            return
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open_from(self, peer: str) -> int:
        """Connections currently counted for ``peer``'s key."""
        key = self.key_of(peer)
        return self._open.get(key, 0) if key is not None else 0

    def __len__(self) -> int:
        """Distinct address keys with at least one open connection."""
        return len(self._open)
