"""Login sessions and their rotating refresh tokens.

A session is one password login. Each refresh token (its JWT `jti`) may be used once: using
it issues the next one in the same session. A refresh token presented a second time means
two parties hold it (one stole it), so the whole session is revoked. Logout revokes the
session; the credential cache keeps the ids of revoked sessions whose tokens could still be
alive, so their access tokens stop working too.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .database import Database, Transaction


class Rotation(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    REUSED = "reused"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class RotationResult:
    outcome: Rotation
    session_id: str | None = None


class SessionRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def open(self, user_id: int, refresh_jti: str, expires_at: float) -> str:
        """A new session whose first refresh token is `refresh_jti`; also drops sessions
        that ended long enough ago that no token of theirs can be alive."""
        session_id = secrets.token_urlsafe(16)
        now = self._clock()
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            await tx.execute(
                "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (session_id, user_id, now, expires_at))
            await _add_token(tx, session_id, refresh_jti, now)
        return session_id

    async def rotate(self, user_id: int, used_jti: str, next_jti: str, expires_at: float) -> RotationResult:
        """Spend `used_jti` and make `next_jti` the session's next refresh token."""
        now = self._clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT r.used_at, s.id, s.revoked_at FROM refresh_tokens r "
                "JOIN sessions s ON s.id = r.session_id WHERE r.jti = ? AND s.user_id = ?",
                (used_jti, user_id))
            if row is None:
                return RotationResult(Rotation.UNKNOWN)
            session_id = str(row["id"])
            if row["revoked_at"] is not None:
                return RotationResult(Rotation.REVOKED, session_id)
            if row["used_at"] is not None:
                await _revoke(tx, session_id, now)
                return RotationResult(Rotation.REUSED, session_id)
            await tx.execute("UPDATE refresh_tokens SET used_at = ? WHERE jti = ?", (now, used_jti))
            await tx.execute("UPDATE sessions SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                             (expires_at, session_id))
            await _add_token(tx, session_id, next_jti, now)
        return RotationResult(Rotation.ROTATED, session_id)

    async def session_of(self, refresh_jti: str) -> str | None:
        row = await self._db.fetchone("SELECT session_id FROM refresh_tokens WHERE jti = ?", (refresh_jti,))
        return None if row is None else str(row["session_id"])

    async def revoke(self, session_id: str) -> bool:
        """True if the session existed and was live until now."""
        async with self._db.transaction() as tx:
            return await _revoke(tx, session_id, self._clock())

    async def revoked_ids(self) -> frozenset[str]:
        """Revoked sessions that have not ended yet: their access tokens must be refused."""
        rows = await self._db.fetchall(
            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > ?", (self._clock(),))
        return frozenset(str(r["id"]) for r in rows)


async def _add_token(tx: Transaction, session_id: str, jti: str, now: float) -> None:
    await tx.execute("INSERT INTO refresh_tokens (jti, session_id, issued_at) VALUES (?, ?, ?)",
                     (jti, session_id, now))


async def _revoke(tx: Transaction, session_id: str, now: float) -> bool:
    result = await tx.execute(
        "UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, session_id))
    return result.rowcount == 1
