"""The client's address, believing forwarding headers only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

from ..networks import parse_network


class ClientAddress:
    """`X-Forwarded-For` / `X-Real-IP` are trusted only when the TCP peer is a configured
    proxy; anyone else could claim to be a whitelisted address."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted = [ipaddress.ip_network(parse_network(p)) for p in trusted_proxies]

    def is_trusted(self, ip: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._trusted)

    def resolve(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self.is_trusted(peer):
            return peer
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded:
            hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
            for hop in reversed(hops):  # the nearest hop not ours is the client
                if not self.is_trusted(hop):
                    return hop
            if hops:
                return hops[0]
        real = headers.get(b"x-real-ip")
        return real.decode("latin-1").strip() if real else peer
