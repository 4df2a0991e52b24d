"""Models that were asked for and that no backend serves, counted per model and client.

One row per (model key, client), so a client asking for the same missing model all day is
one row with a count, not a row per request. `model_name` keeps the spelling last asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .database import Database


@dataclass(frozen=True, slots=True)
class MissingModel:
    model_key: str
    client: str
    model_name: str
    count: int
    first_seen: float
    last_seen: float


class MissingModelRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_many(self, seen: Sequence[MissingModel]) -> None:
        """Add counts (already summed per model and client by the caller)."""
        if not seen:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO missing_models (model_key, client, model_name, count, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model_key, client) DO UPDATE SET "
                "count = count + excluded.count, first_seen = MIN(first_seen, excluded.first_seen), "
                "last_seen = MAX(last_seen, excluded.last_seen), model_name = excluded.model_name",
                [(m.model_key, m.client, m.model_name, m.count, m.first_seen, m.last_seen) for m in seen])

    async def recent(self, limit: int) -> list[MissingModel]:
        """Most recently asked for first."""
        rows = await self._db.fetchall(
            "SELECT model_key, client, model_name, count, first_seen, last_seen FROM missing_models "
            "ORDER BY last_seen DESC, model_key, client LIMIT ?", (limit,))
        return [MissingModel(r["model_key"], r["client"], r["model_name"], r["count"], r["first_seen"],
                             r["last_seen"]) for r in rows]

    async def prune(self, before: float) -> int:
        result = await self._db.execute("DELETE FROM missing_models WHERE last_seen < ?", (before,))
        return result.rowcount
