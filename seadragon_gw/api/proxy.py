"""The HTTP way in for every forwarded route: parse, then drive the request lifecycle.

Order of work: authenticate, read and check the body, admit (model, access, queue), wait for
the slot (sending early stream headers and keepalives while queued), open the upstream
(sending stream headers anyway if the backend is slow to answer), relay, release. Everything
about queues, slots and backends is `lifecycle.service`'s; this module only speaks HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from starlette.types import Receive, Scope, Send

from ..aio import until
from ..backends.upstream import StreamBroken, UpstreamResponse
from ..errors import GatewayError, InvalidInput
from ..gateway import Gateway
from ..lifecycle.forwarding import upstream_headers
from ..lifecycle.route import RouteSpec
from ..lifecycle.service import Exchange, outcome_of
from ..queue.errors import SHUTDOWN_MESSAGE
from ..records.record import Outcome, RequestRecord
from ..server.direct import DIRECT_BODY, drop_direct_body
from . import relay
from .asgi import ClientGone, DisconnectWatch, header_map, read_body
from .context import ECHO_REQUEST_ID, request_id_of
from .errors import ApiError, as_api_error, send_error, style_for_path
from .jobs_routes import respond_async, submit_async
from .usage_routes import note_internal_error
from .validation import parse_json_object
from .writer import HttpWriter

log = logging.getLogger("seadragon_gw.proxy")
INTERNAL_ERROR = "internal error"  # what a client is told of a bug; the crash log has the rest
_BLOB_DIGEST = re.compile(r"sha256[:-][0-9a-f]{64}")


class Call:
    """One forwarded HTTP request: its parsed body and its exchange."""

    __slots__ = ("spec", "scope", "body", "payload", "parsed", "stream", "exchange", "writer")

    def __init__(self, spec: RouteSpec, scope: Scope, writer: HttpWriter) -> None:
        self.spec = spec
        self.scope = scope
        self.writer = writer
        self.body: bytes | AsyncIterator[bytes] | None = None
        self.payload: dict[str, Any] | None = None
        self.parsed = False  # `payload` is `body` parsed, nothing added: it can be parsed again
        self.stream = False
        self.exchange: Exchange | None = None

    def shed_payload(self) -> bool:
        """Drop the parsed body while the request waits in the queue, keeping the bytes it
        came from (True: `restore_payload` when the slot comes). Parsed, a prompt takes
        several times the memory of its JSON text, and thousands of requests may wait."""
        exchange = self.exchange
        if not self.parsed or self.payload is None or (exchange is not None and exchange.rebody):
            return False
        self.payload = None
        return True

    def restore_payload(self) -> None:
        assert isinstance(self.body, bytes)
        self.payload = parse_json_object(self.body)


Admission = Callable[[Gateway, "Call", Receive], Awaitable[None]]
"""Fills `call.body`, `call.payload` (at least the model) and `call.exchange`; the default,
`_admit`, reads a JSON body. A route whose body must stream through unread (a multipart
upload) brings its own, so that it still takes this one path (queue, auth, limits, relay)."""


def forward(gateway: Gateway, spec: RouteSpec, scope: Scope, receive: Receive, send: Send,
            admit: Admission | None = None) -> Coroutine[Any, Any, None]:
    """The one coroutine that serves a forwarded request (`_serve`), made here and not awaited
    here: the fast path hands it to the server as it is, so a request waiting in the queue
    holds no frame of this function, nor of the fast path's (api/fastpath.py)."""
    if spec.queued and respond_async(spec, scope):  # `Prefer: respond-async`: an async job
        return _async_job(gateway, spec, scope, receive, send)
    record = gateway.recorder.start(request_id_of(scope), scope["method"], scope["path"])
    writer = HttpWriter(send, style_for_path(scope["path"]), record, gateway.recorder.clock,
                        scope.get(ECHO_REQUEST_ID), scope.get(DIRECT_BODY))
    return _serve(gateway, Call(spec, scope, writer), receive, admit or _admit)


