"""Is the gateway able to serve: its backends, its queue and its database, in one report.

`healthy`: every backend is up and the database answers and takes writes. `degraded`: it
serves, but not fully (a backend down, drained or not checked yet, or a database that only
reads). `unhealthy`: nothing can serve (no backend up, or none configured) or the database
does not answer. Load balancers read the status alone; the detail (backend names, URLs,
errors) is for credentialed callers (`health.detail`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .. import __version__
from ..backends.backend import Backend
from ..backends.registry import Registry
from ..config import HealthConfig
from ..lifecycle.service import RequestService
from ..queue.scheduler import Scheduler
from ..store.database import Database
from ..store.errors import StoreError

Status = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    ok: bool  # answers a query
    writable: bool
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "writable": self.writable, "error": self.error}


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Status
    checked_at: float
    backends: list[dict[str, Any]]
    waiting: int
    processing: int
    database: DatabaseHealth

    @property
    def serving(self) -> bool:
        return self.status != "unhealthy"

    def as_json(self, detail: bool) -> dict[str, Any]:
        """The status and time for anyone; everything else only with `detail`."""
        timestamp = datetime.fromtimestamp(self.checked_at, UTC).isoformat().replace("+00:00", "Z")
        report: dict[str, Any] = {"status": self.status, "timestamp": timestamp}
        if detail:
            report.update({"version": __version__, "backends": self.backends,
                           "queue": {"waiting": self.waiting, "processing": self.processing},
                           "database": self.database.as_json()})
        return report


def status_of(backends: list[Backend], database: DatabaseHealth) -> Status:
    up = sum(1 for b in backends if b.healthy or (b.managed and b.may_queue))  # on demand: starts when asked
    if up == 0 or not database.ok:
        return "unhealthy"
    return "healthy" if up == len(backends) and database.writable else "degraded"


def backend_json(backend: Backend) -> dict[str, Any]:
    url, netloc, shown = _without_userinfo(backend.config.url)
    error = backend.last_error
    if error is not None and netloc != shown:
        error = error.replace(netloc, shown)  # the upstream's messages name its URL
    return {"name": backend.name, "kind": backend.kind, "url": url, "state": backend.state.value,
            "healthy": backend.healthy, "active": backend.active, "max_concurrent": backend.config.max_concurrent,
            "models": len(backend.models), "error": error}


def _without_userinfo(url: str) -> tuple[str, str, str]:
    """A URL with `user:password@` would put a secret in the report: the URL without it, and
    its host part as written and as shown."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, parts.netloc, parts.netloc
    shown = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=shown)), parts.netloc, shown


class HealthCheck:
    def __init__(self, config: HealthConfig, registry: Registry, scheduler: Scheduler, database: Database,
                 clock: Callable[[], float], requests: RequestService | None = None) -> None:
        self.config = config
        self._requests = requests
        self._registry = registry
        self._scheduler = scheduler
        self._database = database
        self._clock = clock

    async def report(self) -> HealthReport:
        database = await self.check_database()
        backends = list(self._registry.backends)
        return HealthReport(
            status="unhealthy" if self._requests is not None and self._requests.refusing else
            status_of(backends, database),
            checked_at=self._clock(),
            backends=[backend_json(b) for b in backends],
            waiting=self._scheduler.waiting(),
            processing=self._scheduler.processing(),
            database=database,
        )

    async def check_database(self) -> DatabaseHealth:
        """One `SELECT 1` within `health.database_timeout_s`, then the file check the store
        makes before every write (deleted, replaced, read-only)."""
        try:
            await asyncio.wait_for(self._database.fetchone("SELECT 1"), self.config.database_timeout_s)
        except TimeoutError:
            return DatabaseHealth(False, False, "the database did not answer within "
                                                f"{self.config.database_timeout_s:g}s")
        except (sqlite3.Error, StoreError, ValueError) as exc:
            return DatabaseHealth(False, False, f"the database cannot be read ({type(exc).__name__})")
        problem = self._database.file.check()
        if problem is not None:
            return DatabaseHealth(True, False, problem.error().message)
        return DatabaseHealth(True, True, None)
