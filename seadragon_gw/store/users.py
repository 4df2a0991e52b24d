"""Web UI user accounts. Only argon2 hashes are stored (hashing lives in auth.passwords).

Usernames are unique case-insensitively (`COLLATE NOCASE`), so `Alice` and `alice`
cannot be two different accounts. `token_generation` grows each time a user is deactivated:
tokens carry the generation they were issued in, so none issued before a deactivation works
again after a reactivation.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import Conflict
from .database import Database, Params, Transaction
from .errors import AlreadyExists, StoreError

_COLUMNS = "id, username, password_hash, is_admin, is_active, created_at, last_login, token_generation, tier"


class Reader(Protocol):
    """What read helpers need: a `Database` (outside a transaction) or a `Transaction`."""

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None: ...


class LastActiveAdmin(StoreError, Conflict):
    """Deactivating this user would leave no active admin to undo it."""

    def __init__(self, username: str) -> None:
        super().__init__(f"'{username}' is the last active admin; make another admin first")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str
    is_admin: bool
    is_active: bool
    created_at: float
    last_login: float | None
    token_generation: int = 0
    tier: str | None = None  # a rate_limits.tiers name; None: the default limits


class UserRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(self, username: str, password_hash: str, is_admin: bool = False,
                     tier: str | None = None) -> User:
        """A new active user; AlreadyExists if the name is taken (ignoring case)."""
        async with self._db.transaction() as tx:
            return await insert_user(tx, username, password_hash, is_admin, self._clock(), tier)

    async def get(self, user_id: int) -> User | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else _from_row(row)

    async def get_by_username(self, username: str) -> User | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,)
        )
        return None if row is None else _from_row(row)

    async def list_all(self) -> list[User]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM users ORDER BY id")
        return [_from_row(r) for r in rows]

    async def set_active(self, username_or_id: str | int, active: bool) -> User | None:
        """Enable or disable a user named by username, or by id (an int or decimal string).

        A username wins over an id when a decimal string is both, since names are what
        operators type. Returns the updated user, or None if there is no such user.
        Deactivating bumps the token generation (ending every token issued so far) and
        raises `LastActiveAdmin` instead of leaving no active admin; both are decided in
        the same transaction, so two concurrent deactivations cannot both pass.
        """
        async with self._db.transaction() as tx:
            row = await _find(tx, username_or_id)
            if row is None:
                return None
            if not active and row["is_active"]:
                await _refuse_last_admin(tx, row)
                await tx.execute(
                    "UPDATE users SET is_active = 0, token_generation = token_generation + 1 "
                    "WHERE id = ?", (row["id"],))
            elif active:
                await tx.execute("UPDATE users SET is_active = 1 WHERE id = ?", (row["id"],))
            row = await tx.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (row["id"],))
        assert row is not None
        return _from_row(row)

    async def set_tier(self, username_or_id: str | int, tier: str | None) -> User | None:
        """Give a user a rate-limit tier (None: the default); None if there is no such user."""
        async with self._db.transaction() as tx:
            row = await _find(tx, username_or_id)
            if row is None:
                return None
            await tx.execute("UPDATE users SET tier = ? WHERE id = ?", (tier, row["id"]))
            row = await tx.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (row["id"],))
        assert row is not None
        return _from_row(row)

    async def set_admin(self, username_or_id: str | int, is_admin: bool) -> User | None:
        """Make a user an admin or not; None if there is no such user. Raises `LastActiveAdmin`
        rather than demote the last active admin, decided in the same transaction."""
        async with self._db.transaction() as tx:
            row = await _find(tx, username_or_id)
            if row is None:
                return None
            if not is_admin and row["is_active"]:
                await _refuse_last_admin(tx, row)
            await tx.execute("UPDATE users SET is_admin = ? WHERE id = ?", (int(is_admin), row["id"]))
            row = await tx.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (row["id"],))
        assert row is not None
        return _from_row(row)

    async def update_password_hash(self, user_id: int, password_hash: str) -> bool:
        result = await self._db.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
        )
        return result.rowcount > 0

    async def record_login(self, user_id: int, when: float) -> None:
        await self._db.execute("UPDATE users SET last_login = ? WHERE id = ?", (when, user_id))

    async def count_admins(self) -> int:
        """Active admins only: what matters when refusing to disable the last one."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM users WHERE is_admin = 1 AND is_active = 1"
        )
        return 0 if row is None else int(row[0])


async def insert_user(tx: Transaction, username: str, password_hash: str, is_admin: bool,
                      now: float, tier: str | None = None) -> User:
    """Insert inside the caller's transaction (registration also consumes its token in it);
    AlreadyExists if the name is taken, which rolls the whole transaction back."""
    try:
        result = await tx.execute(
            "INSERT INTO users (username, password_hash, is_admin, created_at, tier) VALUES (?, ?, ?, ?, ?)",
            (username, password_hash, int(is_admin), now, tier),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"user {username!r} already exists") from None
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (result.lastrowid,))
    assert row is not None
    return _from_row(row)


async def active_admin_exists(tx: Reader) -> bool:
    row = await tx.fetchone("SELECT 1 FROM users WHERE is_admin = 1 AND is_active = 1 LIMIT 1")
    return row is not None


async def _refuse_last_admin(tx: Transaction, row: sqlite3.Row) -> None:
    if not row["is_admin"]:
        return
    other = await tx.fetchone(
        "SELECT 1 FROM users WHERE is_admin = 1 AND is_active = 1 AND id != ? LIMIT 1", (row["id"],))
    if other is None:
        raise LastActiveAdmin(row["username"])


async def _find(tx: Transaction, username_or_id: str | int) -> sqlite3.Row | None:
    by_id = f"SELECT {_COLUMNS} FROM users WHERE id = ?"
    if isinstance(username_or_id, int):
        return await tx.fetchone(by_id, (username_or_id,))
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username_or_id,))
    if row is None and username_or_id.isdigit():
        row = await tx.fetchone(by_id, (int(username_or_id),))
    return row


def _from_row(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        is_admin=bool(row["is_admin"]),
        is_active=bool(row["is_active"]),
        created_at=row["created_at"],
        last_login=row["last_login"],
        token_generation=row["token_generation"],
        tier=row["tier"],
    )
