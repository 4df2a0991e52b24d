"""IP networks as the whitelist stores and matches them: one canonical spelling per network.

Kept apart from `auth/` and `store/` because both need it (the store normalises on the way
in, so its UNIQUE constraint and `remove` agree with what an operator means).
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> str:
    """The canonical CIDR form of an IP or network (`10.1.2.3` -> `10.1.2.3/32`).

    Host bits are allowed and dropped (`10.0.0.7/8` -> `10.0.0.0/8`); IPv4-mapped IPv6
    networks become IPv4 so they match the same clients. Raises ValueError for garbage.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty network: expected an IP address or CIDR like 10.0.0.0/8")
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"not an IP address or CIDR network: {text!r} (expected e.g. 10.0.0.0/8)"
        ) from None
    return str(_unmap_network(network))


def _unmap_network(network: Network) -> Network:
    """`::ffff:10.0.0.0/104` -> `10.0.0.0/8`; anything else unchanged."""
    if not isinstance(network, ipaddress.IPv6Network) or network.prefixlen < 96:
        return network
    mapped = network.network_address.ipv4_mapped
    if mapped is None:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
