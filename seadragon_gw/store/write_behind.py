"""Write-behind batching of API key `last_used` times.

Recording a timestamp on every request would put an SQLite write on the hot path.
Instead `mark` only updates an in-memory dict, and a background task flushes the
accumulated batch every few seconds in one transaction. Losing a few seconds of
`last_used` on a crash is an acceptable price.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

FlushFn = Callable[[dict[int, float]], Awaitable[None]]


class LastUsedBatcher:
    """Collects `key_id -> last use time` and hands the batch to `flush_fn` periodically."""

    def __init__(self, flush_fn: FlushFn, interval_s: float = 2.0) -> None:
        self._flush_fn = flush_fn
        self._interval_s = interval_s
        self._pending: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._failing = False

    def mark(self, key_id: int, when: float) -> None:
        """Note a use of `key_id`. Synchronous and O(1): safe on the request path."""
        previous = self._pending.get(key_id)
        if previous is None or when > previous:
            self._pending[key_id] = when

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Launch the periodic flush task (call from inside the running event loop)."""
        if self._task is not None:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(self._stopping), name="last-used-flush")

    async def close(self) -> None:
        """Stop the task, then flush whatever is still pending."""
        if self._task is not None and self._stopping is not None:
            self._stopping.set()
            await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Flush now. On failure the batch is kept (merged with newer marks) for next time."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._flush_fn(batch)
        except BaseException as exc:
            self._restore(batch)
            if not isinstance(exc, Exception):
                raise  # cancelled: the batch is back in _pending for close() to retry
            self._report_failure(exc)
            return
        if self._failing:
            log.info("last-used flush recovered (%d keys written)", len(batch))
            self._failing = False

    async def _run(self, stopping: asyncio.Event) -> None:
        # Waiting on the event (not sleeping) lets close() end the loop between flushes,
        # so a flush is never cancelled half-way with its batch in flight.
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self._interval_s)
            except TimeoutError:
                await self.flush()

    def _restore(self, batch: dict[int, float]) -> None:
        for key_id, when in batch.items():
            self.mark(key_id, when)

    def _report_failure(self, exc: Exception) -> None:
        """Warn once when flushing starts failing, not on every retry of the same outage."""
        if self._failing:
            log.debug("last-used flush still failing: %s", type(exc).__name__)
            return
        self._failing = True
        log.warning(
            "last-used flush failed (%s: %s); %d keys kept for retry",
            type(exc).__name__, exc, len(self._pending),
        )
