"""IP whitelist matching: which whitelist entry, if any, covers a client address.

The most specific network wins, so an operator can whitelist a subnet at one priority
and single hosts inside it at another. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
what a dual-stack socket reports for IPv4 clients) are treated as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class NetworkRule(Protocol):
    """What the matcher needs from a whitelist entry (e.g. `store.WhitelistEntry`)."""

    @property
    def network(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def label(self) -> str: ...


RuleT = TypeVar("RuleT", bound=NetworkRule)


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


class WhitelistMatcher(Generic[RuleT]):
    """An immutable index from network to entry, looked up by prefix length, longest first.

    Lookup costs one dict probe per distinct prefix length in use, not one per entry.
    """

    def __init__(self, tables: dict[int, list[tuple[int, dict[Network, RuleT]]]]) -> None:
        self._tables = tables

    @classmethod
    def from_entries(cls, entries: Iterable[RuleT]) -> WhitelistMatcher[RuleT]:
        """Index `entries`; on a duplicate network the lower (better) priority is kept."""
        by_version: dict[int, dict[int, dict[Network, RuleT]]] = {4: {}, 6: {}}
        for entry in entries:
            network = ipaddress.ip_network(parse_network(entry.network))
            table = by_version[network.version].setdefault(network.prefixlen, {})
            current = table.get(network)
            if current is None or entry.priority < current.priority:
                table[network] = entry
        tables = {
            version: sorted(lengths.items(), reverse=True)
            for version, lengths in by_version.items()
        }
        return cls(tables)

    def match(self, ip: str) -> RuleT | None:
        """The most specific entry covering `ip`, or None (also for unparsable addresses)."""
        address = _parse_address(ip)
        if address is None:
            return None
        for prefixlen, table in self._tables[address.version]:
            entry = table.get(_enclosing(address, prefixlen))
            if entry is not None:
                return entry
        return None

    def __len__(self) -> int:
        return sum(len(t) for lengths in self._tables.values() for _, t in lengths)


def _parse_address(ip: str) -> Address | None:
    if not isinstance(ip, str):
        return None
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0].strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _enclosing(address: Address, prefixlen: int) -> Network:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv4Network((address, prefixlen), strict=False)
    return ipaddress.IPv6Network((address, prefixlen), strict=False)


def _unmap_network(network: Network) -> Network:
    """`::ffff:10.0.0.0/104` -> `10.0.0.0/8`; anything else unchanged."""
    if not isinstance(network, ipaddress.IPv6Network) or network.prefixlen < 96:
        return network
    mapped = network.network_address.ipv4_mapped
    if mapped is None:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
