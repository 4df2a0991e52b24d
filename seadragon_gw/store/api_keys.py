"""API keys: long-lived bearer secrets for programs, stored only as SHA-256 hashes.

The plaintext is returned once by `create` and never again; listings identify a key by
its id and its display prefix (`sdk-` plus a few characters).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..secret_tokens import (
    DISPLAY_PREFIX_LEN,
    display_prefix,
    generate_secret,
    hash_secret,
)
from .database import Database
from .errors import Ambiguous

KEY_PREFIX = "sdk-"

_COLUMNS = (
    "id, name, prefix, key_hash, priority, created_at, last_used, is_active, "
    "expires_at, allowed_models, rate_limit_per_min, is_admin, tier"
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    key_hash: str
    priority: int
    created_at: float
    last_used: float | None
    is_active: bool
    expires_at: float | None
    allowed_models: tuple[str, ...] | None
    rate_limit_per_min: int | None
    is_admin: bool
    tier: str | None = None  # a rate_limits.tiers name; None: the default limits

    def is_usable(self, now: float) -> bool:
        """Active and not yet expired at `now`."""
        return self.is_active and (self.expires_at is None or now < self.expires_at)


class ApiKeyRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self,
        name: str,
        priority: int,
        *,
        expires_at: float | None = None,
        allowed_models: Iterable[str] | None = None,
        rate_limit_per_min: int | None = None,
        is_admin: bool = False,
        tier: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext: the only time the plaintext exists outside the caller."""
        plaintext = generate_secret(KEY_PREFIX)
        models = None if allowed_models is None else json.dumps(list(allowed_models))
        async with self._db.transaction() as tx:
            result = await tx.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, priority, created_at, "
                "expires_at, allowed_models, rate_limit_per_min, is_admin, tier) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name, display_prefix(plaintext), hash_secret(plaintext), priority,
                    self._clock(), expires_at, models, rate_limit_per_min, int(is_admin), tier,
                ),
            )
            row = await tx.fetchone(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?",
                                    (result.lastrowid,))
        assert row is not None
        return _from_row(row), plaintext

    async def list_all(self) -> list[ApiKey]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")
        return [_from_row(r) for r in rows]

    async def get(self, key_id: int) -> ApiKey | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return None if row is None else _from_row(row)

    async def get_by_plaintext(self, plaintext: str) -> ApiKey | None:
        """The key whose hash matches, whatever its state: callers check `is_usable`.

        The lookup is by hash, so no plaintext comparison (timed or not) happens here.
        """
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (hash_secret(plaintext),)
        )
        return None if row is None else _from_row(row)

    async def revoke(self, id_or_prefix: str) -> ApiKey | None:
        """Deactivate one key named by decimal id, display prefix or full plaintext.

        Returns the revoked key, or None if nothing matched. A prefix shared by several
        keys raises `Ambiguous` rather than guessing which one was meant.
        """
        async with self._db.transaction() as tx:
            sql, params = _revoke_lookup(id_or_prefix.strip())
            rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE {sql} LIMIT 2",
                                     params)
            if not rows:
                return None
            if len(rows) > 1:
                raise Ambiguous(f"{id_or_prefix!r} matches several keys; revoke by id")
            await tx.execute("UPDATE api_keys SET is_active = 0 WHERE id = ?", (rows[0]["id"],))
        return _from_row(rows[0], is_active=False)

    async def touch_many(self, last_used: Mapping[int, float]) -> None:
        """Record last-use times in one statement batch; never moves a time backwards."""
        if not last_used:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE api_keys SET last_used = MAX(COALESCE(last_used, 0), ?) WHERE id = ?",
                [(when, key_id) for key_id, when in last_used.items()],
            )


def _revoke_lookup(ref: str) -> tuple[str, tuple[object, ...]]:
    if ref.isdigit():
        return "id = ?", (int(ref),)
    if len(ref) > DISPLAY_PREFIX_LEN:
        return "key_hash = ?", (hash_secret(ref),)
    return "prefix = ?", (ref,)


def _from_row(row: sqlite3.Row, *, is_active: bool | None = None) -> ApiKey:
    models = row["allowed_models"]
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        priority=row["priority"],
        created_at=row["created_at"],
        last_used=row["last_used"],
        is_active=bool(row["is_active"]) if is_active is None else is_active,
        expires_at=row["expires_at"],
        allowed_models=None if models is None else tuple(json.loads(models)),
        rate_limit_per_min=row["rate_limit_per_min"],
        is_admin=bool(row["is_admin"]),
        tier=row["tier"],
    )
