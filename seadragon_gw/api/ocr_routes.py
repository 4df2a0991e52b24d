"""Seed 004's OCR API: `POST /api/ocr` and `POST /api/admin/ocr/resolution` (alias `/admin/ocr/resolution`).

`/api/ocr` takes an OpenAI chat body with image content and sends it to the backend with
`role: ocr` (its model is filled in), as `/v1/chat/completions`, through the one proxy path
(`proxy.forward`: auth, X-Priority, X-Client-ID, limits, queue, usage record). `X-Resolution`
names the managed profile the request needs (default: the backend's `default_profile`); the
request waits in the queue while the backend switches to it. With `Prefer: respond-async` it
is a job instead, answered with seed 004's `request_id`, `status` and `resolution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..auth.principal import Principal
from ..backends.backend import Backend
from ..backends.registry import Registry
from ..errors import InvalidInput, NotFound, Unavailable
from ..gateway import Gateway
from ..jobs.views import accepted_json
from ..lifecycle.route import INFERENCE, RouteSpec
from ..model_names import model_key
from .asgi import ClientGone, authorize, header_map, read_body
from .context import ECHO_REQUEST_ID, gateway_of
from .jobs_routes import JOBS, respond_async, submit_job
from .proxy import Call, forward
from .responses import json_response
from .validation import parse_json_object

OCR_ROLE = "ocr"
OCR_SPEC = RouteSpec(access="user", queued=True, native=False, upstream_path="/v1/chat/completions")
RESOLUTION_HEADER = b"x-resolution"


@dataclass(frozen=True, slots=True)
class OcrTarget:
    """Where OCR requests go: the role's backends, the model to ask for, their resolutions."""

    backends: list[Backend]
    model: str
    resolutions: list[str]
    default: str | None

    def resolution(self, asked: str | None) -> str | None:
        """The profile for a request (None: the backend has no resolutions, any process serves it)."""
        if asked is None:
            return self.default
        if asked not in self.resolutions:
            known = ", ".join(self.resolutions) or "none: the OCR backend has no resolution profiles"
            raise InvalidInput(f"unknown resolution '{asked}' (known: {known})")
        return asked


def ocr_target(registry: Registry) -> OcrTarget:
    """The OCR backends (`role: ocr`), in config order; the first one names the model and default."""
    backends = registry.by_role(OCR_ROLE)
    if not backends:
        raise NotFound("no OCR backend: configure a backend with role: ocr")
    first = backends[0]
    names = first.config.models if first.config.models != "*" else [m.name for m in first.models.values()]
    if not names:
        raise Unavailable(f"OCR backend {first.name} has not listed its models yet", retry_after_s=5)
    resolutions: dict[str, None] = {}
    default = None
    for backend in backends:
        managed = backend.config.managed
        if managed is not None:
            resolutions.update(dict.fromkeys(managed.profiles))
            default = default or managed.default_profile
    return OcrTarget(backends, names[0], list(resolutions), default)


def _asked_resolution(scope: Scope) -> str | None:
    value = header_map(scope).get(RESOLUTION_HEADER)
    return None if value is None else value.decode("latin-1").strip()


def ocr_payload(target: OcrTarget, payload: dict[str, Any]) -> dict[str, Any]:
    """The chat body for the OCR backend: its model filled in (a model the client names must be it)."""
    model = payload.get("model")
    if model is None:
        payload["model"] = target.model
    elif not isinstance(model, str) or not any(b.can_serve((model_key(model), None)) for b in target.backends):
        raise InvalidInput(f"model must be the OCR model '{target.model}' (or left out)")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidInput("stream must be a boolean")
    return payload


@dataclass(frozen=True, slots=True)
class OcrRequest:
    principal: Principal
    payload: dict[str, Any]
    profile: str | None


