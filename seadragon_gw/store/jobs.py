"""Async jobs in SQLite: written before the client hears "queued", finished in one statement.

Every write goes through one ordered batch (`JobWrites`): writes that arrive while a commit is
in progress are committed together in the next transaction, so a burst of submissions costs a
few commits, not one each, while every submitter still hears back only once its row is durable.
A job ends with one `UPDATE ... WHERE status IN ('queued', 'processing')`: a cancelled or
finished job is never overwritten, and a job whose `completed` row committed is never run again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .database import Database, Params, WriteResult

log = logging.getLogger("seadragon_gw.jobs")

JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
EndStatus = Literal["completed", "failed", "cancelled"]
CallbackState = Literal["pending", "delivered", "failed"]
_OPEN = "('queued', 'processing')"
_CHUNK = 500  # ids per statement (SQLite's variable limit is 999 in older builds)

_COLUMNS = ("n, id, route, model, owner_kind, owner_name, owner_key, principal, priority, status, created_at, "
            "started_at, finished_at, attempts, result, error, meta, stream_forced, callback_url, callback_state, "
            "profile")


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a job belongs to: the credential's kind and name (and key id for API keys, whose
    names need not be unique)."""

    kind: str
    name: str
    key: int | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    route: str
    model: str | None
    body: bytes
    owner: Owner
    principal: dict[str, Any]
    priority: float
    created_at: float
    stream_forced: bool
    callback_url: str | None
    profile: str | None = None  # the managed profile it must run with (an OCR resolution)


@dataclass(frozen=True, slots=True)
class StoredJob:
    n: int
    id: str
    route: str
    model: str | None
    owner: Owner
    principal: dict[str, Any]
    priority: float
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    result: bytes | None
    error: str | None
    meta: dict[str, Any]
    stream_forced: bool
    callback_url: str | None
    callback_state: CallbackState | None
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What the runner's index needs of a queued job (no body: that is read when it runs)."""

    id: str
    route: str
    model: str | None
    principal: str  # as stored (JSON): equal ones are shared in memory
    created_at: float
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class Runnable:
    status: JobStatus
    body: bytes
    callback_url: str | None


@dataclass(frozen=True, slots=True)
class Ending:
    """How a job ended, written in one statement."""

    status: EndStatus
    at: float
    result: bytes | None = None
    error: str | None = None
    meta: dict[str, Any] | None = None


class JobWrites:
    """Writes in arrival order; those that queue up during a commit share the next one."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[tuple[str, Params, asyncio.Future[WriteResult]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, sql: str, params: Params) -> asyncio.Future[WriteResult]:
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append((sql, params, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="job-writes")
        return future

    async def close(self) -> None:
        """Wait for what is queued to be written (never cancelled half-way)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    async with self._db.transaction() as tx:
                        results = [await tx.execute(sql, params) for sql, params, _ in batch]
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None


def _logged(future: asyncio.Future[WriteResult], what: str) -> None:
    """For writes nobody waits for: a failure is logged (and retrieved), not lost."""

    def done(f: asyncio.Future[WriteResult]) -> None:
        if not f.cancelled() and f.exception() is not None:
            log.warning("job %s not written: %s", what, f.exception())

    future.add_done_callback(done)


