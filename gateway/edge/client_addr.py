"""Who is calling: the peer address, or the client a trusted proxy names.

``X-Forwarded-For`` is believed only when the connection comes from an address or range in
``server.trusted_proxies``; from anyone else it is ignored, so a client cannot claim another
address in the access log. Behind trusted proxies, the client is the right-most address of the
chain that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_MAX = 1024


class ClientAddress:
    __slots__ = ("_nets", "_trusted")

    def __init__(self, trusted: Iterable[str]) -> None:
        self._nets: tuple[_Net, ...] = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._trusted: dict[str, bool] = {}

    def is_trusted(self, addr: str) -> bool:
        hit = self._trusted.get(addr)
        if hit is None:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                hit = False
            else:
                hit = any(ip in net for net in self._nets)
            if len(self._trusted) < _CACHE_MAX:
                self._trusted[addr] = hit
        return hit

    def of(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else "-"
        if not self._nets or not self.is_trusted(peer):
            return peer
        chain = headers.get("x-forwarded-for")
        if not chain:
            return peer
        for hop in reversed([h.strip() for h in chain.split(",")]):
            if hop and not self.is_trusted(hop):
                return _plain(hop)
        return peer


def _plain(hop: str) -> str:
    """A forwarded address as logged: a valid IP, or ``invalid`` (never the client's text)."""
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return "invalid"
