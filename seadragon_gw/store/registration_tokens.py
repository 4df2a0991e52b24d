"""One-time registration tokens: how an admin lets a new user create an account.

Consumption is a single conditional UPDATE, so the database, not application code,
decides the one winner when the same token is redeemed concurrently (even from two
processes).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..auth.secrets_util import display_prefix, generate_secret, hash_secret
from .database import Database

TOKEN_PREFIX = "sdr-"

_COLUMNS = "id, prefix, token_hash, is_admin, created_at, expires_at, used_at, used_by, note"


@dataclass(frozen=True, slots=True)
class RegistrationToken:
    id: int
    prefix: str
    token_hash: str
    is_admin: bool
    created_at: float
    expires_at: float | None
    used_at: float | None
    used_by: str | None
    note: str

    def is_redeemable(self, now: float) -> bool:
        return self.used_at is None and (self.expires_at is None or now < self.expires_at)


class RegistrationTokenRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, *, is_admin: bool = False, expires_at: float | None = None, note: str = ""
    ) -> tuple[RegistrationToken, str]:
        """A new token and its plaintext, which is not stored and cannot be shown again."""
        plaintext = generate_secret(TOKEN_PREFIX)
        async with self._db.transaction() as tx:
            result = await tx.execute(
                "INSERT INTO registration_tokens "
                "(prefix, token_hash, is_admin, created_at, expires_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (display_prefix(plaintext), hash_secret(plaintext), int(is_admin),
                 self._clock(), expires_at, note),
            )
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM registration_tokens WHERE id = ?", (result.lastrowid,)
            )
        assert row is not None
        return _from_row(row), plaintext

    async def expire_unused(self, note: str, now: float) -> int:
        """End every unused token carrying `note` (superseded bootstrap tokens)."""
        result = await self._db.execute(
            "UPDATE registration_tokens SET expires_at = ? WHERE note = ? AND used_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (now, note, now),
        )
        return result.rowcount

    async def list_all(self) -> list[RegistrationToken]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM registration_tokens ORDER BY id"
        )
        return [_from_row(r) for r in rows]

    async def consume(
        self, plaintext: str, username: str, now: float
    ) -> RegistrationToken | None:
        """Mark the token used by `username`; None if unknown, already used or expired.

        Exactly one of any number of concurrent callers gets the token back.
        """
        token_hash = hash_secret(plaintext)
        async with self._db.transaction() as tx:
            result = await tx.execute(
                "UPDATE registration_tokens SET used_at = ?, used_by = ? "
                "WHERE token_hash = ? AND used_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (now, username, token_hash, now),
            )
            if result.rowcount != 1:
                return None
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM registration_tokens WHERE token_hash = ?",
                (token_hash,),
            )
        assert row is not None
        return _from_row(row)


def _from_row(row: sqlite3.Row) -> RegistrationToken:
    return RegistrationToken(
        id=row["id"],
        prefix=row["prefix"],
        token_hash=row["token_hash"],
        is_admin=bool(row["is_admin"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        used_by=row["used_by"],
        note=row["note"],
    )
