"""Completion webhooks: the job's JSON POSTed to its `callback_url` when it ends.

Only to hosts the operator listed (`jobs.callback_hosts`, checked again at delivery: the list
may have changed since the job was made), never following a redirect, retried with doubling
waits, and remembered in the database (`callback_state`), so a delivery the gateway could not
finish before it stopped is made at the next start. The URL may carry a token of the
receiver's, so logs name only its host.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp
import orjson

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
        self._session: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.callback_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                              auto_decompress=False)

    async def resume(self) -> None:
        """Deliver what is due and not under way (after a restart, after a bulk end)."""
        for job_id in await self._repo.callbacks_due():
            self.deliver(job_id)

    def deliver(self, job_id: str) -> None:
        if self._session is None or job_id in self._tasks:
            return
        task = asyncio.create_task(self._deliver(job_id), name=f"webhook:{job_id[:8]}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def close(self) -> None:
        """Stop delivering; what was not delivered stays due for the next start."""
        session, self._session = self._session, None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if session is not None:
            await session.close()

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
        session = self._session
        if session is None:
            return False
        async with self._slots:
            try:
                async with session.post(url, data=body, allow_redirects=False,
                                        headers={"Content-Type": "application/json"}) as response:
                    ok = 200 <= response.status < 300
                    if not ok:
                        log.info("job %s: webhook to %s answered HTTP %d", job_id, urlsplit(url).hostname,
                                 response.status)
                    return ok
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("job %s: webhook to %s failed: %s", job_id, urlsplit(url).hostname,
                         type(exc).__name__)
                return False
