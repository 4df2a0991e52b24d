"""A bounded write-behind batch: `add` on the request path, the database write in the background.

`add` only appends to a deque (O(1), no I/O). A task hands everything pending to `write`
every `interval_s`, or as soon as a quarter of `max_items` is pending (at 7,500 requests a
second a 2 s interval gathers 15,000 rows: without the early write a working database would
lose a third of them to the bound), and `close` writes what is left. While the database
cannot take the write (read-only, deleted, locked) the batch is kept for the next try, every
`interval_s` (never sooner: a failing database is not retried in a loop), but never more than
`max_items`: beyond that the oldest items are dropped. That is said once, at WARNING, when
writing starts failing, and once more, with the number dropped, when it works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("seadragon_gw.usage")


class WriteBatch(Generic[T]):
    def __init__(self, name: str, write: Callable[[list[T]], Awaitable[None]], *,
                 interval_s: float, max_items: int) -> None:
        self.name = name
        self._write = write
        self._interval_s = interval_s
        self._max = max_items
        self._soon = max(1, max_items // 4)  # this many pending: write now, not at the interval
        self._items: deque[T] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._due = asyncio.Event()  # wakes the task: enough is pending, or closing
        self._failing = False
        self._dropped = 0
        self._writing = asyncio.Lock()

    def add(self, item: T) -> None:
        """Queue one item for writing; drops the oldest beyond `max_items`."""
        items = self._items
        if len(items) >= self._max:
            items.popleft()
            self._dropped += 1
        items.append(item)
        if len(items) == self._soon and not self._failing:
            self._due.set()

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def dropped(self) -> int:
        """Items dropped since writing last failed (0 while it works)."""
        return self._dropped

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-flush")

    async def close(self) -> None:
        """Stop the task between writes, then write whatever is pending."""
        if self._task is not None:
            self._stopping = True
            self._due.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything pending now; on failure keep it (bounded) for the next try. A
        flush waits for one already writing, so a reader that flushes first sees every item
        added before it (the background write may have taken them a moment ago)."""
        async with self._writing:
            await self._flush()

    async def _flush(self) -> None:
        if not self._items:
            return
        batch = list(self._items)
        self._items.clear()
        try:
            await self._write(batch)
        except Exception as exc:  # any failure: keep the batch, say so once
            self._keep(batch)
            self._report(exc)
            return
        if self._failing:
            self._failing = False
            log.info("%s: writing again (%d record(s) dropped while the database was unavailable)",
                     self.name, self._dropped)
        elif self._dropped:
            log.warning("%s: %d record(s) dropped: more than %d arrived between two writes",
                        self.name, self._dropped, self._max)
        self._dropped = 0

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._interval_s)
            self._due.clear()
            if not self._stopping:
                await self.flush()
                if len(self._items) >= self._soon and not self._failing:
                    self._due.set()  # more arrived while writing: write again at once

    def _keep(self, batch: list[T]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, oldest dropped first."""
        merged = batch + list(self._items)
        overflow = len(merged) - self._max
        if overflow > 0:
            self._dropped += overflow
            merged = merged[overflow:]
        self._items = deque(merged)

    def _report(self, exc: Exception) -> None:
        if self._failing:
            return
        self._failing = True
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.warning("%s: cannot write to the database (%s); keeping up to %d record(s) in memory, "
                    "dropping the oldest beyond that", self.name, reason, self._max)
