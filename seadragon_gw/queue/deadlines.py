"""The queue's deadlines: one timer for every waiting request, not one each.

A waiting request used to wait for its slot with a timer handle, a future and a callback of its
own (about 1 KiB of the 11 KiB a waiting stream cost, and thousands may wait). Here the waiting
entries' deadlines are kept in one heap of `(deadline, seq, entry)`, with one `loop.call_at`
armed for the earliest; when it fires, every entry past its deadline that still waits is timed
out (`expire`), and the timer is armed for the next.

An entry that leaves the queue otherwise (granted, released, rejected) is not searched for:
it is dropped when it reaches the top of the heap (lazy deletion). So that such entries cannot
pile up behind a long deadline, the heap is rebuilt from the entries still waiting whenever it
has grown to twice what it held after the last rebuild (at least 64): each rebuild costs
O(n) for at least n/2 pushes since the one before, O(1) per push amortized, and the heap never
holds more than about twice the waiting entries.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from .entry import QueueEntry

_MIN_REBUILD = 64


def waiting(entry: QueueEntry) -> bool:
    """Still in its queue, neither granted, rejected nor gone."""
    return entry.backend is None and not entry.cancelled and not entry.granted.done()


class Deadlines:
    """The deadlines of the entries waiting in a scheduler's queues (its one owner)."""

    def __init__(self, expire: Callable[[QueueEntry], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, QueueEntry]] = []
        self._rebuild_at = _MIN_REBUILD
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def __len__(self) -> int:
        """Entries held, those that left the queue but are not dropped yet included."""
        return len(self._heap)

    def add(self, entry: QueueEntry, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        """`entry` waits until `deadline` (the loop's clock) at the latest."""
        heap = self._heap
        heapq.heappush(heap, (deadline, entry.seq, entry))
        if len(heap) >= self._rebuild_at:
            self._rebuild()
        if self._timer is None or deadline < self._armed_for:
            self._arm(loop)

    def close(self) -> None:
        """Stop the timer (the scheduler stopped); the entries are the scheduler's to answer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _rebuild(self) -> None:
        heap = self._heap = [item for item in self._heap if waiting(item[2])]
        heapq.heapify(heap)
        self._rebuild_at = max(_MIN_REBUILD, 2 * len(heap))

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        heap = self._heap
        while heap and not waiting(heap[0][2]):
            heapq.heappop(heap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if heap:
            self._armed_for = heap[0][0]
            self._timer = loop.call_at(self._armed_for, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out what is due. A timer may fire a hair before its time by the loop's clock,
        so everything due by the time it was armed for counts as due."""
        self._timer = None
        due = max(loop.time(), self._armed_for)
        heap = self._heap
        while heap and heap[0][0] <= due:
            entry = heapq.heappop(heap)[2]
            if waiting(entry):
                self._expire(entry)
        self._arm(loop)
