"""Completion webhooks: the job's JSON POSTed to its `callback_url` when it ends.

Only to hosts the operator listed (`jobs.callback_hosts`, checked again at delivery: the list
may have changed since the job was made), never following a redirect, retried with doubling
waits, and remembered in the database (`callback_state`), so a delivery the gateway could not
finish before it stopped is made at the next start. The URL may carry a token of the
receiver's, so logs name only its host. Sent with the gateway's own HTTP client (the one
the proxy uses, `backends/upstream.py`): one short-lived connection pool per delivery.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import orjson

from ..backends.upstream import Upstream, UpstreamError
from ..config import JobsConfig
from ..errors import InvalidInput
from ..store.jobs import JobRepo
from .request import checked_callback
from .views import job_json

log = logging.getLogger("seadragon_gw.jobs")
MAX_CONCURRENT = 8


class Webhooks:
    def __init__(self, config: JobsConfig, repo: JobRepo) -> None:
        self._config = config
        self._repo = repo
        self._running = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    def start(self) -> None:
        self._running = True

    async def resume(self) -> None:
        """Deliver what is due and not under way (after a restart, after a bulk end)."""
        for job_id in await self._repo.callbacks_due():
            self.deliver(job_id)

    def deliver(self, job_id: str) -> None:
        if not self._running or job_id in self._tasks:
            return
        task = asyncio.create_task(self._deliver(job_id), name=f"webhook:{job_id[:8]}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def close(self) -> None:
        """Stop delivering; what was not delivered stays due for the next start."""
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, job_id: str) -> None:
        job = await self._repo.get(job_id)
        if job is None or job.callback_url is None:
            return
        url = job.callback_url
        try:
            checked_callback(url, self._config.callback_hosts)
        except InvalidInput as exc:
            log.warning("job %s: webhook not sent: %s", job_id, exc.message)
            await self._repo.set_callback_state(job_id, "failed")
            return
        body = orjson.dumps(job_json(job))
        delay = self._config.callback_backoff_s
        for attempt in range(1, self._config.callback_attempts + 1):
            if await self._post(job_id, url, body):
                await self._repo.set_callback_state(job_id, "delivered")
                return
            if attempt < self._config.callback_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("job %s: webhook to %s failed %d times; giving up", job_id, urlsplit(url).hostname,
                    self._config.callback_attempts)
        await self._repo.set_callback_state(job_id, "failed")

    async def _post(self, job_id: str, url: str, body: bytes) -> bool:
        if not self._running:
            return False
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        timeout = self._config.callback_timeout_s
        client = Upstream("webhook", f"{parts.scheme}://{parts.netloc}", timeout, timeout)
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    response = await client.open("POST", target, [(b"content-type", b"application/json")], body)
                    try:
                        await response.read()
                    finally:
                        await response.aclose()
            except (UpstreamError, TimeoutError) as exc:
                reason = exc.message if isinstance(exc, UpstreamError) else "timed out"
                log.info("job %s: webhook to %s failed: %s", job_id, parts.hostname, reason.replace(url, "..."))
                return False
            finally:
                await client.aclose()
        ok = 200 <= response.status < 300
        if not ok:  # a redirect (3xx) is not followed: it counts as a failure
            log.info("job %s: webhook to %s answered HTTP %d", job_id, parts.hostname, response.status)
        return ok
