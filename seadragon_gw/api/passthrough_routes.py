"""OpenAI's multi-modal routes (seed 003): images, speech, transcriptions, passed through.

They go to the backends that list their model (`dall-e-3`, `tts-1`, `whisper-1`, ...), through the
same queue, auth, limits, failover and records as chat: the one proxy path (`proxy.forward`).
- `/v1/images/generations` and `/v1/audio/speech` have JSON bodies: plain forwarded routes. Their
  answers (JSON with images, or the audio bytes) are relayed whole, with the backend's type.
- `/v1/audio/transcriptions` and `/v1/audio/translations` are multipart uploads, streamed to the
  backend unread: the gateway reads the body only up to its `model` field (multipart.py), which
  the OpenAI SDKs send before the file. Where a client sends the file first, `?model=NAME` names
  the model instead; the rest of the body is still watched, and a `model` field after the file
  that names another model ends the upload with 400 (a restricted credential cannot route by one
  model and be served another). No model at all: `default_model`, else 400. Bodies over
  `server.max_body_bytes` get 413, by Content-Length at once or when the count passes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..errors import InvalidInput, TooLarge
from ..gateway import Gateway
from ..lifecycle.route import RouteSpec
from ..model_names import model_key
from .asgi import ClientGone, header_map
from .context import gateway_of
from .multipart import Field, Part, PartScanner, boundary_of
from .proxy import Call, forward
from .routes import Forward

JSON_MEDIA = RouteSpec(access="user", queued=True, native=False, streams=False)
UPLOAD = RouteSpec(access="user", queued=True, native=False, streams=False, raw_body=True)
HEAD_LIMIT = 1024 * 1024  # form fields before the file: bytes read (and held) at most to find the model


class Upload:
    """ASGI endpoint of a multipart route: `proxy.forward` with the multipart admission."""

    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await forward(gateway_of(scope), self.spec, scope, receive, send, admit=admit_upload)


async def admit_upload(gateway: Gateway, call: Call, receive: Receive) -> None:
    """Authenticate, find the model without reading the file, admit; the body streams on later."""
    scope = call.scope
    headers = header_map(scope)
    principal = gateway.auth.authenticate(scope, headers, call.spec.access)
    limit = gateway.config.server.max_body_bytes
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"request body too large (limit {limit} bytes)")
    body = _Body(receive, PartScanner(boundary_of(headers.get(b"content-type")), frozenset({"model"})), limit)
    model = await body.read_to_model() or _query_model(scope)
    if model is None and gateway.requests.default_model is None:
        raise InvalidInput("model is required: send the multipart model field before the file, or ?model=NAME")
    body.route_to(model or gateway.requests.default_model)  # before admission: a refusal holds no slot
    call.payload = {"model": model} if model is not None else {}
    call.body = body.chunks()
    call.exchange = gateway.requests.admit(call.writer.record, principal, call.spec, call.payload, False)


def _query_model(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model")
    return values[0] if values else None


class _Body:
    """The request body: the head read to find the model, then the rest as it arrives, counted
    against the limit and watched for a `model` field that names another model."""

    def __init__(self, receive: Receive, scanner: PartScanner, limit: int) -> None:
        self._receive = receive
        self._scanner = scanner
        self._limit = limit
        self._head: list[bytes] = []
        self._size = 0
        self._done = False
        self._later: list[Part | Field] = []  # what the head held after the model was decided
        self._routed: str | None = None

    async def read_to_model(self) -> str | None:
        """Read until the `model` field ended (its value), a file part began, the body ended or
        `HEAD_LIMIT` bytes were read (None: the model is not before the file)."""
        held = 0
        while not self._done and held < HEAD_LIMIT:
            data = await self._next()
            self._head.append(data)
            held += len(data)
            events = self._scanner.feed(data)
            for i, event in enumerate(events):
                if isinstance(event, Field) or event.filename is not None:
                    self._later = events[i + 1:]
                    return event.value if isinstance(event, Field) else None
        return None

    def route_to(self, model: str | None) -> None:
        """The model the request was admitted for; fields already read are checked now."""
        self._routed = model
        self._check(self._later)
        self._later = []

    async def chunks(self) -> AsyncIterator[bytes]:
        for data in self._head:
            yield data
        self._head = []
        while not self._done:
            data = await self._next()
            self._check(self._scanner.feed(data))
            yield data

    def _check(self, events: list[Part | Field]) -> None:
        for event in events:
            routed = self._routed
            if isinstance(event, Field) and routed is not None and model_key(event.value) != model_key(routed):
                raise InvalidInput(f"the multipart model field names '{event.value}' after the file, but the "
                                   f"request was routed to model '{self._routed}'")

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        data: bytes = message.get("body", b"")
        self._done = not message.get("more_body", False)
        self._size += len(data)
        if self._size > self._limit:
            raise TooLarge(f"request body too large (limit {self._limit} bytes)")
        return data


def passthrough_routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        Route("/v1/images/generations", Forward(JSON_MEDIA), methods=post),
        Route("/v1/audio/speech", Forward(JSON_MEDIA), methods=post),
        Route("/v1/audio/transcriptions", Upload(UPLOAD), methods=post),
        Route("/v1/audio/translations", Upload(UPLOAD), methods=post),
    ]
