"""Whether the database file can take a write right now, and one log line when that changes.

SQLite cannot be asked this safely: a write attempted on a file that turned immutable leaves a
hot journal behind that breaks later reads, and (in WAL mode) touching a memory-mapped `-shm`
that turned immutable kills the process with SIGBUS. So the store looks before it writes, with
calls that open no file descriptor (closing any descriptor of the database file would drop
SQLite's POSIX locks): `stat`, `statvfs` and `access`. A background check does the same every
few seconds, so a deleted file or a file made read-only is reported even when nobody writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DatabaseGone, DatabaseUnavailable, ReadOnlyDatabase

log = logging.getLogger("seadragon_gw.store")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why writes are refused: the error callers get, and the detail only the log gets."""

    error: Callable[[], DatabaseUnavailable]  # ReadOnlyDatabase or DatabaseGone
    detail: str


def unwritable_reason(path: str) -> str | None:
    """Why `path` (an existing database file) cannot be written, in words; None if it can."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        pass
    if not os.access(path, os.W_OK):
        return "is not writable (its permissions or an immutable flag)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"is in a folder that is not writable ({folder}: SQLite creates its journal there)"
    return None


class DatabaseFile:
    """The file one `Database` opened: is it still that file, and may we write it?"""

    def __init__(self, path: str, opened_read_only: str | None) -> None:
        self.path = path
        self.opened_read_only = opened_read_only
        self._identity = _identity(path)
        self._reported: Problem | None = None
        self._task: asyncio.Task[None] | None = None

    def check(self) -> Problem | None:
        """The current problem (logged at ERROR the first time it appears), or None."""
        problem = self._problem()
        self._report(problem)
        return problem

    def refused(self, detail: str) -> ReadOnlyDatabase:
        """SQLite itself refused a write that the checks let through (a race with chmod)."""
        self._report(Problem(ReadOnlyDatabase, detail))
        return ReadOnlyDatabase()

    def start(self, interval_s: float) -> None:
        self.check()
        self._task = asyncio.create_task(self._watch(interval_s), name="database-file-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()

    def _problem(self) -> Problem | None:
        try:
            current = _identity(self.path)
        except OSError as exc:
            return Problem(ReadOnlyDatabase, f"cannot be looked at ({exc.strerror or exc})")
        if current is None:
            return Problem(DatabaseGone, "was deleted")
        if current != self._identity:
            return Problem(DatabaseGone, "was replaced by another file")
        if self.opened_read_only is not None:
            return Problem(ReadOnlyDatabase, self.opened_read_only)
        reason = unwritable_reason(self.path)
        return None if reason is None else Problem(ReadOnlyDatabase, reason)

    def _report(self, problem: Problem | None) -> None:
        """One line per change of state, not one per refused write."""
        if problem == self._reported:
            return
        previous, self._reported = self._reported, problem
        if problem is None:
            log.info("database %s takes writes again", self.path)
        elif problem.error is DatabaseGone:
            log.error("database %s %s while the gateway runs: writes are refused (503) until the "
                      "gateway is restarted; reads use the data it had", self.path, problem.detail)
        elif previous is None or previous.error is not ReadOnlyDatabase:
            fix = " and the gateway restarted" if self.opened_read_only else ""
            log.error("database %s %s: reads work, but writes (logins, key, user and whitelist changes, "
                      "last-used times) fail with 503 'database is read-only' until it is writable%s",
                      self.path, problem.detail, fix)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
