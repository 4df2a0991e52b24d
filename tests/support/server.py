"""Run any ASGI app on a real uvicorn server in a background thread.

Tests talk to the gateway and to fake backends over real sockets, so the
HTTP framing, streaming and disconnect behaviour under test is uvicorn's own
rather than an in-process transport's approximation of it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import uvicorn

from seadragon_gw.config import ServerConfig
from seadragon_gw.server import uvicorn_options

T = TypeVar("T")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free a moment ago (for configs that need a port up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """Runs an ASGI app on a real uvicorn server on 127.0.0.1:<free port> in a daemon thread with its own event loop.

    Port 0 is the default: the kernel picks the port at bind time, so parallel
    servers never race for one, and the real port is read back after startup.

    With `server` (the gateway's `ServerConfig`) uvicorn runs as `seadragon-gw serve` runs it:
    `seadragon_gw.server.uvicorn_options` (the gateway's HTTP protocol, its head limits,
    deadlines and connection cap, keep-alive, access log, log level, shutdown grace); only host
    and port stay the test's. Without it (fake backends) plain uvicorn serves the app.
    `uvicorn_kwargs` override either.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 server: ServerConfig | None = None, **uvicorn_kwargs: Any) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._server_config = server
        self._overrides = uvicorn_kwargs
        self.port: int = port
        self.server: uvicorn.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and bool(self.server and self.server.started)

    def start(self) -> Self:
        """Start serving; blocks until the socket accepts connections so tests never race startup."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        config = uvicorn.Config(self.app, **self._uvicorn_kwargs())
        self.server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(config,), name=f"uvicorn-{id(self):x}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"uvicorn failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("uvicorn did not start within 10 s")
            time.sleep(0.002)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self

    def _uvicorn_kwargs(self) -> dict[str, Any]:
        """Built per start: the gateway protocol class holds one server's cap and sweep."""
        kwargs: dict[str, Any] = {"loop": "auto", "interface": "asgi3", "lifespan": "on",
                                  "log_level": "warning", "timeout_graceful_shutdown": 2}
        if self._server_config is not None:
            kwargs.update(uvicorn_options(self._server_config))
        kwargs.update(self._overrides, host=self.host, port=self._requested_port)
        return kwargs

    def _run(self, config: uvicorn.Config) -> None:
        """Thread body: a private loop so the server never shares one with the test or another server."""
        factory = config.get_loop_factory() or asyncio.new_event_loop
        loop = factory()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            assert self.server is not None
            loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # SystemExit on bind/lifespan failure must not kill the test run
            self._error = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())  # getaddrinfo worker thread
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self.loop = None

    def stop(self) -> None:
        """Graceful stop (runs lifespan shutdown); forces exit only if the graceful path hangs."""
        thread, server = self._thread, self.server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_S)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError("uvicorn thread did not stop")

    def call(self, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 10) -> T:
        """Run coro_fn(*args) on the server loop and return its result, for touching loop-owned state."""
        if self.loop is None or not self.running:
            raise RuntimeError("server is not running")

        async def runner() -> T:
            return await coro_fn(*args)

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
