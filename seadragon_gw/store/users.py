"""Web UI user accounts. Only argon2 hashes are stored (hashing lives in auth.passwords).

Usernames are unique case-insensitively (`COLLATE NOCASE`), so `Alice` and `alice`
cannot be two different accounts.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .database import Database, Transaction
from .errors import AlreadyExists

_COLUMNS = "id, username, password_hash, is_admin, is_active, created_at, last_login"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str
    is_admin: bool
    is_active: bool
    created_at: float
    last_login: float | None


class UserRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(self, username: str, password_hash: str, is_admin: bool = False) -> User:
        """A new active user; AlreadyExists if the name is taken (ignoring case)."""
        try:
            async with self._db.transaction() as tx:
                result = await tx.execute(
                    "INSERT INTO users (username, password_hash, is_admin, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (username, password_hash, int(is_admin), self._clock()),
                )
                row = await tx.fetchone(
                    f"SELECT {_COLUMNS} FROM users WHERE id = ?", (result.lastrowid,)
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {username!r} already exists") from None
        assert row is not None
        return _from_row(row)

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
        """
        async with self._db.transaction() as tx:
            row = await _find(tx, username_or_id)
            if row is None:
                return None
            await tx.execute(
                "UPDATE users SET is_active = ? WHERE id = ?", (int(active), row["id"])
            )
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
    )
