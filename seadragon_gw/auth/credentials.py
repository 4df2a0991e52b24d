"""In-memory copy of the stored credentials, so authentication never waits on SQLite.

The cache reloads after the admin API changes a row, and polls `PRAGMA data_version` to see
changes committed by another process (the CLI) within `poll_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from ..store.api_keys import ApiKey
from ..store.bundle import Store
from ..store.users import User
from ..store.whitelist_repo import WhitelistEntry
from .whitelist import WhitelistMatcher

log = logging.getLogger("seadragon_gw.auth")


@dataclass(frozen=True)
class CredentialSnapshot:
    keys_by_hash: dict[str, ApiKey] = field(default_factory=dict)
    whitelist: WhitelistMatcher[WhitelistEntry] = field(
        default_factory=lambda: WhitelistMatcher.from_entries([]))
    users: dict[str, User] = field(default_factory=dict)


class CredentialCache:
    def __init__(self, store: Store, poll_s: float = 2.0) -> None:
        self.snapshot = CredentialSnapshot()
        self.poll_s = poll_s
        self._store = store
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin polling for other processes' changes (call `reload` once before)."""
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="credential-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        store = self._store
        self._version = await store.db.data_version()
        keys = await store.api_keys.list_all()
        entries = await store.whitelist.list_all()
        users = await store.users.list_all()
        self.snapshot = CredentialSnapshot(
            keys_by_hash={k.key_hash: k for k in keys},
            whitelist=WhitelistMatcher.from_entries(entries),
            users={u.username.lower(): u for u in users},
        )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if await self._store.db.data_version() != self._version:
                    await self.reload()
            except Exception as exc:  # keep serving from the last good snapshot
                log.error("credential reload failed: %s", exc)
