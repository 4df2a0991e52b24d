"""The scheduler keeps the queue's deadlines: one timer for every waiting request.

A waiting request times out when its deadline passes, by the loop's clock, and leaves its queue
then; the entries that left otherwise are dropped from the deadline heap lazily, which stays
bounded; and a waiter cancelled in the very turn its entry is granted (it awaits `granted`
directly) breaks nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from seadragon_gw.backends.registry import Registry
from seadragon_gw.config import BackendConfig, QueueConfig
from seadragon_gw.queue.entry import QueueEntry
from seadragon_gw.queue.errors import QueueTimeout
from seadragon_gw.queue.scheduler import Scheduler

KEY = ("m:latest", None)


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    """One backend with one slot, taken by `hold` in each test."""
    scheduler = Scheduler(Registry([BackendConfig(name="b", url="http://127.0.0.1:1", models=["m"])]),
                          QueueConfig(timeout_s=30, max_waiting=10_000))
    scheduler.start()
    for _ in range(3):
        await asyncio.sleep(0)  # the dispatcher parks
    yield scheduler
    await scheduler.stop()


def hold(scheduler: Scheduler) -> QueueEntry:
    entry, position = scheduler.submit(KEY, 1.0)
    assert position == 0
    return entry


def later(scheduler: Scheduler, seconds: float) -> float:
    return scheduler.loop.time() + seconds


def timers(loop: asyncio.AbstractEventLoop) -> int:
    return len(loop._scheduled)  # type: ignore[attr-defined]  # asyncio's own loop (the tests')


async def test_one_timer_for_all_waiting_requests(scheduler: Scheduler) -> None:
    holder = hold(scheduler)
    before = timers(scheduler.loop)
    waiting = [scheduler.submit(KEY, 1.0, deadline=later(scheduler, 30 + i))[0] for i in range(200)]
    assert scheduler.waiting() == 200
    assert timers(scheduler.loop) == before + 1
    for entry in waiting:
        scheduler.release(entry)
    scheduler.release(holder)


async def test_a_waiting_request_times_out_at_its_deadline_and_leaves_the_queue(scheduler: Scheduler) -> None:
    holder = hold(scheduler)
    start = scheduler.loop.time()
    entry, position = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 0.05))
    assert position == 1
    with pytest.raises(QueueTimeout, match="timed out after 30s waiting in the queue for model 'm:latest'"):
        await entry.granted
    assert scheduler.loop.time() - start >= 0.05
    assert scheduler.waiting() == 0 and entry.cancelled
    scheduler.release(entry)  # the waiter's release after a timeout: nothing more to do
    scheduler.release(holder)


async def test_an_earlier_deadline_fires_first(scheduler: Scheduler) -> None:
    holder = hold(scheduler)
    patient, _ = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 30))
    hasty, _ = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 0.05))
    with pytest.raises(QueueTimeout):
        await hasty.granted
    assert not patient.granted.done() and scheduler.waiting() == 1
    scheduler.release(patient)
    scheduler.release(holder)


async def test_an_entry_granted_before_its_deadline_is_not_timed_out(scheduler: Scheduler) -> None:
    holder = hold(scheduler)
    entry, _ = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 0.05))
    scheduler.release(holder)
    backend = await entry.granted
    await asyncio.sleep(0.1)  # past its deadline, while it holds the slot
    assert entry.backend is backend and not entry.cancelled
    scheduler.release(entry)


async def test_the_heap_drops_entries_that_left(scheduler: Scheduler) -> None:
    """10,000 requests with a 30 s deadline queue and leave (half granted, half gone) while
    10 wait throughout: the heap stays within twice what waits, plus its floor of 64."""
    holder = hold(scheduler)
    steady = [scheduler.submit(KEY, 9.0, deadline=later(scheduler, 30))[0] for _ in range(10)]
    deadlines = scheduler._deadlines
    most = 0
    for _ in range(5_000):
        gone = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 30))[0]
        scheduler.release(gone)  # its client left
        served = scheduler.submit(KEY, 0.0, deadline=later(scheduler, 30))[0]
        scheduler.release(holder)
        holder = served
        assert await served.granted is not None
        most = max(most, len(deadlines))
    assert scheduler.waiting() == 10
    assert most <= 2 * 10 + 64
    for entry in steady:
        scheduler.release(entry)
    scheduler.release(holder)


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_waiter_cancelled_in_the_turn_its_entry_is_granted(scheduler: Scheduler, cancel_first: bool) -> None:
    """The slot's holder finishes, and its release grants the waiter's entry at once; in the
    same turn the waiter is cancelled (its client left), before or after that grant. Cancelled
    first, `granted` is cancelled and the grant must not fail; granted first, the waiter's
    step raises CancelledError all the same. Either way the waiter's release gives the slot
    back unused and the next entry gets it."""
    holder = hold(scheduler)
    entry, _ = scheduler.submit(KEY, 1.0, deadline=later(scheduler, 30))
    following, _ = scheduler.submit(KEY, 2.0, deadline=later(scheduler, 30))

    async def waiter() -> None:
        try:
            await entry.granted
        finally:
            scheduler.release(entry)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter awaits `granted`
    if cancel_first:
        task.cancel()  # cancels `granted` at once; the waiter's step (and release) runs next turn
        scheduler.release(holder)  # the freed slot takes the best entry: the waiter's
        assert entry.granted.cancelled()
    else:
        scheduler.release(holder)
        task.cancel()
        assert entry.granted.done() and not entry.granted.cancelled()
    assert entry.backend is not None  # it was granted in `release`
    with pytest.raises(asyncio.CancelledError):
        await task
    backend = await asyncio.wait_for(following.granted, 5)
    assert entry.backend is backend  # ... and gave the slot back unused
    assert backend.active == 1 and scheduler.waiting() == 0
    scheduler.release(following)
