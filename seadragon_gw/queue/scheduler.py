"""Per-model aging queues and the fixed pool of dispatcher tasks per backend.

Each backend runs `max_concurrent` dispatcher tasks. An idle dispatcher takes the best waiting
entry among the queues its backend can serve; when there is none it parks. A new request is
handed straight to a parked dispatcher (the least busy backend's) when there is one, else it
waits in its queue. A dispatcher holds its slot until the request's `finished` future is set,
so the request's own task streams the body while the dispatcher accounts for the slot.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..api.errors import ApiError
from .aging import AgingHeap, sort_key
from .entry import QueueEntry, QueueKey

if TYPE_CHECKING:
    from ..backends.backend import Backend
    from ..config import QueueConfig

log = logging.getLogger("seadragon_gw.queue")

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class Scheduler:
    def __init__(
        self,
        backends: list[Backend],
        config: QueueConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = backends
        self.config = config
        self.clock = clock
        self.queues: dict[QueueKey, AgingHeap] = {}
        self._parked: dict[str, list[asyncio.Future[QueueEntry]]] = {b.name: [] for b in backends}
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    # -- request side -------------------------------------------------------------------
    def submit(self, queue_key: QueueKey, priority: float) -> tuple[QueueEntry, int]:
        """Admit a request; return its entry and queue position (0 = already granted)."""
        now = self.clock()
        loop = asyncio.get_running_loop()
        entry = QueueEntry(
            queue_key=queue_key,
            priority=priority,
            enqueued_at=now,
            sort_key=sort_key(priority, now, self.config.aging_per_minute),
            seq=next(self._seq),
            granted=loop.create_future(),
        )
        backend = self._parked_backend_for(queue_key)
        if backend is not None:
            self._grant(self._parked[backend.name].pop(), entry, backend)
            return entry, 0
        heap = self.queues.get(queue_key)
        if heap is None:
            heap = self.queues[queue_key] = AgingHeap()
        if len(heap) >= self.config.max_waiting:
            raise ApiError(503, BUSY_MESSAGE, {"Retry-After": str(self.config.retry_after_s)})
        heap.push(entry)
        return entry, heap.position(entry)

    def cancel(self, entry: QueueEntry) -> None:
        """The client left or timed out: leave the queue now, or free the slot if granted."""
        if entry.backend is None and not entry.cancelled:
            heap = self.queues.get(entry.queue_key)
            if heap is not None:
                heap.discard(entry)
        entry.finish()

    def waiting(self, queue_key: QueueKey | None = None) -> int:
        if queue_key is not None:
            heap = self.queues.get(queue_key)
            return len(heap) if heap else 0
        return sum(len(h) for h in self.queues.values())

    # -- dispatcher side ----------------------------------------------------------------
    def start(self) -> None:
        for backend in self.backends:
            for i in range(backend.config.max_concurrent):
                name = f"dispatch:{backend.name}:{i}"
                self._tasks.append(asyncio.create_task(self._dispatcher(backend), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _dispatcher(self, backend: Backend) -> None:
        """Take the best entry this backend may serve, hold the slot until it finishes."""
        loop = asyncio.get_running_loop()
        while True:
            entry = self._take_best(backend)
            if entry is None:
                parked: asyncio.Future[QueueEntry] = loop.create_future()
                self._parked[backend.name].append(parked)
                try:
                    entry = await parked
                except asyncio.CancelledError:
                    if parked in self._parked[backend.name]:
                        self._parked[backend.name].remove(parked)
                    raise
            else:
                self._account(entry, backend)
            try:
                await entry.finished
            finally:
                backend.active -= 1

    def _take_best(self, backend: Backend) -> QueueEntry | None:
        best_heap: AgingHeap | None = None
        best: QueueEntry | None = None
        for key, heap in self.queues.items():
            head = heap.peek()
            if head is None or (best is not None and not head < best):
                continue
            if self._may_serve(backend, key):
                best, best_heap = head, heap
        if best_heap is None:
            return None
        entry = best_heap.pop()
        if not best_heap:
            self.queues.pop(entry.queue_key, None)
        return entry

    def _may_serve(self, backend: Backend, key: QueueKey) -> bool:
        """A backend serves a queue if it has the model and kind; a down backend only when
        no healthy one could serve it, so requests are not thrown at a dead server."""
        if not backend.can_serve(key):
            return False
        return backend.healthy or not any(b.healthy and b.can_serve(key) for b in self.backends)

    def _parked_backend_for(self, key: QueueKey) -> Backend | None:
        candidates = [b for b in self.backends if self._parked[b.name] and self._may_serve(b, key)]
        if not candidates:
            return None
        return min(candidates, key=lambda b: b.load_rank())

    def _grant(self, parked: asyncio.Future[QueueEntry], entry: QueueEntry, backend: Backend) -> None:
        self._account(entry, backend)
        parked.set_result(entry)

    def _account(self, entry: QueueEntry, backend: Backend) -> None:
        backend.active += 1
        entry.grant(backend)

    def rebalance(self) -> None:
        """Hand waiting work to parked dispatchers (after a health or model-list change)."""
        for backend in self.backends:
            parked = self._parked[backend.name]
            while parked:
                entry = self._take_best(backend)
                if entry is None:
                    break
                self._grant(parked.pop(), entry, backend)
