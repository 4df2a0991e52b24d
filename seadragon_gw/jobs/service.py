"""The jobs a caller may submit, see and cancel; the runner, webhooks and pruning behind them.

A job is visible only to its owner (same credential kind and name, same API key) and to
admins; any other id, real or not, is "not found", so ids never leak by a 403.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, cast, get_args

from ..auth.principal import Principal
from ..config import JobsConfig
from ..errors import Conflict, InvalidInput, NotFound, NotPermitted
from ..lifecycle.route import RouteSpec
from ..lifecycle.service import RequestService
from ..records.record import RequestRecord
from ..store.errors import DatabaseUnavailable
from ..store.jobs import JobRepo, JobStatus, NewJob, StoredJob
from .owners import may_see, owner_of, principal_fields
from .request import JobRequest, job_request
from .runner import JobRunner, Standing
from .webhooks import Webhooks

log = logging.getLogger("seadragon_gw.jobs")
MAX_ID = 64
STATUSES: tuple[str, ...] = get_args(JobStatus)


class JobService:
    def __init__(self, config: JobsConfig, requests: RequestService, repo: JobRepo,
                 default_model: str | None = None, standing: Standing | None = None) -> None:
        """`standing` says whether a job's credential still admits it when the job runs
        (`auth.standing.CredentialStanding.revoked`); without it, always."""
        self.config = config
        self.requests = requests
        self.repo = repo
        self.default_model = default_model
        self.webhooks = Webhooks(config, repo)
        self.runner = JobRunner(config, requests, repo, self.webhooks)
        if standing is not None:
            self.runner.standing = standing
        self._wall = requests.recorder.clock
        self._prune: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.webhooks.start()
        await self.runner.start()
        try:
            await self.webhooks.resume()
        except DatabaseUnavailable:
            pass
        self._prune = asyncio.create_task(self._prune_loop(), name="jobs-prune")

    async def close(self, grace_s: float = 0.0) -> None:
        """Queued jobs stay queued; running ones get `grace_s`, then run again next time."""
        if self._prune is not None:
            self._prune.cancel()
            await asyncio.gather(self._prune, return_exceptions=True)
        await self.runner.close(grace_s)
        await self.webhooks.close()

    # -- the caller's side --------------------------------------------------------------
    def request(self, route: str, spec: RouteSpec, body: Any, callback_url: Any = None,
                profile: str | None = None) -> JobRequest:
        return job_request(route, spec, body, callback_url=callback_url, callback_hosts=self.config.callback_hosts,
                           default_model=self.default_model, profile=profile)

    def record(self, principal: Principal, request: JobRequest) -> RequestRecord:
        """The request record of a submission, its id the job's to be. The caller finishes it
        only when the submission is refused (`RequestService.reject`: the usage log and the
        metrics count it as any refused request); an accepted job's run has its own record."""
        record = self.requests.recorder.start(secrets.token_urlsafe(18), "POST", request.route)
        record.credential_kind, record.credential_name = principal.kind, principal.name
        record.key_id, record.client_id, record.priority = principal.key_id, principal.client, principal.priority
        record.model, record.profile = request.model, request.profile
        return record

    async def submit(self, principal: Principal, request: JobRequest, record: RequestRecord | None = None) -> str:
        """Take the job from the caller's rate limit and daily quota (RateLimited: 429, and
        nothing is written), write it (committed when this returns) and queue it; returns its
        id (`record`'s, from `record()`, when given). Limits are paid here, before queueing, as
        for any request: a flood of submissions is refused at the door, not accepted and
        throttled later."""
        if record is None:
            record = self.record(principal, request)
        job_id = record.request_id
        self.requests.check_limits(record, principal)
        job = NewJob(id=job_id, route=request.route, model=request.model, body=request.body,
                     owner=owner_of(principal), principal=principal_fields(principal), priority=principal.priority,
                     created_at=self._wall(), stream_forced=request.stream_forced, callback_url=request.callback_url,
                     profile=request.profile)
        await self.runner.submit(job, principal)
        return job.id

    async def get(self, principal: Principal, job_id: str) -> tuple[StoredJob, JobStatus]:
        """The job and its status now; NotFound unless the caller may see it."""
        job = await self.repo.get(job_id) if 0 < len(job_id) <= MAX_ID else None
        if job is None or not may_see(principal, job.owner):
            raise NotFound(f"job '{job_id[:MAX_ID]}' not found")
        return job, self._status(job)

    async def listing(self, principal: Principal, status: str | None, limit: int | None,
                      everyone: bool) -> list[tuple[StoredJob, JobStatus]]:
        """The caller's jobs, newest first (every owner's for an admin asking for all)."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        if limit is None:
            limit = self.config.list_limit
        if not 1 <= limit <= 10 * self.config.list_limit:
            raise InvalidInput(f"limit must be between 1 and {10 * self.config.list_limit}")
        if everyone and not principal.is_admin:
            raise NotPermitted("only an admin may list every owner's jobs")
        owner = None if everyone else owner_of(principal)
        jobs = await self.repo.listing(owner, cast(JobStatus | None, status), limit)
        return [(job, self._status(job)) for job in jobs]

    def _status(self, job: StoredJob) -> JobStatus:
        """A job that took its slot a moment ago is `processing` before its row says so."""
        return (self.runner.status_of(job.id) or job.status) if job.status == "queued" else job.status

    async def cancel(self, principal: Principal, job_id: str) -> tuple[StoredJob, JobStatus]:
        """Cancel a queued or running job; Conflict once it has ended."""
        job, status = await self.get(principal, job_id)
        if status not in ("queued", "processing") or not await self.runner.cancel(job.id, job.callback_url is not None):
            _, now = await self.get(principal, job_id)
            raise Conflict(f"job '{job_id}' has ended already ({now})")
        return await self.get(principal, job_id)

    # -- keeping results for a while ------------------------------------------------------
    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.repo.prune(self._wall() - self.config.retention_hours * 3600)
                if pruned:
                    log.info("jobs: %d ended job(s) older than %gh pruned", pruned, self.config.retention_hours)
            except DatabaseUnavailable:
                pass
            await asyncio.sleep(self.config.prune_s)
