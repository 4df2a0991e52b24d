"""IP whitelist matching: which whitelist entry, if any, covers a client address.

The most specific network wins, so an operator can whitelist a subnet at one priority
and single hosts inside it at another. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
what a dual-stack socket reports for IPv4 clients) are treated as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from ..networks import Network, parse_network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkRule(Protocol):
    """What the matcher needs from a whitelist entry (e.g. `store.WhitelistEntry`)."""

    @property
    def network(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def label(self) -> str: ...


RuleT = TypeVar("RuleT", bound=NetworkRule)


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
