"""The aging priority queue of one model.

Effective priority = base - rate * minutes waited. Since every entry ages at the same rate,
ordering by `base + rate * enqueue_minute` is the same order at every instant, so entries are
kept sorted once on that constant key and never re-sorted. Ties keep arrival order (`seq`).

The entries live in a `sortedcontainers.SortedList` of `(sort_key, seq, entry)` tuples, so
adding, removing a departed client, taking the best and the rank for `X-Queue-Position` are
all O(log n): at 100,000 waiting requests an enqueue costs about what it costs at 100
(a heap gave O(log n) push/pop but an O(n) rank, which dominated deep queues). The tuples
compare in C (float, then int; `seq` is unique, so the entry itself is never compared).
"""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedList

from .entry import QueueEntry


def sort_key(priority: float, enqueued_at_s: float, aging_per_minute: float) -> float:
    # Rounded so that an exact tie of the formula (an old p3 after 20 min vs a fresh p1 at
    # 0.1/min) stays a tie despite float error and falls back to arrival order. Rounding is
    # monotonic, so it never reorders; it only merges keys closer than 1e-9.
    return round(priority + aging_per_minute * enqueued_at_s / 60.0, 9)


Item = tuple[float, int, QueueEntry]


def _item(entry: QueueEntry) -> Item:
    return (entry.sort_key, entry.seq, entry)


class AgingQueue:
    def __init__(self) -> None:
        self._items: SortedList[Item] = SortedList()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, entry: QueueEntry) -> None:
        self._items.add(_item(entry))

    def peek(self) -> QueueEntry | None:
        items = self._items
        return items[0][2] if items else None

    def pop(self) -> QueueEntry:
        """The best entry, removed."""
        return self._items.pop(0)[2]

    def first(self, fits: Callable[[QueueEntry], bool]) -> QueueEntry | None:
        """The best entry that `fits` (a backend running another profile skips the head)."""
        return next((item[2] for item in self._items if fits(item[2])), None)

    def take(self, entry: QueueEntry) -> None:
        """Out of the order because it was granted (unlike `discard`, not cancelled)."""
        self._items.remove(_item(entry))

    def discard(self, entry: QueueEntry) -> None:
        """A waiting request left (client gone, timed out): out of the order now."""
        self._items.discard(_item(entry))
        entry.cancelled = True

    def position(self, entry: QueueEntry) -> int:
        """1-based rank among the waiting entries, O(log n)."""
        return self._items.index(_item(entry)) + 1

    def ordered(self) -> list[QueueEntry]:
        """The waiting entries, best first."""
        return [item[2] for item in self._items]
