"""Smaller stand-ins for objects uvicorn (or asyncio) would make per connection and request.

Thousands of requests may wait in the queue, each holding its connection, so what uvicorn
keeps for each is multiplied by the queue's depth (issue 7: a waiting stream <= 8 KB). Three
of its objects are mostly empty space:

- the connection's `pipeline`, a `collections.deque` for pipelined requests: an empty deque
  allocates a 64-slot block (~620 bytes); a list holds the rare pipelined request as well;
- the request cycle's `message_event`, an `asyncio.Event` (an object, its dict and an empty
  deque of waiters, ~1.5 KB with what tracemalloc sees): the waiters (callers of the cycle's
  `receive`, nearly always one) are kept in a list made when the first one waits;
- the connection's `FlowControl`, for the same reason: its `asyncio.Event` for "writable".

All keep the behaviour uvicorn relies on: `appendleft`/`pop`/truth for the pipeline (first in,
first out), `set`/`clear`/`is_set`/`wait` for the event. And the gateway's own:

- `ConnectionGone`, how the app learns that a client left (the request's disconnect watch): a
  flag and one watcher, not a future with a done-callback (~270 bytes less per connection).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from uvicorn.protocols.http.flow_control import FlowControl


class Pipeline(list[Any]):
    """uvicorn's pipeline deque as a list: `appendleft` the newest, `pop` the oldest."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class MessageEvent:
    """`asyncio.Event` with its waiters in a list made on the first wait."""

    __slots__ = ("_value", "_waiters", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self._loop = loop

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = self._loop.create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters.remove(waiter)
        return True


class Flow(FlowControl):
    """uvicorn's FlowControl with a `MessageEvent` for its "writable" event."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._is_writable_event = MessageEvent(loop)  # type: ignore[assignment]
        self._is_writable_event.set()


class GoneWatcher(Protocol):
    def client_gone(self) -> None: ...


class ConnectionGone:
    """Set once the client's connection is lost; tells its one watcher at once."""

    __slots__ = ("is_set", "watcher")

    def __init__(self) -> None:
        self.is_set = False
        self.watcher: GoneWatcher | None = None

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            watcher, self.watcher = self.watcher, None
            if watcher is not None:
                watcher.client_gone()

    def watch(self, watcher: GoneWatcher | None) -> None:
        """`watcher.client_gone()` when the connection is lost (at once if it was); None stops."""
        self.watcher = watcher
        if watcher is not None and self.is_set:
            self.watcher = None
            watcher.client_gone()
