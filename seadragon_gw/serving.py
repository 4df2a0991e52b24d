"""uvicorn on a socket bound up front, with a callback once it really accepts connections."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn


class AnnouncingServer(uvicorn.Server):
    """`on_ready` runs after the lifespan started the gateway and the socket listens, so what
    it prints (a curl line) works the moment it appears; never when start-up failed."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()


def run(app: Any, options: dict[str, Any], sock: socket.socket, on_ready: Callable[[], None]) -> None:
    AnnouncingServer(uvicorn.Config(app, **options), on_ready).run(sockets=[sock])