class JobRepo:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.writes = JobWrites(db)

    async def insert(self, job: NewJob) -> None:
        """Returns once the row is committed."""
        await self.writes.submit(
            "INSERT INTO jobs (id, route, model, body, owner_kind, owner_name, owner_key, principal, priority, "
            "status, created_at, stream_forced, callback_url, profile) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            (job.id, job.route, job.model, job.body, job.owner.kind, job.owner.name, job.owner.key,
             orjson.dumps(job.principal).decode(), job.priority, job.created_at, int(job.stream_forced),
             job.callback_url, job.profile))

    def mark_processing(self, job_id: str, at: float) -> None:
        """The job holds a backend slot now (not waited for: a crash before it lands leaves the
        job queued, which runs it again all the same)."""
        _logged(self.writes.submit(
            f"UPDATE jobs SET status = 'processing', started_at = ?, attempts = attempts + 1 "
            f"WHERE id = ? AND status IN {_OPEN}", (at, job_id)), "start")

    async def requeue(self, job_id: str) -> None:
        """An interrupted job (the gateway stopping) runs again at the next start."""
        await self.writes.submit("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'processing'",
                                 (job_id,))

    async def end(self, job_id: str, ending: Ending, callback: bool) -> bool:
        """Finish a job still open; False if it had ended already (cancelled, pruned)."""
        meta = None if ending.meta is None else orjson.dumps(ending.meta).decode()
        written = await self.writes.submit(
            f"UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, meta = COALESCE(?, meta), "
            f"callback_state = ? WHERE id = ? AND status IN {_OPEN}",
            (ending.status, ending.at, ending.result, ending.error, meta, "pending" if callback else None, job_id))
        return written.rowcount == 1

    async def end_many(self, job_ids: Sequence[str], ending: Ending) -> int:
        """End several open jobs alike (cancelled in bulk by a queue clear); their webhooks,
        if any, are due."""
        pending = []
        for start in range(0, len(job_ids), _CHUNK):
            chunk = job_ids[start:start + _CHUNK]
            pending.append(self.writes.submit(
                f"UPDATE jobs SET status = ?, finished_at = ?, error = ?, callback_state = CASE WHEN "
                f"callback_url IS NULL THEN NULL ELSE 'pending' END WHERE id IN ({', '.join('?' * len(chunk))}) "
                f"AND status IN {_OPEN}", (ending.status, ending.at, ending.error, *chunk)))
        return sum(written.rowcount for written in await asyncio.gather(*pending))

    async def set_callback_state(self, job_id: str, state: CallbackState) -> None:
        await self.writes.submit("UPDATE jobs SET callback_state = ? WHERE id = ?", (state, job_id))

    async def requeue_interrupted(self) -> int:
        """At start-up: jobs that were running when the gateway died are queued again."""
        written = await self._db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'processing'")
        return written.rowcount

    async def prune(self, before: float) -> int:
        """Forget jobs that ended before `before` (their results were kept long enough)."""
        written = await self._db.execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                                         (before,))
        return written.rowcount

    # -- reads --------------------------------------------------------------------------
    async def get(self, job_id: str) -> StoredJob | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _stored(row)

    async def runnable(self, job_id: str) -> Runnable | None:
        """What running a job needs (its body is read only then)."""
        row = await self._db.fetchone("SELECT status, body, callback_url FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Runnable(row["status"], bytes(row["body"]), row["callback_url"])

    async def listing(self, owner: Owner | None, status: JobStatus | None, limit: int) -> list[StoredJob]:
        """Newest first; every owner's when `owner` is None (an admin's view)."""
        where, params = [], []
        if owner is not None:
            where.append("owner_kind = ? AND owner_name = ? AND owner_key IS ?")
            params += [owner.kind, owner.name, owner.key]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM jobs {clause}ORDER BY n DESC LIMIT ?",
                                       (*params, limit))
        return [_stored(r) for r in rows]

    async def queued(self) -> list[QueuedJob]:
        """Every queued job in submission order (the runner's index at start-up)."""
        rows = await self._db.fetchall(
            "SELECT id, route, model, principal, created_at, profile FROM jobs WHERE status = 'queued' ORDER BY n")
        return [QueuedJob(r["id"], r["route"], r["model"], r["principal"], float(r["created_at"]), r["profile"])
                for r in rows]

    async def callbacks_due(self) -> list[str]:
        """Ended jobs whose webhook was not delivered yet (the gateway stopped meanwhile)."""
        rows = await self._db.fetchall("SELECT id FROM jobs WHERE callback_state = 'pending' ORDER BY n")
        return [str(r["id"]) for r in rows]


def _stored(row: sqlite3.Row) -> StoredJob:
    return StoredJob(
        n=int(row["n"]), id=row["id"], route=row["route"], model=row["model"],
        owner=Owner(row["owner_kind"], row["owner_name"], row["owner_key"]),
        principal=orjson.loads(row["principal"]), priority=float(row["priority"]), status=row["status"],
        created_at=float(row["created_at"]), started_at=row["started_at"], finished_at=row["finished_at"],
        attempts=int(row["attempts"]), result=None if row["result"] is None else bytes(row["result"]),
        error=row["error"], meta=orjson.loads(row["meta"]) if row["meta"] else {},
        stream_forced=bool(row["stream_forced"]), callback_url=row["callback_url"],
        callback_state=row["callback_state"], profile=row["profile"])