async def _async_job(gateway: Gateway, spec: RouteSpec, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await submit_async(gateway, spec, scope, receive, send)
    except Exception as exc:  # a bug: answered, logged and noted as Starlette's routes' are
        _note_bug(gateway, scope, exc)
        try:
            await send_error(send, scope, 500, INTERNAL_ERROR, scope.get(ECHO_REQUEST_ID))
        except Exception:  # the answer had begun: the server closes the connection
            log.debug("no error answer possible after the response started", exc_info=True)
    finally:
        drop_direct_body(scope)


async def _admitted(gateway: Gateway, call: Call, receive: Receive, admit: Admission) -> bool:
    """Admission, its refusals answered: True when the request has its exchange."""
    writer, record = call.writer, call.writer.record
    try:
        await admit(gateway, call, receive)
    except (ApiError, GatewayError) as error:
        api_error = _as_api(error)
        try:
            await writer.fail(api_error)
        finally:
            if call.exchange is not None:  # an admission step that refused after admitting
                call.exchange.release(outcome_of(error), api_error.status, error.message)
            else:
                gateway.requests.reject(record, error, api_error.status)
        return False
    except ClientGone:
        if call.exchange is not None:
            call.exchange.release("client_gone", 0)
        else:
            gateway.recorder.finish(record, "client_gone", 0)
        return False
    assert call.exchange is not None
    return True


def _note_bug(gateway: Gateway, scope: Scope, exc: Exception) -> None:
    log.error("unexpected error on %s %s: %s", scope["method"], scope["path"], type(exc).__name__, exc_info=exc)
    note_internal_error(gateway, scope, exc)


async def _admit(gateway: Gateway, call: Call, receive: Receive) -> None:
    scope, spec = call.scope, call.spec
    headers = header_map(scope)
    principal = gateway.auth.authenticate(scope, headers, spec.access)
    if spec.raw_body:
        digest = scope.get("path_params", {}).get("digest", "")
        if not _BLOB_DIGEST.fullmatch(digest):
            raise InvalidInput("blob digest must be sha256:<64 lowercase hex digits>")
        call.body = _stream_body(receive) if scope["method"] == "POST" else None
    else:
        body = await read_body(receive, headers, gateway.config.server.max_body_bytes, call.writer.direct)
        call.body = body
        call.payload = parse_json_object(body) if body or spec.model_field else None
        call.parsed = call.payload is not None and bool(body)
        call.stream = spec.streams and _wants_stream(call.payload, spec.native)
    call.exchange = gateway.requests.admit(call.writer.record, principal, spec, call.payload, call.stream)


async def _serve(gateway: Gateway, call: Call, receive: Receive, admit: Admission) -> None:
    """Admit, wait, open, relay; a disconnect cancels any step after admission; a bug anywhere
    is answered 500 "internal error" (in-band once a stream began), logged and put in the crash
    log; the slot or queue place is given back and the record finished exactly once.

    One coroutine and one try for all of it, the queue wait inline: each coroutine frame on
    the stack while a request waits is ~300 bytes more for each of the thousands that may
    wait. (Admission answers its own refusals: `_admitted`.)"""
    writer, scope = call.writer, call.scope
    task = asyncio.current_task(gateway.scheduler.loop)  # with the loop: no getpid() call
    assert task is not None
    watch: DisconnectWatch | None = None
    outcome: Outcome = "ok"
    error_text: str | None = None
    try:
        if not await _admitted(gateway, call, receive, admit):
            return
        exchange = call.exchange
        assert exchange is not None
        if not call.spec.raw_body:
            watch = DisconnectWatch(scope, receive, task)
        if not exchange.leased:
            # Queued: early stream headers with the position, SSE keepalives, until the slot.
            queue = gateway.config.queue
            early = call.stream and queue.early_headers
            if early:
                await writer.start_stream(200, [(b"x-queue-position", str(exchange.position).encode())])
            step = queue.sse_keepalive_s if early and writer.style == "openai" else None
            shed = call.shed_payload()
            while not await exchange.wait(step):
                await writer.comment(b": queued\n\n")
            if shed:
                call.restore_payload()
        response = await _open(gateway, call, exchange)
        try:
            await _relay(call, exchange, response)
        finally:
            await response.aclose()
        if writer.status >= 500:
            outcome = "upstream_error"
    except asyncio.CancelledError:
        task.uncancel()  # handled here: the client gets an answer, uvicorn logs no traceback
        if watch is None or not watch.disconnected:  # the server's grace ran out
            outcome, error_text = "rejected", SHUTDOWN_MESSAGE
            await _fail_quietly(writer, ApiError(503, SHUTDOWN_MESSAGE))
        else:
            outcome = "client_gone"
    except (ApiError, GatewayError) as error:
        outcome, error_text = outcome_of(error), error.message
        await writer.fail(_as_api(error))
    except ClientGone:
        outcome = "client_gone"
    except Exception as exc:  # a bug: answered, logged and noted as Starlette's routes' are
        outcome, error_text = "rejected", INTERNAL_ERROR
        _note_bug(gateway, scope, exc)
        await _fail_quietly(writer, ApiError(500, INTERNAL_ERROR))
    finally:
        if watch is not None:
            watch.close()
        # At most once each: a refusal in admission released or finished them already.
        if call.exchange is not None:
            call.exchange.release(outcome, writer.status, error_text)
        else:
            gateway.recorder.finish(writer.record, outcome, writer.status, error_text)
        drop_direct_body(scope)


async def _open(gateway: Gateway, call: Call, exchange: Exchange) -> UpstreamResponse:
    """The slot is leased: send the request upstream, and return once its headers are in."""
    _log_dispatch(call, exchange)
    scope, writer = call.scope, call.writer
    path = call.spec.upstream_path or scope["path"]
    if scope["query_string"]:
        path += "?" + scope["query_string"].decode("latin-1")
    direct = writer.direct  # the server knows whether other requests are in progress (write_batch.py)
    opening = exchange.open(scope["method"], path, upstream_headers(scope["headers"]), call.body, call.payload,
                            direct is None or direct.alone)
    if call.stream and not writer.started and gateway.config.queue.early_headers:
        return await _open_with_grace(gateway, writer, opening)
    return await opening


async def _relay(call: Call, exchange: Exchange, response: UpstreamResponse) -> None:
    writer = call.writer
    if writer.started:
        if response.status >= 400:
            raise StreamBroken(await relay.upstream_error_message(response))
        await relay.relay_stream(writer, response, exchange.rewrite)
    elif call.stream and response.status < 400:
        await relay.start_stream_like(writer, response)
        await relay.relay_stream(writer, response, exchange.rewrite)
    else:
        await relay.send_whole(writer, response, exchange.rewrite)


async def _open_with_grace(gateway: Gateway, writer: HttpWriter, opening: Coroutine[Any, Any, UpstreamResponse]
                           ) -> UpstreamResponse:
    """Open a stream, but if the backend has not answered within `queue.header_grace_s`
    (Ollama sends no headers while it loads a model) send the client its 200 stream headers
    anyway, so header timeouts (legacy Cline: 30 s) do not fire. Quick failures keep their
    real status; later ones end the stream in-band."""
    loop = gateway.scheduler.loop
    task: asyncio.Task[UpstreamResponse] = loop.create_task(opening)
    try:
        await until(task, gateway.config.queue.header_grace_s, loop)
        if not task.done():
            await writer.start_stream(200)
            await task  # a client leaving now cancels the opening too
        return task.result()
    except BaseException:
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is None:
            await task.result().aclose()
        raise


def _wants_stream(payload: dict[str, Any] | None, native: bool) -> bool:
    """Native routes stream unless `"stream": false`; OpenAI routes only with `"stream": true`."""
    if payload is None:
        return False
    value = payload.get("stream")
    if value is None:
        return native
    if not isinstance(value, bool):
        raise InvalidInput("stream must be a boolean")
    return value


def _as_api(error: ApiError | GatewayError) -> ApiError:
    return error if isinstance(error, ApiError) else as_api_error(error)



async def _fail_quietly(writer: HttpWriter, error: ApiError) -> None:
    """Tell a client the gateway is going away (or failed), if its connection still takes bytes."""
    try:
        await writer.fail(error)
    except Exception:  # the transport may be gone already, or the answer begun; nothing more to do
        log.debug("could not send the %s notice", error.status, exc_info=True)


def _log_dispatch(call: Call, exchange: Exchange) -> None:
    if log.isEnabledFor(logging.DEBUG):
        who: RequestRecord = exchange.record
        log.debug("%s %s model=%s -> %s (%s %s, client=%s, priority=%s, id=%s)", call.scope["method"],
                  call.scope["path"], exchange.model, exchange.backend.name if exchange.backend else "-",
                  who.credential_kind, who.credential_name, who.client_id, who.priority, who.request_id)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return

