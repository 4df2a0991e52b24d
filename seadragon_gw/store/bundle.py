"""The opened store: one database connection and a repo per table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .api_keys import ApiKeyRepo
from .crashes import CrashRepo
from .database import Database
from .jobs import JobRepo
from .missing_models import MissingModelRepo
from .registration_tokens import RegistrationTokenRepo
from .settings import SettingsRepo
from .usage import UsageRepo
from .users import UserRepo
from .whitelist_repo import WhitelistRepo

WATCH_INTERVAL_S = 5.0


@dataclass
class Store:
    db: Database
    api_keys: ApiKeyRepo
    whitelist: WhitelistRepo
    users: UserRepo
    registration_tokens: RegistrationTokenRepo
    settings: SettingsRepo
    usage: UsageRepo
    crashes: CrashRepo
    missing_models: MissingModelRepo
    jobs: JobRepo

    @classmethod
    async def open(cls, path: str, clock: Callable[[], float] = time.time, *,
                   watch_interval_s: float | None = WATCH_INTERVAL_S) -> Store:
        """Open (creating and migrating as needed); raises StoreError with one clear line.

        An unwritable file opens read-only (writes raise `ReadOnlyDatabase`); the file is
        checked every `watch_interval_s` (config `database_check_s`; None: never, for a
        short look) and a problem is logged once.
        """
        db = await Database.open(path, watch_interval_s=watch_interval_s)
        return cls(
            db=db,
            api_keys=ApiKeyRepo(db, clock),
            whitelist=WhitelistRepo(db, clock),
            users=UserRepo(db, clock),
            registration_tokens=RegistrationTokenRepo(db, clock),
            settings=SettingsRepo(db),
            usage=UsageRepo(db),
            crashes=CrashRepo(db),
            missing_models=MissingModelRepo(db),
            jobs=JobRepo(db),
        )

    async def close(self) -> None:
        await self.jobs.writes.close()
        await self.db.close()
