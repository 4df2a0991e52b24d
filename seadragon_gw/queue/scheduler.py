"""Per-model aging queues and the pool of dispatcher tasks per backend.

Each backend runs `max_concurrent` dispatcher tasks, started when the backend is added and
retired when it is removed: one per slot. A free slot takes the best waiting entry among the
queues its backend can serve; when there is none its dispatcher parks. A new request is handed
straight to a parked dispatcher when there is one (of several, the healthy backend with the
most free slots times its `weight`), else it waits in its queue.
A slot is held until the request is released (`release`), so the request's own task streams
the body while the scheduler accounts for the slot. The hand-overs happen in the calls that
cause them (`submit` grants to a parked slot, `release` frees the slot and gives it the next
entry or parks it): the dispatcher task itself only waits for its backend to be retired, so a
request costs no dispatcher task step, future or callback of its own.
A waiting entry that reaches its deadline is taken out of its queue and answered `QueueTimeout`
by the scheduler (`Deadlines`: one timer for all of them).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.backend import Backend
from ..backends.registry import Registry
from ..config import QueueConfig
from ..errors import GatewayError
from ..records.record import RequestRecord
from .aging import AgingQueue, sort_key
from .deadlines import Deadlines
from .entry import QueueEntry, QueueKey
from .errors import QueueFull, QueueTimeout

log = logging.getLogger("seadragon_gw.queue")


@dataclass(frozen=True, slots=True)
class WaitingRequest:
    """One waiting request as queue status shows it."""

    model: str
    position: int
    waited_s: float
    priority: float
    effective_priority: float
    record: RequestRecord | None


class Scheduler:
    def __init__(self, registry: Registry, config: QueueConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.queues: dict[QueueKey, AgingQueue] = {}
        self._parked: dict[Backend, list[asyncio.Future[None]]] = {}  # the free slots, by backend
        self._tasks: dict[Backend, list[asyncio.Task[None]]] = {}
        self._retiring: set[Backend] = set()
        self._seq = itertools.count()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines(self._expire)
        registry.attach(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the scheduler runs on, kept once: on Python 3.11 every
        `asyncio.get_running_loop()` is a getpid() system call (fork detection), which was ~10%
        of the gateway's CPU per request when four calls were made per request."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def backends(self) -> list[Backend]:
        return self.registry.backends

    # -- request side -------------------------------------------------------------------
    def submit(self, queue_key: QueueKey, priority: float, record: RequestRecord | None = None, *,
               enqueued_at: float | None = None, profile: str | None = None,
               avoid: frozenset[Backend] = frozenset(), deadline: float | None = None) -> tuple[QueueEntry, int]:
        """Admit a request; return its entry and queue position (0 = already granted).
        `enqueued_at` (this clock) is an async job's submission time: it ages from then.
        `profile`: only a managed backend running that profile may serve it. `avoid`: backends
        that failed this request before answering (failover: `resubmit`). `deadline` (the
        loop's clock): if it still waits then, it leaves the queue with `QueueTimeout`."""
        now = self.clock() if enqueued_at is None else enqueued_at
        entry = QueueEntry(
            queue_key=queue_key,
            priority=priority,
            enqueued_at=now,
            sort_key=sort_key(priority, now, self.config.aging_per_minute),
            seq=next(self._seq),
            granted=self.loop.create_future(),
            record=record,
            profile=profile,
            avoid=avoid,
            deadline=deadline,
        )
        backend = self._parked_backend_for(queue_key, profile, avoid)
        if backend is not None:
            self._grant(self._parked[backend].pop(), entry, backend)
            return entry, 0
        queue = self.queues.get(queue_key)
        if queue is None:
            queue = self.queues[queue_key] = AgingQueue()
        if len(queue) >= self.config.max_waiting:
            raise QueueFull(self.config.retry_after_s)
        queue.push(entry)
        if deadline is not None:
            self._deadlines.add(entry, deadline, self.loop)
        return entry, queue.position(entry)

    def resubmit(self, entry: QueueEntry, avoid: frozenset[Backend]) -> tuple[QueueEntry, int]:
        """Failover: the request of `entry`, whose backend failed before answering, again with
        its priority and age (so it is near the front), for any backend but those in `avoid`.
        The caller has released `entry`."""
        return self.submit(entry.queue_key, entry.priority, entry.record, enqueued_at=entry.enqueued_at,
                           profile=entry.profile, avoid=avoid, deadline=entry.deadline)

    def release(self, entry: QueueEntry) -> None:
        """The one way a request lets go: leave the queue if still waiting, else free the
        slot it holds. Safe to call more than once, and after a rejection."""
        if entry.backend is None and not entry.cancelled:
            self._leave_queue(entry)
        if entry.granted.done() and not entry.granted.cancelled():
            entry.granted.exception()  # retrieved, so a rejection nobody awaited is not "lost"
        entry.finish()

    def _leave_queue(self, entry: QueueEntry) -> None:
        """A waiting entry out of its queue (the queue too, once empty), marked cancelled."""
        queue = self.queues.get(entry.queue_key)
        if queue is not None:
            queue.discard(entry)
            if not queue:
                del self.queues[entry.queue_key]
        entry.cancelled = True

    def waiting(self, queue_key: QueueKey | None = None) -> int:
        if queue_key is not None:
            queue = self.queues.get(queue_key)
            return len(queue) if queue else 0
        return sum(len(h) for h in self.queues.values())

    def processing(self) -> int:
        """Requests holding a backend slot, over all backends."""
        return sum(backend.active for backend in self.backends)

    def held(self) -> int:
        """Requests waiting or holding a backend slot (0: the gateway serves nothing now)."""
        return self.waiting() + self.processing()

    def effective_priority(self, entry: QueueEntry) -> float:
        minutes = (self.clock() - entry.enqueued_at) / 60.0
        return entry.priority - self.config.aging_per_minute * minutes

    def waiting_requests(self, model: str | None = None) -> list[WaitingRequest]:
        """Every waiting request (of one model key, if given), best first per queue."""
        now = self.clock()
        result: list[WaitingRequest] = []
        for key, queue in self.queues.items():
            if model is not None and key[0] != model:
                continue
            for position, entry in enumerate(queue.ordered(), start=1):
                result.append(WaitingRequest(key[0], position, now - entry.enqueued_at, entry.priority,
                                             self.effective_priority(entry), entry.record))
        return result

    def reject_waiting(self, model: str | None, error: GatewayError) -> int:
        """Answer every waiting request (of one model key, or all) with `error` at once;
        requests already holding a slot are untouched. Returns how many were rejected."""
        count = 0
        for key in list(self.queues):
            if model is not None and key[0] != model:
                continue
            queue = self.queues.pop(key)
            for entry in queue.ordered():
                entry.cancelled = True
                if not entry.granted.done():  # else cancelled by its waiter, which is leaving
                    entry.granted.set_exception(error)
                count += 1
        return count

    def _expire(self, entry: QueueEntry) -> None:
        """`entry` waited until its deadline: out of its queue, answered `QueueTimeout`."""
        self._leave_queue(entry)
        model = entry.record.model if entry.record is not None and entry.record.model else entry.queue_key[0]
        entry.granted.set_exception(QueueTimeout(
            f"timed out after {self.config.timeout_s:g}s waiting in the queue for model '{model}'"))

    # -- backends come and go ------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._loop = asyncio.get_running_loop()
        for backend in self.backends:
            self._start_dispatchers(backend)

    async def stop(self) -> None:
        self._running = False
        self._deadlines.close()
        tasks = [t for ts in self._tasks.values() for t in ts]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._parked.clear()

    def backend_added(self, backend: Backend) -> None:
        if self._running:
            self._start_dispatchers(backend)

    async def backend_retired(self, backend: Backend) -> None:
        """Stop the backend's dispatchers: parked ones at once, busy ones once the request
        they serve has finished (the backend is draining, so they take nothing new)."""
        self._retiring.add(backend)
        try:
            for parked in self._parked.pop(backend, []):
                parked.cancel()
            tasks = self._tasks.pop(backend, [])
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._retiring.discard(backend)

    def backends_changed(self) -> None:
        """Hand waiting work to parked dispatchers (after a state or model-list change)."""
        for backend in self.backends:
            parked = self._parked.get(backend)
            while parked:
                entry = self._take_best(backend)
                if entry is None:
                    break
                self._grant(parked.pop(), entry, backend)
            if parked:
                self._want_profiles(backend)

    def _start_dispatchers(self, backend: Backend) -> None:
        self._parked.setdefault(backend, [])
        tasks = self._tasks.setdefault(backend, [])
        for i in range(backend.config.max_concurrent):
            tasks.append(asyncio.create_task(self._dispatcher(backend), name=f"dispatch:{backend.name}:{i}"))

    # -- dispatcher side ----------------------------------------------------------------
    async def _dispatcher(self, backend: Backend) -> None:
        """One slot of `backend` for as long as the backend is served. Its work is handed to it
        in calls (`_fill`, `_grant`, `_freed`); the task waits for the end: its `slot` future
        is cancelled when the backend is retired while the slot is parked, or set when the
        request it holds finishes after that."""
        slot: asyncio.Future[None] = self.loop.create_future()
        self._fill(slot, backend)
        try:
            await slot
        except asyncio.CancelledError:
            waiting = self._parked.get(backend)
            if waiting is not None and slot in waiting:
                waiting.remove(slot)
            raise

    def _fill(self, slot: asyncio.Future[None], backend: Backend) -> None:
        """A free slot: the best entry this backend may serve, or parked till one comes."""
        entry = self._take_best(backend)
        if entry is None:
            self._want_profiles(backend)
            self._parked.setdefault(backend, []).append(slot)
        else:
            self._grant(slot, entry, backend)

    def _freed(self, slot: asyncio.Future[None], backend: Backend) -> None:
        """The request holding `slot` finished (`QueueEntry.finish`, from `release`)."""
        backend.active -= 1
        if slot.done():  # the scheduler stopped
            return
        if backend in self._retiring:
            slot.set_result(None)  # the dispatcher ends: the backend takes nothing new
            return
        self._fill(slot, backend)

    def _take_best(self, backend: Backend) -> QueueEntry | None:
        best_queue: AgingQueue | None = None
        best: QueueEntry | None = None
        for key, queue in self.queues.items():
            head = queue.peek()
            if head is None or (best is not None and not head < best) or not self._may_serve(backend, key):
                continue
            if (head.profile is not None or head.avoid) and not self._fits(backend, head):
                head = queue.first(lambda e: self._fits(backend, e))
                if head is None or (best is not None and not head < best):
                    continue
            best, best_queue = head, queue
        if best_queue is None or best is None:
            return None
        entry = best
        if entry is best_queue.peek():
            best_queue.pop()
        else:
            best_queue.take(entry)
        if not best_queue:
            self.queues.pop(entry.queue_key, None)
        return entry

    def _may_serve(self, backend: Backend, key: QueueKey) -> bool:
        """A backend serves a queue if it has the model and kind and takes work; a down one
        only when no healthy one could serve it, so requests are not thrown at a dead server
        (but a backend that came back is found by the next request)."""
        if not backend.may_try or not backend.can_serve(key):
            return False
        return backend.healthy or not any(b.healthy and b.can_serve(key) for b in self.backends)

    def _fits(self, backend: Backend, entry: QueueEntry) -> bool:
        """An entry for a profile only goes to a backend running that profile; a failed-over
        one never back to a backend that failed it."""
        if backend in entry.avoid:
            return False
        return entry.profile is None or self.registry.profile_of(backend) == entry.profile

    def _want_profiles(self, backend: Backend) -> None:
        """An up managed backend with nothing it may serve and nothing active: the registry is
        told, with the best waiting entry's profile if requests for its models wait for another
        one (a switch, now that no request of the running profile is active), else so that a
        member of its exclusive group may have its turn."""
        if backend.active or not backend.managed or not backend.healthy:
            return
        wanted = [head for key, queue in self.queues.items() if backend.can_serve(key)
                  and (head := queue.peek()) is not None and head.profile is not None]
        best = min(wanted) if wanted else None
        self.registry.backend_idle(backend, (best.queue_key, best.profile) if best and best.profile else None)

    def _parked_backend_for(self, key: QueueKey, profile: str | None = None,
                            avoid: frozenset[Backend] = frozenset()) -> Backend | None:
        candidates = [b for b in self.backends if self._parked.get(b) and self._may_serve(b, key)
                      and (profile is None or self.registry.profile_of(b) == profile) and b not in avoid]
        if not candidates:
            return None
        return min(candidates, key=_preference)

    def _grant(self, slot: asyncio.Future[None], entry: QueueEntry, backend: Backend) -> None:
        """`entry` takes `slot` of `backend` (a parked slot's dispatcher task is not woken:
        there is nothing for it to do); `release` hands the slot on (`_freed`)."""
        backend.active += 1
        if entry.record is not None:
            entry.record.effective_priority = self.effective_priority(entry)
        entry.grant(backend, functools.partial(self._freed, slot, backend))


def _preference(backend: Backend) -> tuple[bool, float]:
    """Which of several backends with a parked dispatcher gets a new request (seed 003's load
    balancing): healthy first, then the most free slots times `weight`; ties go to the first
    configured. Under load this spreads requests in proportion to slots x weight; one at a
    time, every request goes to the same (best) backend, which is the cheapest choice for a
    model server that keeps its model loaded."""
    config = backend.config
    return not backend.healthy, -(config.max_concurrent - backend.active) * config.weight
