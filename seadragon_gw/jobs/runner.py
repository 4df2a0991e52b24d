"""Running queued jobs through the request lifecycle, in the scheduler's order, exactly once.

A job waits in the runner's index (`pending.PendingIndex`) until a place in its model's
admission window frees (`jobs.admit_window` jobs per model wait inside the scheduler's queue at
once). Then it is admitted (`RequestService.admit`, with its credential's priority and its
submission time, so it ages from then), and one small task reads its body and drives it with
`lifecycle.consume.complete`: the same queue, slot lease, forwarding and request record as an
HTTP request. Only jobs in a window or holding a slot have a task, so 100k queued jobs cost an
index entry each. Admission needs nothing from the database, so when a windowed job gets its
slot the next best job of its model is in the scheduler's queue before anything else runs.

Durability: the row is written before the 202; `processing` when the slot is leased;
`completed` with the result in one statement that applies only to a job still open. At
start-up `processing` rows are queued again (the gateway died while they ran), so a job runs
again until a `completed` row has committed, and never after.

A job whose backend cannot be reached (no connection: nothing was sent) is queued again and
tried after `jobs.retry_s`, until its queue deadline; any other failure ends it `failed`.

Rate limits and quotas are paid when a job is submitted (`JobService.submit`), so admitting
it passes `prepaid` and takes nothing from the client's bucket or day a second time; its
tokens still count toward the day when it ends.

The credential is looked at again (`standing`) when a job is admitted and when it gets its
slot: a job whose API key was revoked, whose user was deactivated or whose tokens.json entry
was removed since it was submitted fails with that reason and never reaches a backend.

Stopping: nothing new is admitted; waiting jobs stay queued (their rows never changed),
running ones are cancelled upstream and set back to queued: all run at the next start.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ..auth.errors import CredentialRevoked
from ..auth.principal import Principal
from ..backends.upstream import BackendUnreachable
from ..config import JobsConfig
from ..errors import GatewayError, Unavailable
from ..lifecycle.consume import Answer, Forwarded, complete
from ..lifecycle.forwarding import error_message_of
from ..lifecycle.route import INFERENCE
from ..lifecycle.service import Exchange, RequestService, outcome_of
from ..model_names import QueueKey, model_key
from ..queue.aging import sort_key
from ..queue.errors import SHUTDOWN_MESSAGE, QueueTimeout, ShuttingDown
from ..records.record import RequestRecord
from ..store.errors import DatabaseUnavailable
from ..store.jobs import Ending, JobRepo, NewJob
from .owners import principal_from
from .pending import Pending, PendingIndex
from .webhooks import Webhooks

log = logging.getLogger("seadragon_gw.jobs")

HEADERS = [(b"content-type", b"application/json")]
CANCELLED = "cancelled"
STOPPING = SHUTDOWN_MESSAGE
Phase = Literal["waiting", "running", "finishing"]
Standing = Callable[[Principal], str | None]
"""Why a job's credential no longer admits it (revoked since it was submitted), or None."""


def _stands(principal: Principal) -> str | None:
    return None


