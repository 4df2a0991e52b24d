"""The crash log: backend failures, backends going down, and the gateway's internal errors.

`stack_trace` is only ever set for internal errors (an exception in the gateway itself); it
is for the operator, never part of an answer to a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from typing import Literal

from .database import Database

CrashKind = Literal["upstream_error", "internal_error", "backend_down"]


@dataclass(frozen=True, slots=True)
class CrashRow:
    ts: float
    kind: CrashKind
    error: str
    model: str | None = None
    request_id: str | None = None
    backend: str | None = None
    route: str | None = None
    status: int | None = None
    stack_trace: str | None = None


_COLUMNS = ", ".join(f.name for f in fields(CrashRow))
_INSERT = f"INSERT INTO crash_log ({_COLUMNS}) VALUES ({', '.join('?' * len(fields(CrashRow)))})"


class CrashRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_many(self, rows: Sequence[CrashRow]) -> None:
        if not rows:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(_INSERT, [astuple(row) for row in rows])

    async def recent(self, limit: int) -> list[CrashRow]:
        """Newest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM crash_log ORDER BY ts DESC, id DESC LIMIT ?", (limit,))
        return [CrashRow(**{f.name: r[f.name] for f in fields(CrashRow)}) for r in rows]

    async def prune(self, before: float) -> int:
        result = await self._db.execute("DELETE FROM crash_log WHERE ts < ?", (before,))
        return result.rowcount
