"""server/light.py: the smaller stand-ins for uvicorn's per-connection and per-request objects
behave as the originals do where uvicorn uses them."""

from __future__ import annotations

import asyncio

from seadragon_gw.server.light import ConnectionGone, Flow, MessageEvent, Pipeline


def test_pipeline_serves_the_oldest_first_and_is_false_when_empty() -> None:
    pipeline = Pipeline()
    assert not pipeline
    for n in range(3):
        pipeline.appendleft(n)  # uvicorn: appendleft each new pipelined request, pop the next
    assert [pipeline.pop() for _ in range(3)] == [0, 1, 2]
    assert not pipeline


async def test_message_event_wakes_every_waiter_and_clear_rearms_it() -> None:
    event = MessageEvent(asyncio.get_running_loop())
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True]
    assert await event.wait() is True  # set: returns at once
    event.clear()
    late = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await late is True


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    event = MessageEvent(asyncio.get_running_loop())
    gone, stays = asyncio.ensure_future(event.wait()), asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    event.set()
    assert await stays is True and gone.cancelled()


class _Transport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_flow_drains_at_once_while_writable_and_waits_while_paused() -> None:
    transport = _Transport()
    flow = Flow(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    await asyncio.wait_for(flow.drain(), 1)  # writable from the start, as uvicorn's
    flow.pause_writing()
    drained = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    flow.resume_writing()
    await asyncio.wait_for(drained, 1)
    flow.pause_reading()
    assert (flow.read_paused, transport.reading) == (True, False)
    flow.resume_reading()
    assert (flow.read_paused, transport.reading) == (False, True)


class Watcher:
    def __init__(self) -> None:
        self.told = 0

    def client_gone(self) -> None:
        self.told += 1


def test_connection_gone_tells_its_watcher_once_and_a_late_watcher_at_once() -> None:
    gone, watcher = ConnectionGone(), Watcher()
    gone.watch(watcher)
    assert watcher.told == 0
    gone.set()
    gone.set()  # the connection is lost once; a second call tells nobody again
    assert gone.is_set and watcher.told == 1
    late = Watcher()
    gone.watch(late)  # the watch began after the client left: told at once
    assert late.told == 1


def test_connection_gone_tells_nobody_once_the_watch_stopped() -> None:
    gone, watcher = ConnectionGone(), Watcher()
    gone.watch(watcher)
    gone.watch(None)  # the request ended before its client left
    gone.set()
    assert gone.is_set and watcher.told == 0
