"""Small key/value settings that must outlive restarts (e.g. the generated JWT secret)."""

from __future__ import annotations

from collections.abc import Callable

from .database import Database


class SettingsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def set(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def get_or_create_secret(self, key: str, factory: Callable[[], str]) -> str:
        """The stored value, or a new one from `factory`, stored first.

        Insert-if-absent then read back in one transaction: if two processes race on
        first start, both end up with the same secret and tokens stay valid across them.
        A value that exists is read without a transaction, so a read-only database serves it.
        """
        existing = await self.get(key)
        if existing is not None:
            return existing
        async with self._db.transaction() as tx:
            row = await tx.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
            if row is not None:
                return str(row["value"])
            await tx.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, factory()),
            )
            row = await tx.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        assert row is not None
        return str(row["value"])
