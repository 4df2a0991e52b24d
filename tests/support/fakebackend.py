"""FakeBackend: a real HTTP server that speaks Ollama-native and OpenAI-compatible APIs.

The gateway under test must see genuine HTTP behaviour from its upstream
(chunked NDJSON/SSE, slow first bytes, dropped connections, client
disconnects), so this is a raw ASGI app served by uvicorn in a thread rather
than a mocked transport. Test-thread controls never block the server loop:
state that handlers wait on is only mutated on the loop (via ThreadedServer.call),
and the wait_* helpers poll with deadlines from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .fake_routes import INFERENCE_PATHS, JSON_CT, FakeApi, Handler, Recorded, Reply, Stream
from .server import ThreadedServer

__all__ = ["DEFAULT_MODELS", "FakeBackend", "FakeStreamAbort", "Recorded"]

DEFAULT_MODELS = ("llama3:latest", "qwen2.5:7b", "nomic-embed-text:latest")

# ASGI callables, as uvicorn passes them to the app.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class FakeStreamAbort(Exception):
    """Raised inside the ASGI app so uvicorn drops the connection mid-body (no terminating chunk)."""


@dataclass
class _Progress:
    finished: bool = False


class FakeBackend:
    """A scriptable Ollama (kind="ollama") or llama.cpp-like OpenAI-only (kind="openai") upstream.

    Counters read from the test thread: `active` (inference requests in flight),
    `waiting` (parked by hold/hold_mid_stream), `disconnects` (inference responses,
    streamed or still held, whose client went away before the last byte).
    """

    def __init__(
        self,
        models: Iterable[str] = DEFAULT_MODELS,
        chunks: int = 3,
        version: str = "0.12.6",
        kind: str = "ollama",
        port: int = 0,
    ) -> None:
        self.api = FakeApi(models, chunks, version, kind)
        self.requests: list[Recorded] = []
        self.active = 0
        self.waiting = 0
        self.disconnects = 0
        self.fail_mid_stream = False
        self.delay_s = 0.0
        self._forced: Reply | None = None
        self._holding = False
        self._hold_mid = False
        self._release = asyncio.Event()
        self._server = ThreadedServer(self._asgi, port=port)

    @property
    def kind(self) -> str:
        return self.api.kind

    @property
    def models(self) -> list[str]:
        """Served model names (canonical, with tag); mutable, pull/copy/delete/create edit it."""
        return self.api.models

    @property
    def chunks(self) -> int:
        """Content chunks per generated answer; settable between requests."""
        return self.api.chunks

    @chunks.setter
    def chunks(self, value: int) -> None:
        self.api.chunks = value

    @property
    def loaded(self) -> list[str]:
        """Models used by inference so far; what /api/ps lists."""
        return self.api.loaded

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def server(self) -> ThreadedServer:
        return self._server

    def start(self) -> FakeBackend:
        self._release = asyncio.Event()  # an Event binds to the first loop that waits on it
        self._server.start()
        return self

    def stop(self) -> None:
        """Release parked requests first so uvicorn's graceful shutdown does not wait on them."""
        if self._server.running:
            self.release()
        self._server.stop()

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test controls

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Apply a state change on the server loop, so it is atomic with respect to handlers."""
        if not self._server.running:
            fn()
            return

        async def apply() -> None:
            fn()

        self._server.call(apply)

    def hold(self) -> None:
        """Park every new inference request before any response bytes until release()."""
        self._on_loop(lambda: setattr(self, "_holding", True))

    def hold_mid_stream(self) -> None:
        """Streaming responses send (and flush) their first chunk, then park until release()."""
        self._on_loop(lambda: setattr(self, "_hold_mid", True))

    def release(self) -> None:
        """Wake everything parked and stop holding."""
        self._on_loop(self._release_now)

    def _release_now(self) -> None:
        self._holding = self._hold_mid = False
        self._release.set()
        self._release = asyncio.Event()

    def respond_status(self, status: int | None, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer inference requests with this status/JSON body until respond_status(None)."""
        if status is None:
            self._forced = None
            return
        payload = b"" if body is None else orjson.dumps(body)
        self._forced = Reply(status, payload, JSON_CT if body is not None else None, dict(headers or {}))

    def reset(self) -> None:
        """Forget recorded requests and scripted behaviour (parked requests are released)."""

        def clear() -> None:
            self._release_now()
            self.requests.clear()
            self.loaded.clear()
            self.disconnects = 0

        self._on_loop(clear)
        self.fail_mid_stream = False
        self.delay_s = 0.0
        self._forced = None

    def inference_requests(self) -> list[Recorded]:
        return [r for r in list(self.requests) if r.inference]

    def wait_for_inference(self, n: int, timeout: float = 5) -> list[Recorded]:
        _wait_until(lambda: len(self.inference_requests()) >= n, timeout, f"{n} inference requests")
        return self.inference_requests()

    def wait_waiting(self, n: int, timeout: float = 5) -> None:
        _wait_until(lambda: self.waiting == n, timeout, f"exactly {n} parked requests (now {self.waiting})")

    def wait_idle(self, timeout: float = 5) -> None:
        _wait_until(lambda: self.active == 0, timeout, f"no active requests (now {self.active})")

    def wait_disconnects(self, n: int, timeout: float = 5) -> None:
        _wait_until(lambda: self.disconnects >= n, timeout, f"{n} client disconnects (now {self.disconnects})")

    # ------------------------------------------------------------ ASGI plumbing

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        rec = await _record(scope, receive)
        handler = self.api.resolve(rec)
        rec.inference = rec.path in INFERENCE_PATHS and not isinstance(handler, Reply)
        self.requests.append(rec)
        if isinstance(handler, Reply):
            await _send_reply(send, handler)
        elif rec.inference:
            await self._serve_inference(rec, handler, receive, send)
        else:
            await self._send_result(send, handler(rec), _Progress(), inference=False)

    async def _serve_inference(self, rec: Recorded, handler: Handler, receive: Receive, send: Send) -> None:
        """Respond while watching for http.disconnect, because uvicorn's send() ignores a gone client."""
        self.active += 1
        progress = _Progress()
        work = asyncio.ensure_future(self._respond(rec, handler, send, progress))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not progress.finished:
                self.disconnects += 1
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            else:
                await work
        finally:
            work.cancel()
            watch.cancel()
            self.active -= 1

    async def _respond(self, rec: Recorded, handler: Handler, send: Send, progress: _Progress) -> None:
        if self._holding:
            await self._park()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        result = self._forced or handler(rec)
        await self._send_result(send, result, progress, inference=True)

    async def _park(self) -> None:
        event = self._release
        self.waiting += 1
        try:
            await event.wait()
        finally:
            self.waiting -= 1

    async def _send_result(
        self, send: Send, result: Reply | Stream, progress: _Progress, *, inference: bool
    ) -> None:
        """Write a reply, or a stream chunk by chunk applying the mid-stream controls to inference."""
        if isinstance(result, Reply):
            progress.finished = True
            await _send_reply(send, result)
            return
        headers = [(b"content-type", result.content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        last = len(result.chunks) - 1
        for i, chunk in enumerate(result.chunks):
            progress.finished = i == last
            await send({"type": "http.response.body", "body": chunk, "more_body": i != last})
            if i == 0 and i != last and inference:
                if self.fail_mid_stream:
                    raise FakeStreamAbort("fail_mid_stream: dropping connection after first chunk")
                if self._hold_mid:
                    await self._park()
        if not result.chunks:
            progress.finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------- module helpers


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll from the test thread; the server loop is never blocked by a waiting test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


async def _record(scope: Scope, receive: Receive) -> Recorded:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode("latin-1")
    return Recorded(scope["method"], scope["path"], headers, body, parsed, query)


async def _until_disconnect(receive: Receive) -> None:
    """Skip any trailing empty http.request messages; only http.disconnect means the client left."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-length", str(len(reply.body)).encode())]
    if reply.content_type:
        headers.append((b"content-type", reply.content_type.encode()))
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
