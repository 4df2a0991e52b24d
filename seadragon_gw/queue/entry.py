"""One queued request, as the scheduler sees it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.backend import Backend
from ..model_names import QueueKey
from ..records.record import RequestRecord

__all__ = ["QueueEntry", "QueueKey"]


@dataclass(eq=False, slots=True)
class QueueEntry:
    """A request waiting for, or holding, a backend slot.

    `sort_key` is `base priority + aging rate * enqueue time`: with one aging rate this orders
    the heap exactly by effective priority forever, so no re-sorting is ever needed.
    `granted` resolves to the backend, or to the error the request was rejected with. Its
    one waiter awaits it directly (no future of its own per waiting request), so a waiter
    cancelled while it waits (its client left) cancels `granted` too: whatever resolves it
    checks `done()` first, and the waiter's release takes the entry out.
    `deadline` (the loop's clock) is when a waiting entry times out (`Deadlines`).
    `on_finish` is the scheduler's, given with the slot: `finish` calls it once, and the slot
    is free (the scheduler's `_freed`).
    """

    queue_key: QueueKey
    priority: float
    enqueued_at: float
    sort_key: float
    seq: int
    granted: asyncio.Future[Backend]
    record: RequestRecord | None = None
    on_finish: Callable[[], None] | None = None  # set by `grant`: only a slot's holder has one
    backend: Backend | None = None
    cancelled: bool = False
    profile: str | None = None  # served only by a backend running this managed profile
    avoid: frozenset[Backend] = frozenset()  # backends that failed this request before answering
    deadline: float | None = None

    def __lt__(self, other: QueueEntry) -> bool:
        return (self.sort_key, self.seq) < (other.sort_key, other.seq)

    def grant(self, backend: Backend, on_finish: Callable[[], None]) -> None:
        self.backend = backend
        self.on_finish = on_finish
        if not self.granted.done():  # else cancelled by its waiter, which releases the slot at once
            self.granted.set_result(backend)

    def finish(self) -> None:
        """Give the slot back; safe to call more than once, and before any grant."""
        on_finish = self.on_finish
        if on_finish is not None:
            self.on_finish = None
            on_finish()
