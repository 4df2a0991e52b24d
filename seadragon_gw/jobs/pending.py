"""Queued jobs not yet inside the scheduler, per queue, in the scheduler's own order.

Jobs enter the scheduler a few at a time (`jobs.admit_window` per model), so a hundred
thousand queued jobs cost a small entry each here (an id, two times, shared principal and
names), not a task, a future and a request record each; bodies stay in the database until a
job runs. The order is the scheduler's: `aging.sort_key` of the credential's priority and the
submission time, then submission order; so the best job here is the one the scheduler would
serve first, and it enters as soon as a window place frees.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

from ..auth.principal import Principal
from ..model_names import QueueKey

Item = tuple[float, int, str]


@dataclass(frozen=True, slots=True)
class Pending:
    """What admitting a job needs, without its body (read once it is in the queue). The
    principal, route and model are shared between jobs that have the same."""

    id: str
    key: QueueKey
    route: str
    model: str | None
    principal: Principal
    created_at: float  # wall clock
    enqueued_at: float  # the same instant on the scheduler's clock
    item: Item
    profile: str | None = None  # the managed profile it must run with


class PendingIndex:
    def __init__(self) -> None:
        self._queues: dict[QueueKey, SortedList[Item]] = {}
        self._jobs: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def add(self, job: Pending) -> None:
        queue = self._queues.get(job.key)
        if queue is None:
            queue = self._queues[job.key] = SortedList()
        queue.add(job.item)
        self._jobs[job.id] = job

    def pop(self, key: QueueKey) -> Pending | None:
        """The best job of one queue, removed."""
        queue = self._queues.get(key)
        if not queue:
            return None
        job = self._jobs.pop(queue.pop(0)[2])
        if not queue:
            del self._queues[key]
        return job

    def remove(self, job_id: str) -> Pending | None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            queue = self._queues[job.key]
            queue.discard(job.item)
            if not queue:
                del self._queues[job.key]
        return job

    def keys(self) -> list[QueueKey]:
        return list(self._queues)

    def count(self, model: str | None = None) -> int:
        """Jobs waiting here (of one model key, if given)."""
        if model is None:
            return len(self._jobs)
        return sum(len(q) for key, q in self._queues.items() if key[0] == model)

    def take_all(self, model: str | None = None) -> list[str]:
        """Remove and return every job (of one model key, if given), best first per queue."""
        taken: list[str] = []
        for key in [k for k in self._queues if model is None or k[0] == model]:
            for item in self._queues.pop(key):
                taken.append(item[2])
                self._jobs.pop(item[2], None)
        return taken