async def _read(gateway: Gateway, scope: Scope, receive: Receive) -> OcrRequest:
    """Who asks, the chat body for the OCR backend, and the profile its resolution needs."""
    headers = header_map(scope)
    principal = gateway.auth.authenticate(scope, headers, OCR_SPEC.access)
    target = ocr_target(gateway.registry)
    profile = target.resolution(_asked_resolution(scope))
    body = await read_body(receive, headers, gateway.config.server.max_body_bytes)
    return OcrRequest(principal, ocr_payload(target, parse_json_object(body) if body else {}), profile)


async def _admit(gateway: Gateway, call: Call, receive: Receive) -> None:
    """`proxy.forward`'s admission step for OCR: the model and the resolution's profile."""
    asked = await _read(gateway, call.scope, receive)
    principal, payload, profile = asked.principal, asked.payload, asked.profile
    call.payload, call.body = payload, orjson.dumps(payload)
    call.stream = payload.get("stream") is True
    call.writer.record.profile = profile
    call.exchange = gateway.requests.admit(call.writer.record, principal, OCR_SPEC, payload, call.stream,
                                           profile=profile)


class OcrEndpoint:
    """ASGI endpoint of `POST /api/ocr`. It has no `spec` attribute on purpose: `/api/jobs`
    must not take `/api/ocr` as a plain chat route (it would lose the model and resolution)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = gateway_of(scope)
        if respond_async(OCR_SPEC, scope):
            try:
                response = await _submit_job(gateway, scope, receive)
            except ClientGone:
                return
            echo = scope.get(ECHO_REQUEST_ID)
            if echo is not None:
                response.headers["x-request-id"] = echo.decode("latin-1")
            await response(scope, receive, send)
            return
        await forward(gateway, OCR_SPEC, scope, receive, send, admit=_admit)


async def _submit_job(gateway: Gateway, scope: Scope, receive: Receive) -> Response:
    """`Prefer: respond-async`: an async job of the OCR backend's chat route that keeps its
    resolution until it runs; answered 202 with seed 004's `request_id`, `status`, `resolution`.
    Errors are raised: this route is served by Starlette, whose handlers render them."""
    asked = await _read(gateway, scope, receive)
    route = OCR_SPEC.upstream_path or ""
    job = gateway.jobs.request(route, INFERENCE[route], asked.payload, profile=asked.profile)
    job_id = await submit_job(gateway, asked.principal, job)
    answer = {**accepted_json(job_id, job.stream_forced), "resolution": asked.profile}
    return json_response(answer, status=202, headers={"Location": f"{JOBS}/{job_id}",
                                                      "Preference-Applied": "respond-async"})


async def switch_resolution(request: Request) -> Response:
    """Seed 004: switch every OCR backend to `resolution` now (`graceful`: after its active requests)."""
    authorize(request, "admin")
    gateway = gateway_of(request)
    target = ocr_target(gateway.registry)
    asked = request.query_params.get("resolution")
    if not asked:
        raise InvalidInput(f"resolution is required (one of {', '.join(target.resolutions) or 'none'})")
    resolution = target.resolution(asked)
    assert resolution is not None
    graceful = _flag(request.query_params.get("graceful"), "graceful", default=True)
    stopped = []
    for backend in target.backends:
        managed = backend.config.managed
        if managed is None or resolution not in managed.profiles:
            continue
        await gateway.registry.switch_profile(backend.name, resolution, graceful)
        if not backend.healthy:
            stopped.append(backend.name)
    message = f"OCR now runs at resolution {resolution}"
    if stopped:
        message = f"OCR backend {', '.join(stopped)} is stopped: it starts at resolution {resolution}"
    return json_response({"status": "switched", "resolution": resolution, "message": message})


def _flag(value: str | None, name: str, *, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false")


def ocr_routes() -> list[BaseRoute]:
    return [
        Route("/api/ocr", OcrEndpoint(), methods=["POST"]),
        Route("/api/admin/ocr/resolution", switch_resolution, methods=["POST"]),
        Route("/admin/ocr/resolution", switch_resolution, methods=["POST"]),
    ]
