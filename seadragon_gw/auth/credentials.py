"""In-memory copy of the stored credentials, so authentication never waits on SQLite.

The cache reloads after this process changes a row (the admin service, logout), takes a
user's fresh row at each login (`put_user`: a user the CLI created a moment ago can use
their JWT at once), and polls `PRAGMA data_version` every `poll_s` seconds to see changes
committed by another process (the CLI). `request_reload` wakes the poll early, at most once
per `min_reload_s`, for a credential that names someone the snapshot does not know yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from ..store.api_keys import ApiKey
from ..store.bundle import Store
from ..store.sessions import SessionRepo
from ..store.users import User
from ..store.whitelist_repo import WhitelistEntry
from .whitelist import WhitelistMatcher

log = logging.getLogger("seadragon_gw.auth")


@dataclass(frozen=True)
class CredentialSnapshot:
    """`keys_by_id` and `whitelist_names` (label, else network) serve async jobs, whose
    credential is looked at again when they run."""

    keys_by_hash: dict[str, ApiKey] = field(default_factory=dict)
    whitelist: WhitelistMatcher[WhitelistEntry] = field(
        default_factory=lambda: WhitelistMatcher.from_entries([]))
    users: dict[str, User] = field(default_factory=dict)
    revoked_sessions: frozenset[str] = frozenset()
    keys_by_id: dict[int, ApiKey] = field(default_factory=dict)
    whitelist_names: frozenset[str] = frozenset()


class CredentialCache:
    def __init__(self, store: Store, sessions: SessionRepo, poll_s: float = 2.0,
                 min_reload_s: float = 1.0) -> None:
        self.snapshot = CredentialSnapshot()
        self.poll_s = poll_s
        self.min_reload_s = min_reload_s
        self._store = store
        self._sessions = sessions
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_request = -float("inf")

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
        """Read every credential afresh. Serialised with `put_user`, so a login's fresh row
        is never overwritten by a reload that read the table before it."""
        async with self._lock:
            store = self._store
            self._version = await store.db.data_version()
            keys = await store.api_keys.list_all()
            entries = await store.whitelist.list_all()
            users = await store.users.list_all()
            revoked = await self._sessions.revoked_ids()
            self.snapshot = CredentialSnapshot(
                keys_by_hash={k.key_hash: k for k in keys},
                whitelist=WhitelistMatcher.from_entries(entries),
                users={u.username.lower(): u for u in users},
                revoked_sessions=revoked,
                keys_by_id={k.id: k for k in keys},
                whitelist_names=frozenset(e.label or e.network for e in entries),
            )

    async def put_user(self, user: User) -> None:
        """Take one user's current row (read by a login) without reloading everything."""
        async with self._lock:
            users = {**self.snapshot.users, user.username.lower(): user}
            self.snapshot = dataclasses.replace(self.snapshot, users=users)

    def request_reload(self) -> None:
        """Ask the poll loop to reload soon (rate-limited; safe to call on every request)."""
        now = time.monotonic()
        if now - self._last_request >= self.min_reload_s:
            self._last_request = now
            self._wake.set()

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                if forced or await self._store.db.data_version() != self._version:
                    await self.reload()
            except Exception as exc:
                log.error("credential reload failed: %s", exc)
