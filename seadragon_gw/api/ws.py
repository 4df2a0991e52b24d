"""`GET /api/ws`: inference over a WebSocket (seed 003), several requests per socket.

A socket authenticates once: by the usual headers at the upgrade, or, for a browser (which
cannot set headers on a WebSocket), by a first message `{"type": "auth", "token": "..."}`
within `websocket.auth_timeout_s`. A credential in the URL is refused: URLs end up in logs.
A browser (it sends `Origin`) never gets in by the address whitelist: any page it opened
could otherwise use that machine's standing.

Each request goes through `RequestService.admit` and `lifecycle.consume` like an HTTP request
(same queue, slots, records); this module only turns its answer into messages
(`ws_frames`). Cancelling a request, or closing the socket, cancels its task, which releases
its slot and closes its upstream connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import orjson
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth.errors import Unauthorized
from ..auth.principal import Principal
from ..errors import GatewayError, InvalidInput
from ..gateway import Gateway
from ..lifecycle.consume import Forwarded, complete, lines
from ..lifecycle.forwarding import error_message_of, upstream_headers
from ..lifecycle.route import INFERENCE
from ..lifecycle.service import Exchange
from . import ws_frames as frames
from .asgi import header_map
from .context import gateway_of
from .errors import as_api_error, error_body, status_for

log = logging.getLogger("seadragon_gw.ws")

URL_CREDENTIALS = frozenset({"token", "access_token", "api_key", "apikey", "key"})
URL_CREDENTIAL_REFUSED = ("a credential in the URL is refused (URLs are logged): send it in the Authorization "
                          "header or as the first message {\"type\": \"auth\", \"token\": \"...\"}")
POLICY_VIOLATION = 1008


def ws_routes() -> list[BaseRoute]:
    return [WebSocketRoute("/api/ws", serve_socket)]


async def serve_socket(websocket: WebSocket) -> None:
    """Refuse the upgrade with a JSON error (no gateway yet, a URL credential, bad header
    credentials), else accept and run the socket until it closes."""
    try:
        gateway = gateway_of(websocket.scope)
        principal = _header_principal(gateway, websocket)
    except GatewayError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    await Socket(gateway, websocket, principal).run()


def _header_principal(gateway: Gateway, websocket: WebSocket) -> Principal | None:
    """Who the upgrade's headers say the caller is; None: authenticate by message."""
    query = parse_qs(websocket.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if URL_CREDENTIALS.intersection(name.lower() for name in query):
        raise InvalidInput(URL_CREDENTIAL_REFUSED)
    headers = header_map(websocket.scope)
    explicit = b"authorization" in headers or b"x-api-key" in headers
    if not explicit and b"origin" in headers:
        return None  # a browser: no standing from its address
    try:
        return gateway.auth.authenticate(websocket.scope, headers, "user")
    except Unauthorized:
        if explicit:
            raise
        return None


async def _deny(websocket: WebSocket, exc: GatewayError) -> None:
    error = as_api_error(exc)
    response = Response(error_body("ollama", error.status, error.message), error.status, error.headers,
                        media_type="application/json")
    await websocket.send_denial_response(response)


class SocketClosed(Exception):
    """The client is gone: nothing more can be sent."""


class Socket:
    """One accepted WebSocket: authentication, the message loop, and the requests it runs
    (by client id)."""

    def __init__(self, gateway: Gateway, websocket: WebSocket, principal: Principal | None) -> None:
        self.gateway = gateway
        self.websocket = websocket
        self.config = gateway.config.websocket
        self.principal = principal
        self.running: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._quiet_since = asyncio.get_running_loop().time()

    async def run(self) -> None:
        try:
            if self.principal is None and not await self._authenticate():
                return
            await self.send(frames.ready())
            await self._serve()
        except (WebSocketDisconnect, SocketClosed):
            pass
        finally:
            self._closed = True
            await self._cancel_all()

    # -- authentication -----------------------------------------------------------------
    async def _authenticate(self) -> bool:
        """The first message must be `auth` with a good token within the timeout; anything
        else ends the socket (policy violation), so an unauthenticated client holds nothing."""
        timeout = self.config.auth_timeout_s
        try:
            data = await asyncio.wait_for(self._receive(), timeout)
        except TimeoutError:
            return await self._refuse(f"authentication timed out: send {{\"type\": \"auth\", \"token\": ...}} "
                                      f"within {timeout:g} s")
        try:
            command = frames.parse_command(data)
            if not isinstance(command, frames.Auth):
                raise InvalidInput("authenticate first: {\"type\": \"auth\", \"token\": \"...\"}")
            headers = {**header_map(self.websocket.scope), b"authorization": b"Bearer " + command.token.encode()}
            headers.pop(b"x-api-key", None)
            self.principal = self.gateway.auth.authenticate(self.websocket.scope, headers, "user")
        except GatewayError as exc:
            return await self._refuse(exc.message)
        return True

    async def _refuse(self, message: str) -> bool:
        await self.send(frames.error(None, message))
        await self.websocket.close(POLICY_VIOLATION, message[:120])
        return False

    # -- the message loop ---------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            data = await self._next_message()
            if data is None:
                await self.websocket.close(1000, "idle for longer than websocket.idle_timeout_s")
                return
            await self._handle(data)

    async def _next_message(self) -> str | bytes | None:
        """The next client message, or None once the socket was quiet (no message, nothing
        running) for `websocket.idle_timeout_s`."""
        loop = asyncio.get_running_loop()
        while True:
            wait = self._quiet_since + self.config.idle_timeout_s - loop.time()
            if self.running:
                wait = self.config.idle_timeout_s
            elif wait <= 0:
                return None
            try:
                data = await asyncio.wait_for(self._receive(), wait)
            except TimeoutError:
                continue
            self._quiet_since = loop.time()
            return data

    async def _handle(self, data: str | bytes) -> None:
        try:
            command = frames.parse_command(data)
        except frames.BadMessage as exc:
            await self.send(frames.error(exc.request_id, exc.message))
            return
        if isinstance(command, frames.Auth):
            await self.send(frames.error(None, "already authenticated"))
        elif isinstance(command, frames.Cancel):
            await self._cancel(command.id)
        else:
            await self._start(command)

    async def _start(self, command: frames.Start) -> None:
        limit = self.config.max_requests
        if command.id in self.running:
            await self.send(frames.error(command.id, f"a request with id '{command.id}' is already running"))
        elif len(self.running) >= limit:
            await self.send(frames.error(command.id, f"too many requests on this socket (limit {limit}): "
                                                     "wait for one to end"))
        else:
            assert self.principal is not None
            task = asyncio.create_task(drive(self.gateway, self.principal, command, self.send,
                                             self.config.queued_every_s), name=f"ws:{command.id}")
            self.running[command.id] = task
            task.add_done_callback(lambda t: self._ended(command.id, t))

    def _ended(self, request_id: str, task: asyncio.Task[None]) -> None:
        if self.running.get(request_id) is task:
            del self.running[request_id]
        if not self.running:
            self._quiet_since = asyncio.get_running_loop().time()
        if not task.cancelled() and not isinstance(task.exception(), (SocketClosed, type(None))):
            log.error("WebSocket request %s failed", request_id, exc_info=task.exception())

    async def _cancel(self, request_id: str) -> None:
        """Cancel one request; once its task has unwound, its slot is free and the client is
        told."""
        task = self.running.pop(request_id, None)
        if task is None or task.done():
            await self.send(frames.error(request_id, f"no running request with id '{request_id}'"))
            return
        task.cancel()
        await asyncio.wait({task})
        await self.send(frames.cancelled(request_id))

    async def _cancel_all(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- frames -------------------------------------------------------------------------
    async def _receive(self) -> str | bytes:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, text: str) -> None:
        """Send one message; several requests share the socket, so one at a time."""
        if self._closed:
            raise SocketClosed()
        async with self._send_lock:
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True
                raise SocketClosed() from None


# -- one request --------------------------------------------------------------------------

Emit = Callable[[str], Awaitable[None]]
_JSON = ((b"content-type", b"application/json"),)


async def drive(gateway: Gateway, principal: Principal, command: frames.Start, emit: Emit, step_s: float) -> None:
    """Run one request and emit its messages: `queued` while it waits, its chunks, then
    `done` or `error`. A GatewayError is its message, never a traceback."""
    spec = INFERENCE[command.route]
    # method "WS": metrics and the usage log tell WebSocket requests from HTTP ones
    record = gateway.recorder.start(gateway.recorder.ids.new(), "WS", command.route)
    try:
        stream = spec.streams and frames.wants_stream(command.body, spec.native)
        exchange = gateway.requests.admit(record, principal, spec, command.body, stream)
    except GatewayError as exc:
        gateway.requests.reject(record, exc, status_for(exc))
        await emit(frames.failure(command.id, exc))
        return
    run = RequestRun(exchange, command, emit, step_s)
    try:
        failed = await (run.stream() if stream else run.whole())
        await emit(frames.error(command.id, failed) if failed else frames.done(command.id, record))
    except GatewayError as exc:
        await emit(frames.failure(command.id, exc))
    except (asyncio.CancelledError, SocketClosed):
        raise
    except Exception:
        log.exception("WebSocket request %s (%s) failed", command.id, record.request_id)
        await emit(frames.error(command.id, "internal error"))
    finally:
        exchange.release("client_gone", 0, "cancelled")  # a no-op once consume released it


class RequestRun:
    """One admitted request's answer as messages; returns the request's error text, if any."""

    def __init__(self, exchange: Exchange, command: frames.Start, emit: Emit, step_s: float) -> None:
        self.exchange = exchange
        self.id = command.id
        self.emit = emit
        self.step_s = step_s
        self.request = Forwarded("POST", command.route, upstream_headers(_JSON), orjson.dumps(command.body),
                                 command.body)

    async def on_waiting(self, position: int) -> None:
        await self.emit(frames.queued(self.id, position))

    async def stream(self) -> str | None:
        """Each stream line as a chunk; an in-band error or a line that is not JSON is the
        request's error. The stream is read to its end either way, so its record says how
        it really ended."""
        await self._announce_queued()
        sse = not self.exchange.spec.native
        failed: str | None = None
        ended = False
        # closed however this ends, so a send failing mid-stream releases the slot at once
        answer = lines(self.exchange, self.request, on_waiting=self.on_waiting, step_s=self.step_s)
        async with contextlib.aclosing(answer):
            async for line in answer:
                if failed is not None or ended:
                    continue
                try:
                    kind, value = frames.read_line(line, sse)
                except InvalidInput as exc:
                    failed = exc.message
                    continue
                ended = kind == "done"
                if kind == "chunk":
                    failed = frames.in_band_error(value)
                    if failed is None:
                        await self.emit(frames.chunk(self.id, value))
        return failed

    async def whole(self) -> str | None:
        """A non-stream answer: one chunk, or the backend's error message."""
        await self._announce_queued()
        answer = await complete(self.exchange, self.request, on_waiting=self.on_waiting, step_s=self.step_s)
        if answer.status >= 400:
            return error_message_of(answer.body, answer.status)
        try:
            value = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return "the backend's answer is not JSON"
        await self.emit(frames.chunk(self.id, value))
        return None

    async def _announce_queued(self) -> None:
        if not self.exchange.leased:
            await self.on_waiting(self.exchange.position)
