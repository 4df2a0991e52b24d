"""One periodic sweep per server that closes connections past their head or body deadline,
or idle past the keep-alive time.

A timer per request would be an allocation on the hot path (uvicorn makes and cancels one per
request for the keep-alive alone); instead the sweep advances an integer tick and each
connection only stores the tick at which its current wait began (an attribute store per
read). The sweep runs while the server has connections, every `tick_s` (an eighth of the
shorter of the head and body times, so 1.25 s by default), so a deadline is enforced at most
one tick late and never early. The keep-alive time shares the tick: a sweep visits every
connection (~3 ms with 10,000 open), and a tick set by the keep-alive (0.625 s by default)
doubled how often the loop pays that.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Watched(Protocol):
    def check_deadline(self, ticks: int) -> None:
        """Close the connection if its current wait has lasted too many ticks."""


class DeadlineSweep:
    """The tick counter and sweep of one server; `GatewayHttpProtocol` registers with it."""

    def __init__(self, header_timeout_s: float, body_timeout_s: float, keepalive_s: float) -> None:
        self.tick_s = min(header_timeout_s, body_timeout_s) / 8  # keep-alive too: a sweep is O(connections)
        self.header_ticks = math.ceil(header_timeout_s / self.tick_s)
        self.body_ticks = math.ceil(body_timeout_s / self.tick_s)
        self.keepalive_ticks = math.ceil(keepalive_s / self.tick_s)
        self.ticks = 0
        self._members: set[Watched] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, connection: Watched, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep `connection` from now on; starts the sweep if it was idle."""
        if loop is not self._loop:
            if self._members:
                raise RuntimeError("a protocol class serves one server: build one uvicorn_options() per server")
            self._loop, self._handle = loop, None  # a server started again on a new loop
        self._members.add(connection)
        if self._handle is None:
            self._handle = loop.call_later(self.tick_s, self._sweep, loop)

    def unwatch(self, connection: Watched) -> None:
        self._members.discard(connection)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # the sweep of a server that has stopped
        self.ticks += 1
        for connection in list(self._members):  # a copy: never iterate a set that callbacks change
            connection.check_deadline(self.ticks)
        self._handle = loop.call_later(self.tick_s, self._sweep, loop) if self._members else None
