"""One-time registration tokens: how an admin lets a new user create an account.

Redeeming a token and creating its user happen in one write transaction (`BEGIN IMMEDIATE`
holds SQLite's write lock, also against other processes), so exactly one of any number of
concurrent redemptions wins, and a registration that fails (the name is taken) leaves the
token unused. A bootstrap token (the one printed at the first start) only works while no
active admin exists, however that admin was made.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..secret_tokens import display_prefix, generate_secret, hash_secret
from .database import Database
from .users import Reader, User, active_admin_exists, insert_user

TOKEN_PREFIX = "sdr-"

_COLUMNS = ("id, prefix, token_hash, is_admin, created_at, expires_at, used_at, used_by, note, "
            "is_bootstrap")


class Refusal(enum.Enum):
    """Why a token cannot be redeemed (callers word it; this layer only classifies)."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    ADMIN_EXISTS = "admin exists"


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
    is_bootstrap: bool = False

    def is_redeemable(self, now: float) -> bool:
        return self.used_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class Redemption:
    """The user a token made, or why it made none."""

    user: User | None
    refusal: Refusal | None = None


class RegistrationTokenRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, *, is_admin: bool = False, expires_at: float | None = None, note: str = "",
        is_bootstrap: bool = False,
    ) -> tuple[RegistrationToken, str]:
        """A new token and its plaintext, which is not stored and cannot be shown again."""
        plaintext = generate_secret(TOKEN_PREFIX)
        async with self._db.transaction() as tx:
            result = await tx.execute(
                "INSERT INTO registration_tokens "
                "(prefix, token_hash, is_admin, created_at, expires_at, note, is_bootstrap) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (display_prefix(plaintext), hash_secret(plaintext), int(is_admin),
                 self._clock(), expires_at, note, int(is_bootstrap)),
            )
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM registration_tokens WHERE id = ?", (result.lastrowid,)
            )
        assert row is not None
        return _from_row(row), plaintext

    async def expire_unused_bootstrap(self, now: float) -> int:
        """End every unused bootstrap token (a new start printed a newer one)."""
        result = await self._db.execute(
            "UPDATE registration_tokens SET expires_at = ? WHERE is_bootstrap = 1 AND used_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (now, now),
        )
        return result.rowcount

    async def list_all(self) -> list[RegistrationToken]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM registration_tokens ORDER BY id"
        )
        return [_from_row(r) for r in rows]

    async def check(self, plaintext: str, now: float) -> Refusal | None:
        """Why the token would be refused now, or None: a cheap look before the caller spends
        a password hash on a registration that cannot succeed (`redeem` decides again)."""
        return await _refusal(self._db, hash_secret(plaintext), now)

    async def redeem(self, plaintext: str, username: str, password_hash: str, now: float) -> Redemption:
        """Use the token for a new user `username`, in one transaction.

        Raises AlreadyExists if the name is taken; the transaction then rolls back, so the
        token stays unused.
        """
        token_hash = hash_secret(plaintext)
        async with self._db.transaction() as tx:
            refusal = await _refusal(tx, token_hash, now)
            if refusal is not None:
                return Redemption(None, refusal)
            row = await tx.fetchone("SELECT is_admin FROM registration_tokens WHERE token_hash = ?",
                                    (token_hash,))
            assert row is not None
            await tx.execute("UPDATE registration_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?",
                             (now, username, token_hash))
            user = await insert_user(tx, username, password_hash, bool(row["is_admin"]), now)
        return Redemption(user)


async def _refusal(tx: Reader, token_hash: str, now: float) -> Refusal | None:
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM registration_tokens WHERE token_hash = ?",
                            (token_hash,))
    if row is None:
        return Refusal.UNKNOWN
    token = _from_row(row)
    if token.used_at is not None:
        return Refusal.USED
    if not token.is_redeemable(now):
        return Refusal.EXPIRED
    if token.is_bootstrap and await active_admin_exists(tx):
        return Refusal.ADMIN_EXISTS
    return None


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
        is_bootstrap=bool(row["is_bootstrap"]),
    )
