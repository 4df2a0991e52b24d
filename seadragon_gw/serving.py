"""uvicorn on a socket bound up front, with callbacks once it really accepts connections and
the moment it is told to stop.

`GatewayServer` differs from `uvicorn.Server` in three ways:
- `on_ready` runs after the lifespan started the gateway and the socket listens, so what it
  prints (a curl line) works the moment it appears; never when start-up failed.
- `on_stopping` runs on the event loop as soon as SIGTERM/SIGINT arrives, before uvicorn
  closes the listening socket and waits for running requests (`server.shutdown_grace_s`):
  the gateway refuses new requests and answers waiting ones then, not after the grace.
- a stop by signal is a clean exit (status 0): uvicorn would re-raise the signal once it has
  shut down, so the process would die of it (-15) after a graceful stop. A second signal
  stops at once (no grace, no lifespan shutdown), as a second Ctrl+C does in uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.server import HANDLED_SIGNALS


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None],
                 on_stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_stopping = on_stopping
        self._loop: asyncio.AbstractEventLoop | None = None
        self._told = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler: it may run between any two bytecodes of the loop's thread, so
        the gateway is told from the loop (`call_soon_threadsafe`), not from here."""
        if self.should_exit:
            self.force_exit = True
        super().handle_exit(sig, frame)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._tell_stopping)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._tell_stopping()  # also when the stop did not come by signal
        await super().shutdown(sockets=sockets)

    def _tell_stopping(self) -> None:
        if not self._told and self.started:
            self._told = True
            self._on_stopping()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers for the stop signals, restored afterwards; the signal is not
        raised again once the server has stopped (see the module docstring)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(app: Any, options: dict[str, Any], sock: socket.socket, on_ready: Callable[[], None],
        on_stopping: Callable[[], None]) -> None:
    GatewayServer(uvicorn.Config(app, **options), on_ready, on_stopping).run(sockets=[sock])