@dataclass(eq=False, slots=True)
class LiveJob:
    """An admitted job: waiting in the scheduler's queue (in its model's window) or holding
    a slot."""

    pending: Pending
    exchange: Exchange
    phase: Phase = "waiting"
    in_window: bool = False
    callback: bool = False
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class JobRunner:
    config: JobsConfig
    requests: RequestService
    repo: JobRepo
    webhooks: Webhooks
    standing: Standing = _stands
    _index: PendingIndex = field(default_factory=PendingIndex, init=False)
    _live: dict[str, LiveJob] = field(default_factory=dict, init=False)
    _window: dict[QueueKey, int] = field(default_factory=dict, init=False)
    _blocked: set[QueueKey] = field(default_factory=set, init=False)
    _chores: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _halted: bool = field(default=False, init=False)
    _retry: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def _mono(self) -> Callable[[], float]:
        return self.requests.scheduler.clock

    @property
    def _wall(self) -> Callable[[], float]:
        return self.requests.recorder.clock

    # -- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        """Queue again what was running when the gateway stopped, load every queued job in
        submission order, and start admitting."""
        try:
            again = await self.repo.requeue_interrupted()
        except DatabaseUnavailable as exc:  # new jobs are refused with the same reason (503)
            log.error("jobs: %s; queued jobs wait for a restart with a writable database", exc.message)
            return
        if again:
            log.info("jobs: %d job(s) interrupted by the last stop run again", again)
        offset = self._mono() - self._wall()  # a submission's wall time on the scheduler's clock
        principals: dict[str, Principal] = {}
        for job in await self.repo.queued():
            principal = principals.get(job.principal)
            if principal is None:
                principal = principals[job.principal] = principal_from(orjson.loads(job.principal))
            self._index.add(self._pending(job.id, job.route, job.model, principal, job.created_at,
                                          job.created_at + offset, job.profile))
        self._retry = asyncio.create_task(self._retry_loop(), name="jobs-retry")
        for key in self._index.keys():
            self._pump(key)

    async def close(self, grace_s: float = 0.0) -> None:
        """Admit nothing more; give running jobs `grace_s` to finish, then cancel them (they run
        again at the next start). Queued jobs stay queued in the database."""
        self._halted = True
        if self._retry is not None:
            self._retry.cancel()
        waiting = [j.task for j in self._live.values() if j.phase == "waiting" and j.task]
        for task in waiting:
            task.cancel()
        running = [j.task for j in self._live.values() if j.task and j.task not in waiting]
        if running and grace_s > 0:
            await asyncio.wait(running, timeout=grace_s)
        for task in running:
            task.cancel()
        tasks = [*waiting, *running, *self._chores, *([self._retry] if self._retry else [])]
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- submitting, cancelling ---------------------------------------------------------
    async def submit(self, job: NewJob, principal: Principal) -> None:
        """Write the job, then queue it; returns once the row is committed. Shielded: a client
        that leaves mid-way still gets its job queued, never a row without an index entry."""
        if self._halted:
            raise ShuttingDown(STOPPING, retry_after_s=self.requests.config.retry_after_s)
        pending = self._pending(job.id, job.route, job.model, principal, job.created_at, self._mono(), job.profile)
        await asyncio.shield(self._store(job, pending))

    async def _store(self, job: NewJob, pending: Pending) -> None:
        await self.repo.insert(job)
        self._index.add(pending)
        self._pump(pending.key)

    def status_of(self, job_id: str) -> Literal["processing"] | None:
        """`processing` for a job holding its slot (its row may not say so yet)."""
        live = self._live.get(job_id)
        return "processing" if live is not None and live.phase != "waiting" else None

    async def cancel(self, job_id: str, callback: bool) -> bool:
        """Cancel an open job; a running one is cancelled upstream (its slot is freed). False
        when it had ended (or is ending) already."""
        live = self._live.get(job_id)
        if live is not None:
            if live.phase == "finishing" or live.task is None:
                return False
            live.cancel_requested = True
            live.task.cancel()
            await asyncio.wait({live.task})
            return True
        self._index.remove(job_id)
        ended = await self.repo.end(job_id, Ending("cancelled", self._wall(), error=CANCELLED), callback)
        if ended and callback:
            self.webhooks.deliver(job_id)
        return ended

    def waiting(self, model: str | None = None) -> int:
        """Queued jobs not yet in the scheduler's queue (those are counted there)."""
        return self._index.count(model)

    async def clear(self, model: str | None, message: str) -> int:
        """An administrator cleared the queue: the jobs waiting here fail like the requests in
        the scheduler's queue (those fail through their exchange). Returns how many."""
        ids = self._index.take_all(model)
        ended = await self.repo.end_many(ids, Ending("failed", self._wall(), error=message))
        await self.webhooks.resume()
        return ended

    # -- admission ----------------------------------------------------------------------
    def _pending(self, job_id: str, route: str, model: str | None, principal: Principal, created_at: float,
                 enqueued_at: float, profile: str | None = None) -> Pending:
        spec = INFERENCE.get(route)
        kind = "ollama" if spec is not None and spec.native else None
        route, model = sys.intern(route), sys.intern(model) if model else None  # one copy per name
        key: QueueKey = (sys.intern(model_key(model)) if model else "", kind)
        aging = self.requests.config.aging_per_minute
        item = (sort_key(principal.priority, enqueued_at, aging), next(self._seq), job_id)
        return Pending(job_id, key, route, model, principal, created_at, enqueued_at, item, profile)

    def _pump(self, key: QueueKey) -> None:
        """Fill the model's window with its best queued jobs."""
        limit = self.config.admit_window
        while not self._halted and key not in self._blocked and self._window.get(key, 0) < limit:
            pending = self._index.pop(key)
            if pending is None:
                return
            self._admit(pending)

    def _admit(self, pending: Pending) -> None:
        """Into the scheduler's queue (or straight to a free slot), at once."""
        spec = INFERENCE.get(pending.route)
        remaining = self.config.queue_timeout_s - (self._wall() - pending.created_at)
        if spec is None or remaining <= 0:
            self._chore(self._fail(pending, f"route '{pending.route}' cannot run as a job" if spec is None else
                                   self._timed_out(pending)))
            return
        revoked = self.standing(pending.principal)
        if revoked is not None:
            self._chore(self._fail(pending, revoked))
            return
        record = self.requests.recorder.start(pending.id, "POST", pending.route)
        record.profile = pending.profile
        payload = {spec.model_field or "model": pending.model} if pending.model else {}
        try:
            exchange = self.requests.admit(record, pending.principal, spec, payload, False,
                                           enqueued_at=pending.enqueued_at, timeout_s=remaining,
                                           profile=pending.profile, prepaid=True)
        except ShuttingDown:  # the gateway stops: it stays queued for the next start
            self._halted = True
            self._index.add(pending)
            return
        except Unavailable:  # queue full, backends draining: the whole model waits a while
            self._index.add(pending)
            self._blocked.add(pending.key)
            return
        except GatewayError as exc:  # model not found or not allowed: never runnable
            self._chore(self._fail(pending, exc.message))
            return
        live = self._live[pending.id] = LiveJob(pending, exchange)
        if exchange.leased or exchange.entry is None:
            self._started(live)
        else:
            live.in_window = True
            self._window[pending.key] = self._window.get(pending.key, 0) + 1
            exchange.entry.granted.add_done_callback(lambda future: self._granted(live, future))
        live.task = asyncio.create_task(self._run(live), name=f"job:{pending.id[:8]}")

    def _timed_out(self, pending: Pending) -> str:
        """A job's queue deadline counts from its submission (`jobs.queue_timeout_s`)."""
        return (f"timed out after {self.config.queue_timeout_s:g}s waiting in the queue for model "
                f"'{pending.model}'")

    def _granted(self, live: LiveJob, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._started(live)
        else:
            self._leave_window(live)

    def _started(self, live: LiveJob) -> None:
        """The slot is leased: `processing`, and the next job of the model enters. Not while
        stopping: a slot freed by a cancelled job goes to a waiting job being cancelled too,
        which must stay plainly queued."""
        if live.phase != "waiting" or self._halted:
            return
        live.phase = "running"
        self.repo.mark_processing(live.pending.id, self._wall())
        self._leave_window(live)

    def _leave_window(self, live: LiveJob) -> None:
        if not live.in_window:
            return
        live.in_window = False
        key = live.pending.key
        left = self._window.get(key, 1) - 1
        if left:
            self._window[key] = left
        else:
            self._window.pop(key, None)
        self._pump(key)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retry_s)
            blocked, self._blocked = self._blocked, set()
            for key in blocked:
                self._pump(key)

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    # -- one job ------------------------------------------------------------------------
    async def _run(self, live: LiveJob) -> None:
        try:
            await self._drive(live)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(live))
            raise
        except Exception:
            log.exception("job %s failed inside the gateway", live.pending.id)
            await asyncio.shield(self._end(live, Ending("failed", self._wall(), error="internal error")))
        finally:
            live.exchange.release("client_gone", 0, CANCELLED)  # a no-op once complete() released it
            self._live.pop(live.pending.id, None)
            self._leave_window(live)

    async def _drive(self, live: LiveJob) -> None:
        job = await self.repo.runnable(live.pending.id)
        if job is None or job.status not in ("queued", "processing"):
            return  # ended meanwhile (cancelled from another gateway process, pruned)
        live.callback = job.callback_url is not None
        exchange, record = live.exchange, live.exchange.record
        payload: dict[str, Any] = orjson.loads(job.body)
        try:
            await self._leased(live)
            answer = await complete(exchange, Forwarded("POST", live.pending.route, HEADERS, job.body, payload))
        except ShuttingDown:  # rejected while waiting: stays queued for the next start
            self._halted = True
            return
        except BackendUnreachable:  # nothing reached a backend: queued again, tried again later
            await self.repo.requeue(live.pending.id)
            self._index.add(live.pending)
            self._blocked.add(live.pending.key)
            return
        except GatewayError as exc:  # upstream failures, queue timeout, a cleared queue
            message = self._timed_out(live.pending) if isinstance(exc, QueueTimeout) else exc.message
            await self._end(live, Ending("failed", self._wall(), error=message, meta=_meta(record, None)))
            return
        live.phase = "finishing"
        await asyncio.shield(self._end(live, _ending(answer, record, self._wall())))

    async def _leased(self, live: LiveJob) -> None:
        """Wait for the slot, then look at the credential again: it may have been revoked while
        the job waited in the queue. A refusal releases the slot at once, unused."""
        exchange = live.exchange
        try:
            await exchange.wait()
            revoked = self.standing(live.pending.principal)
            if revoked is not None:
                raise CredentialRevoked(revoked)
        except GatewayError as exc:
            exchange.release(outcome_of(exc), 0, exc.message)
            raise

    async def _fail(self, pending: Pending, message: str) -> None:
        """A job that cannot be admitted ever (it was never in a window)."""
        try:
            job = await self.repo.runnable(pending.id)
            callback = job is not None and job.callback_url is not None
            if await self.repo.end(pending.id, Ending("failed", self._wall(), error=message), callback) and callback:
                self.webhooks.deliver(pending.id)
        except DatabaseUnavailable as exc:
            log.error("job %s failed (%s) but could not be written: %s", pending.id, message, exc.message)

    async def _end(self, live: LiveJob, ending: Ending) -> None:
        try:
            ended = await self.repo.end(live.pending.id, ending, live.callback)
        except DatabaseUnavailable as exc:
            log.error("job %s ended (%s) but could not be written: %s", live.pending.id, ending.status, exc.message)
            return
        if ended and live.callback:
            self.webhooks.deliver(live.pending.id)

    async def _interrupted(self, live: LiveJob) -> None:
        """Cancelled: by its owner (it ends `cancelled`) or by the gateway stopping (a job that
        held its slot is queued again; a waiting one never stopped being queued)."""
        if live.cancel_requested:
            if not live.callback:
                job = await self.repo.runnable(live.pending.id)
                live.callback = job is not None and job.callback_url is not None
            await self._end(live, Ending("cancelled", self._wall(), error=CANCELLED))
        elif live.phase != "waiting":
            try:
                await self.repo.requeue(live.pending.id)
            except DatabaseUnavailable:
                pass  # start-up queues `processing` rows again anyway


def _ending(answer: Answer, record: RequestRecord, now: float) -> Ending:
    meta = _meta(record, answer.status)
    if answer.status < 400:
        return Ending("completed", now, result=answer.body, meta=meta)
    return Ending("failed", now, result=answer.body, error=error_message_of(answer.body, answer.status), meta=meta)


def _meta(record: RequestRecord, status: int | None) -> dict[str, Any]:
    processing = None
    if record.granted_at is not None and record.finished_at is not None:
        processing = round(record.finished_at - record.granted_at, 6)
    wait = record.queue_wait_s
    return {"backend": record.backend, "queue_wait": None if wait is None else round(wait, 6),
            "processing_time": processing, "http_status": status,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}
