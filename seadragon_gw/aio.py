"""Small asyncio helpers for the request path that take the event loop explicitly.

On Python 3.11 `asyncio.get_running_loop()` (called inside `asyncio.wait`, `ensure_future`,
`current_task()` without a loop, futures made without one...) costs a getpid() system call,
because it checks for a fork; at a few microseconds each on a VM that was ~10% of the gateway's
CPU per proxied request. The request path therefore keeps the loop (`Scheduler.loop`) and
uses these.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def until(future: asyncio.Future[Any], seconds: float, loop: asyncio.AbstractEventLoop) -> None:
    """Wait until `future` is done or `seconds` passed, never cancelling `future`. Fewer
    objects than `wait_for(shield(...))`: one future, one timer handle (a waiting request is
    held by the thousand, so its size matters)."""
    waker: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waker.done():
            waker.set_result(None)

    timer = loop.call_later(seconds, wake)
    future.add_done_callback(wake)
    try:
        await waker
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
