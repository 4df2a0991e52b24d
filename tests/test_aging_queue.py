"""AgingQueue on its own: exact order, exact ranks after departures, arrival order on ties."""

from __future__ import annotations

import asyncio
import random

import pytest

from seadragon_gw.queue.aging import AgingQueue, sort_key
from seadragon_gw.queue.entry import QueueEntry


def _entries(loop: asyncio.AbstractEventLoop, specs: list[tuple[float, float]]) -> list[QueueEntry]:
    return [QueueEntry(("m", None), p, t, sort_key(p, t, 0.1), i, loop.create_future())
            for i, (p, t) in enumerate(specs)]


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_order_is_effective_priority_then_arrival(loop: asyncio.AbstractEventLoop) -> None:
    # p3 queued at t=0 has aged 2.0 after 20 minutes: it ties a fresh p1 and came first
    old_p3, fresh_p1, fresh_p2, later_p1 = _entries(loop, [(3, 0), (1, 1200), (2, 1200), (1, 1201)])
    queue = AgingQueue()
    for entry in (later_p1, fresh_p2, fresh_p1, old_p3):
        queue.push(entry)
    assert [queue.pop() for _ in range(4)] == [old_p3, fresh_p1, later_p1, fresh_p2]


def test_positions_stay_exact_as_requests_leave(loop: asyncio.AbstractEventLoop) -> None:
    rng = random.Random(3)
    entries = _entries(loop, [(rng.choice([1, 2, 3]), rng.uniform(0, 3600)) for _ in range(500)])
    queue = AgingQueue()
    for entry in entries:
        queue.push(entry)
    gone = set(rng.sample(range(500), 200))
    for i in gone:
        queue.discard(entries[i])
    staying = sorted((e for i, e in enumerate(entries) if i not in gone), key=lambda e: (e.sort_key, e.seq))
    assert len(queue) == 300 and queue.ordered() == staying
    assert [queue.position(e) for e in staying] == list(range(1, 301))
    assert all(entries[i].cancelled for i in gone)
    assert queue.peek() is staying[0] and queue.pop() is staying[0] and queue.position(staying[1]) == 1
