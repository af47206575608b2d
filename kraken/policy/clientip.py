"""Which address a request comes from, for per-IP limits.

``X-Forwarded-For`` is believed only when the TCP peer is a configured trusted proxy, and
then only up to the first hop that is not itself trusted (the rightmost untrusted address):
anything left of it was written by the client and could name anyone.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Resolves a request's client address given the operator's trusted proxies."""

    __slots__ = ("_trusted",)

    def __init__(self, trusted_proxies: Iterable[str] = ()):
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def of(self, peer: str, forwarded_for: bytes | None) -> str:
        """The client address: ``peer`` unless it is a trusted proxy that says otherwise."""
        if not self._trusted or not forwarded_for or not self._is_trusted(peer):
            return peer
        try:
            hops = forwarded_for.decode("ascii").split(",")
        except UnicodeDecodeError:
            return peer
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop.split("%", 1)[0])
            except ValueError:
                return peer  # garbage in the chain: trust nothing past the proxy
            if not self._is_trusted(hop):
                return hop
        return peer
