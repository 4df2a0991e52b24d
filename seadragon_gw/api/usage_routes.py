"""The operations logs over HTTP (admin only): usage aggregates, crashes, missing models.

`/admin/crashes` and `/admin/missing-models` are seed 004's paths for the same answers.
`note_internal_error` is the 500 handlers' way into the crash log.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from ..gateway import Gateway
from ..usage.query import parse_limit, parse_usage_query
from ..usage.views import crash_json, missing_json, usage_json
from .asgi import authorize
from .context import gateway_of, request_id_of
from .responses import json_response

log = logging.getLogger("seadragon_gw.usage")


async def usage(request: Request) -> Response:
    authorize(request, "admin")
    query = parse_usage_query(request.query_params)
    groups = await gateway_of(request).logs.usage(query)
    return json_response(usage_json(query, groups))


async def crashes(request: Request) -> Response:
    authorize(request, "admin")
    rows = await gateway_of(request).logs.crashes(parse_limit(request.query_params))
    return json_response({"crashes": [crash_json(r) for r in rows]})


async def missing_models(request: Request) -> Response:
    authorize(request, "admin")
    entries = await gateway_of(request).logs.missing_models(parse_limit(request.query_params))
    return json_response({"missing_models": [missing_json(e) for e in entries]})


def note_internal_error(gateway: object, scope: Scope, exc: BaseException) -> None:
    """Put an unexpected exception in the crash log; never raises (it runs in the 500 handlers:
    the app's, and the forwarded routes' own in `proxy.forward`). `gateway`: the app state's,
    which is not one yet while the gateway starts."""
    try:
        if isinstance(gateway, Gateway):
            gateway.logs.internal_error(exc, request_id=request_id_of(scope) or None, route=scope["path"])
    except Exception:  # the crash log must not turn one error into two
        log.debug("could not note the internal error in the crash log", exc_info=True)


def usage_routes() -> list[BaseRoute]:
    get = ["GET"]
    return [
        Route("/api/admin/usage", usage, methods=get),
        Route("/api/admin/crashes", crashes, methods=get),
        Route("/admin/crashes", crashes, methods=get),
        Route("/api/admin/missing-models", missing_models, methods=get),
        Route("/admin/missing-models", missing_models, methods=get),
    ]
