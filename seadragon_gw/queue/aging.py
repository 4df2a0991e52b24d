"""The aging priority heap of one queue.

Effective priority = base - rate * minutes waited. Since every entry ages at the same rate,
ordering by `base + rate * enqueue_minute` is the same order at every instant, so a plain heap
keyed on that constant gives O(log n) push/pop with exact aging order. Ties keep arrival order.
Cancelled entries are dropped lazily when they reach the top.
"""

from __future__ import annotations

import heapq

from .entry import QueueEntry


def sort_key(priority: float, enqueued_at_s: float, aging_per_minute: float) -> float:
    # Rounded so that an exact tie of the formula (an old p3 after 20 min vs a fresh p1 at
    # 0.1/min) stays a tie despite float error and falls back to arrival order. Rounding is
    # monotonic, so it never reorders; it only merges keys closer than 1e-9.
    return round(priority + aging_per_minute * enqueued_at_s / 60.0, 9)


class AgingHeap:
    def __init__(self) -> None:
        self._heap: list[QueueEntry] = []
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def push(self, entry: QueueEntry) -> None:
        heapq.heappush(self._heap, entry)
        self.live += 1

    def peek(self) -> QueueEntry | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop(self) -> QueueEntry:
        entry = self.peek()
        assert entry is not None
        heapq.heappop(self._heap)
        self.live -= 1
        return entry

    def discard(self, entry: QueueEntry) -> None:
        """Mark an entry gone; it leaves the count now and the heap when it surfaces."""
        entry.cancelled = True
        self.live -= 1

    def ordered(self) -> list[QueueEntry]:
        """The live entries, best first (O(n log n); for listings and clearing, not dispatch)."""
        return sorted(e for e in self._heap if not e.cancelled)

    def position(self, entry: QueueEntry) -> int:
        """1-based rank among live entries (O(n); used once per queued request)."""
        return 1 + sum(1 for e in self._heap if not e.cancelled and e < entry)
