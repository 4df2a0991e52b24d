"""Queue control, health, statistics and Prometheus metrics over HTTP.

The figures and the clearing are `ops/`'s; these routes check who may see what, read the
few inputs, and shape nothing beyond choosing the detail. Health answers without a
credential (load balancers send none), but only the status: backend names, URLs and errors
need one unless `health.detail: public`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidInput, NotFound
from ..model_names import model_key
from ..ops.metrics import CONTENT_TYPE
from ..queue.errors import CLEARED_MESSAGE
from .asgi import authorize, header_map
from .context import gateway_of
from .responses import json_response
from .validation import json_object


async def queue_status(request: Request) -> Response:
    principal = authorize(request, "user")
    return json_response(gateway_of(request).ops.queue.status(principal))


async def queue_clear(request: Request) -> Response:
    """`POST /api/queue/clear`, with an optional `model` in the JSON body or the query."""
    principal = authorize(request, "admin")
    body = await json_object(request)
    name = _model_name(body.get("model", request.query_params.get("model")))
    gateway = gateway_of(request)
    key = model_key(name) if name else None
    cleared = gateway.ops.queue.clear(name, key, principal)
    # async jobs not yet in the scheduler's queue (beyond jobs.admit_window) are waiting too
    cleared += await gateway.jobs.runner.clear(key, CLEARED_MESSAGE)
    return json_response({"cleared": cleared, "model": name})


def _model_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("model must be a non-empty string (leave it out to clear every queue)")
    return value


async def queue_detail(request: Request) -> Response:
    authorize(request, "admin")
    name = request.path_params["model"]
    return json_response(gateway_of(request).ops.queue.model_detail(name, model_key(name)))


async def admin_stats(request: Request) -> Response:
    authorize(request, "admin")
    return json_response(gateway_of(request).ops.queue.stats())


async def metrics(request: Request) -> Response:
    config = gateway_of(request).config.metrics
    if not config.enabled:
        raise NotFound("metrics are off (metrics.enabled: false)")
    if not config.public:
        authorize(request, "admin")
    return Response(gateway_of(request).ops.metrics.render(), media_type=CONTENT_TYPE)


async def health(request: Request) -> Response:
    """200 while anything can serve (healthy or degraded), 503 when nothing can."""
    detail = _health_detail(request)
    report = await gateway_of(request).ops.health.report()
    return json_response(report.as_json(detail), status=200 if report.serving else 503)


def _health_detail(request: Request) -> bool:
    """Detail for any credential (an invalid one is still 401), or for everyone if public."""
    gateway = gateway_of(request)
    if gateway.config.health.detail == "public":
        return True
    return gateway.auth.identify(request.scope, header_map(request.scope)) is not None


def ops_routes() -> list[BaseRoute]:
    return [
        Route("/api/queue/status", queue_status, methods=["GET"]),
        Route("/api/queue/clear", queue_clear, methods=["POST"]),
        Route("/api/admin/queue/{model:path}", queue_detail, methods=["GET"]),
        Route("/admin/queue/{model:path}", queue_detail, methods=["GET"]),
        Route("/api/admin/stats", admin_stats, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(Route(path, health, methods=["GET"]) for path in ("/health", "/api/health", "/api/v1/health")),
    ]
