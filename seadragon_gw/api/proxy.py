"""The one proxy path: every forwarded route, queued or not, goes through `Proxy.handle`.

Order of work for a request: authenticate, read and check the body, find backends for the
model, queue (inference only), then forward and relay. Until the first response byte every
failure is a real status with a JSON error; after early stream headers it is an in-band line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.types import Receive, Scope, Send

from ..auth.authenticator import Authenticator
from ..auth.principal import Principal
from ..backends.backend import Backend
from ..backends.upstream import UpstreamResponse
from ..backends.registry import Registry
from ..config import GatewayConfig
from ..model_names import model_key
from ..queue.entry import QueueEntry, QueueKey
from ..queue.scheduler import Scheduler
from . import relay
from .asgi import ClientGone, DisconnectWatch, header_map, read_body, send_error
from ..errors import GatewayError
from .errors import ApiError, ErrorStyle, as_api_error, style_for_path
from .validation import parse_json_object

Access = Literal["read", "user", "admin"]
log = logging.getLogger("seadragon_gw.proxy")


@dataclass(frozen=True)
class ForwardSpec:
    """How one route is forwarded.

    `native`: an Ollama-API route (needs an Ollama backend; `stream` defaults to true).
    `upstream_path`: the backend path when it differs from the request path.
    `model_field`: where the model name is in the body (None: the route names no model).
    `raw_body`: stream the request body through unread (blob uploads).
    `model_must_exist`: 404 for unknown models (false for pull/create, which make them).
    `changes_models`: re-read the backend's model list afterwards (pull, create, copy, delete).
    `streams`: the route may answer with a stream (false for embeddings and show, which never
    stream, so they never get early stream headers and always keep the backend's real status).
    """

    access: Access
    queued: bool
    native: bool
    upstream_path: str | None = None
    model_field: str | None = "model"
    raw_body: bool = False
    model_must_exist: bool = True
    changes_models: bool = False
    streams: bool = True


@dataclass(slots=True)
class Call:
    """One forwarded request in flight."""

    spec: ForwardSpec
    scope: Scope
    style: ErrorStyle
    principal: Principal
    body: bytes | AsyncIterator[bytes] | None
    payload: dict[str, Any] | None
    stream: bool
    started: bool = False


class Proxy:
    def __init__(self, config: GatewayConfig, registry: Registry, scheduler: Scheduler,
                 authenticator: Authenticator) -> None:
        self.config = config
        self.registry = registry
        self.scheduler = scheduler
        self.auth = authenticator

    async def handle(self, spec: ForwardSpec, scope: Scope, receive: Receive, send: Send) -> None:
        style = style_for_path(scope["path"])
        try:
            call = await self._admit(spec, scope, receive, style)
            if spec.raw_body:
                await self._forward(call, self._any_backend(call), send)
            else:
                await self._run(call, receive, send)
        except ApiError as error:
            await send_error(send, style, error)
        except GatewayError as error:
            await send_error(send, style, as_api_error(error))
        except ClientGone:
            pass

    async def _admit(self, spec: ForwardSpec, scope: Scope, receive: Receive, style: ErrorStyle) -> Call:
        headers = header_map(scope)
        principal = self.auth.authenticate(scope, headers, spec.access)
        if spec.raw_body:
            body = _stream_body(receive) if scope["method"] == "POST" else None
            return Call(spec, scope, style, principal, body, None, False)
        body = await read_body(receive, headers, self.config.server.max_body_bytes)
        payload = parse_json_object(body) if body or spec.model_field else None
        stream = spec.streams and _wants_stream(payload, spec.native)
        return Call(spec, scope, style, principal, body, payload, stream)

    async def _run(self, call: Call, receive: Receive, send: Send) -> None:
        """Queue (if the route is queued), then forward; a disconnect cancels either step."""
        key, backend = self._route(call)
        entry: QueueEntry | None = None
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(receive, task)
        try:
            if call.spec.queued:
                entry = await self._queue(call, key, send)
                backend = entry.backend
            assert backend is not None
            if log.isEnabledFor(logging.DEBUG):
                who = call.principal
                log.debug("%s %s model=%s -> %s (%s %s, client=%s, priority=%g)", call.scope["method"],
                          call.scope["path"], key[0], backend.name, who.kind, who.name, who.client, who.priority)
            await self._forward(call, backend, send)
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            task.uncancel()
        except ApiError as error:
            if not call.started:
                raise
            await relay.end_stream_with_error(send, call.style, error.message)
        finally:
            watch.close()
            if entry is not None:
                self.scheduler.cancel(entry)

    def _route(self, call: Call) -> tuple[QueueKey, Backend | None]:
        """Pick the queue (inference) or the backend (everything else) for a request."""
        name = _model_name(call)
        if name is None:
            return ("", None), self._any_backend(call)
        key: QueueKey = (model_key(name), "ollama" if call.spec.native else None)
        if not call.principal.may_use(key[0]):
            raise ApiError(403, f"this credential may not use model '{name}'")
        backends = self.registry.serving(key)
        if not backends and not call.spec.model_must_exist:
            return key, self._any_backend(call)
        if not backends:
            if call.spec.native and self.registry.serving((key[0], None)):
                raise ApiError(404, f"model '{name}' not found on any Ollama backend; use the /v1 API")
            raise ApiError(404, f"model '{name}' not found")
        if call.spec.queued:
            return key, None
        return key, min(backends, key=Backend.load_rank)

    def _any_backend(self, call: Call) -> Backend:
        wanted = "ollama" if call.spec.native else None
        options = [b for b in self.registry.backends if wanted in (None, b.kind)]
        if not options:
            raise ApiError(404, "no backend can serve this route")
        return min(options, key=lambda b: not b.healthy)

    async def _queue(self, call: Call, key: QueueKey, send: Send) -> QueueEntry:
        entry, position = self.scheduler.submit(key, call.principal.priority)
        if position == 0:
            return entry
        early = call.stream and self.config.queue.early_headers
        try:
            if early:
                extra = [(b"x-queue-position", str(position).encode())]
                await send(relay.stream_start(200, _stream_type(call.style), extra))
                call.started = True
            await self._await_grant(call, entry, send, keepalive=early and call.style == "openai")
        except BaseException:
            # The caller never gets the entry (client gone, timeout): leave the queue now, or
            # give back a slot granted in the meantime, or it would be held forever.
            self.scheduler.cancel(entry)
            raise
        return entry

    async def _await_grant(self, call: Call, entry: QueueEntry, send: Send, keepalive: bool) -> None:
        loop = asyncio.get_running_loop()
        queue = self.config.queue
        deadline = loop.time() + queue.timeout_s
        while not entry.granted.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                name = _model_name(call)
                raise ApiError(504, f"timed out after {queue.timeout_s:g}s waiting in the queue for model '{name}'")
            step = min(remaining, queue.sse_keepalive_s) if keepalive else remaining
            try:
                await asyncio.wait_for(asyncio.shield(entry.granted), step)
            except TimeoutError:
                if keepalive and not entry.granted.done():
                    await send({"type": "http.response.body", "body": b": queued\n\n", "more_body": True})

    async def _open_with_grace(self, call: Call, opening: Awaitable[UpstreamResponse], send: Send) -> UpstreamResponse:
        """Open a stream, but if the backend has not answered within `queue.header_grace_s`
        (Ollama sends no headers while it loads a model) send the client its 200 stream headers
        anyway, so header timeouts (legacy Cline: 30 s) do not fire. Quick failures keep their
        real status; later ones end the stream in-band."""
        task = asyncio.ensure_future(opening)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.config.queue.header_grace_s)
            if not done:
                await send(relay.stream_start(200, _stream_type(call.style)))
                call.started = True
                await asyncio.wait({task})
            return task.result()
        except BaseException:
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                await task.result().aclose()
            raise

    async def _forward(self, call: Call, backend: Backend, send: Send) -> None:
        scope = call.scope
        path = call.spec.upstream_path or scope["path"]
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        body, rewrite = _body_for(call, backend)
        opening = relay.open_upstream(
            backend, scope["method"], path, relay.upstream_headers(scope["headers"]), body)
        if call.stream and not call.started and self.config.queue.early_headers:
            response = await self._open_with_grace(call, opening, send)
        else:
            response = await opening
        try:
            if call.started:
                if response.status >= 400:
                    message = await relay.upstream_error_message(response)
                    await relay.end_stream_with_error(send, call.style, message)
                else:
                    await relay.relay_stream(send, response, call.style, rewrite)
            elif call.stream and response.status < 400:
                headers = relay.response_headers(response.headers)
                await send({"type": "http.response.start", "status": response.status,
                            "headers": headers + relay.STREAM_HEADERS})
                call.started = True
                await relay.relay_stream(send, response, call.style, rewrite)
            else:
                await relay.send_whole(send, response, rewrite)
        finally:
            await response.aclose()
            if call.spec.changes_models:
                self.registry.refresh_soon(backend)


def _wants_stream(payload: dict[str, Any] | None, native: bool) -> bool:
    """Native routes stream unless `"stream": false`; OpenAI routes only with `"stream": true`."""
    if payload is None:
        return False
    value = payload.get("stream")
    return value is not False if native else value is True


def _model_name(call: Call) -> str | None:
    field = call.spec.model_field
    if field is None or call.payload is None:
        return None
    name = call.payload.get(field)
    if name is None and field == "model":
        name = call.payload.get("name")  # older Ollama clients send `name`
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"{field} is required")
    return name


def _body_for(call: Call, backend: Backend) -> tuple[bytes | AsyncIterator[bytes] | None, relay.Rewrite | None]:
    """The client's bytes, untouched, unless an OpenAI backend knows the model by another
    name: then the request carries the backend's name and the reply gets the client's back."""
    if backend.kind != "openai" or call.payload is None:
        return call.body, None
    name = call.payload.get("model")
    info = backend.models.get(model_key(name)) if isinstance(name, str) else None
    if info is None or info.name == name:
        return call.body, None
    return orjson.dumps({**call.payload, "model": info.name}), relay.model_renamer(info.name, name)


def _stream_type(style: ErrorStyle) -> bytes:
    return relay.EVENT_STREAM if style == "openai" else relay.NDJSON


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
