"""Whitelisted client networks, stored in canonical CIDR form.

Normalising on the way in (`10.0.0.1` -> `10.0.0.1/32`) makes the UNIQUE constraint and
`remove` agree with what an operator means, however they spell the address.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..networks import parse_network
from .database import Database
from .errors import AlreadyExists

_COLUMNS = "id, network, priority, label, created_at"


@dataclass(frozen=True, slots=True)
class WhitelistEntry:
    id: int
    network: str
    priority: int
    label: str
    created_at: float


class WhitelistRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def add(self, network: str, priority: int = 1, label: str = "") -> WhitelistEntry:
        """Whitelist a network; ValueError for a bad address, AlreadyExists for a repeat."""
        canonical = parse_network(network)
        try:
            async with self._db.transaction() as tx:
                result = await tx.execute(
                    "INSERT INTO ip_whitelist (network, priority, label, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (canonical, priority, label, self._clock()),
                )
                row = await tx.fetchone(
                    f"SELECT {_COLUMNS} FROM ip_whitelist WHERE id = ?", (result.lastrowid,)
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"network {canonical} is already whitelisted") from None
        assert row is not None
        return _from_row(row)

    async def remove(self, network: str) -> bool:
        """True if the network (in any spelling) was whitelisted and is now removed."""
        canonical = parse_network(network)
        result = await self._db.execute(
            "DELETE FROM ip_whitelist WHERE network = ?", (canonical,)
        )
        return result.rowcount > 0

    async def list_all(self) -> list[WhitelistEntry]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM ip_whitelist ORDER BY id")
        return [_from_row(r) for r in rows]


def _from_row(row: sqlite3.Row) -> WhitelistEntry:
    return WhitelistEntry(
        id=row["id"],
        network=row["network"],
        priority=row["priority"],
        label=row["label"],
        created_at=row["created_at"],
    )
