"""Building the ASGI app: routes, error rendering, and the gateway opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from . import banner
from .api.admin_routes import admin_routes
from .api.auth_routes import auth_routes
from .api.context import GatewayApp, request_id_of
from .api.cors import cors_middleware
from .api.errors import ApiError, as_api_error, error_body, style_for_path
from .api.fastpath import FastPath
from .api.jobs_routes import jobs_routes
from .api.openapi import openapi_routes
from .api.ops_routes import ops_routes
from .api.passthrough_routes import passthrough_routes
from .api.request_id import RequestIdMiddleware
from .api.routes import OllamaPrefix, all_routes, native_routes
from .api.seed_routes import seed_routes
from .api.usage_routes import note_internal_error, usage_routes
from .api.web_routes import web_routes
from .api.ws import ws_routes
from .auth.passwords import PasswordHasher
from .config import GatewayConfig
from .errors import GatewayError
from .gateway import Clocks, Gateway
from .gc_pacing import GcPacer
from .ops.gc_metrics import GcCollector
from .store.errors import ReadOnlyDatabase

log = logging.getLogger("seadragon_gw")


def create_app(config: GatewayConfig, clocks: Clocks | None = None,
               hasher: PasswordHasher | None = None, gc_pacer: GcPacer | None = None) -> FastPath:
    """The app; its gateway is opened when the server starts it (lifespan) and is then
    `app.state.gateway`. `gc_pacer` is the process's (`seadragon-gw serve` makes it): started
    once the gateway runs, watched by `/metrics`, stopped before the gateway closes."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = await Gateway.open(config, clocks, hasher)
        app.state.gateway = gateway
        cast(GatewayApp, app).gateway = gateway  # what gateway_of reads
        try:
            await gateway.start()
            if gc_pacer is not None:
                gc_pacer.start(asyncio.get_running_loop(), gateway.scheduler.held)
                gateway.ops.metrics.registry.register(GcCollector(gc_pacer.stats))
            await _announce_bootstrap(gateway)
            yield
        finally:
            if gc_pacer is not None:
                gc_pacer.close()
            await gateway.close()

    routes = [*all_routes(), *auth_routes(), *admin_routes()]
    routes += ops_routes()  # issue 8: queue control, health, stats, /metrics
    routes += usage_routes()  # issue 8: usage log, crash log, missing models
    routes += jobs_routes()  # issue 8: async jobs, seed 003's tasks
    routes += [*ws_routes(), *seed_routes()]  # issue 8: /api/ws, seed 002's names without /api
    routes += web_routes()  # issue 10: /admin, /chat (GET; POST /chat is seed 002's), /web/*, overview
    routes += openapi_routes()  # issue 10: /openapi.json, /docs
    routes += passthrough_routes()  # issue 9: seed 003's images, speech, transcriptions
    routes.append(Route("/api/ollama{rest:path}", OllamaPrefix(Router(native_routes()))))
    return FastPath(GatewayApp(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware), *cors_middleware(config.server.cors_origins)],
        exception_handlers={ApiError: _api_error, GatewayError: _gateway_error, HTTPException: _http_error,
                            ClientDisconnect: _client_gone,
                            Exception: _unexpected},
    ), exact_paths=not config.server.cors_origins)  # CORS: every answer through the middleware


async def _announce_bootstrap(gateway: Gateway) -> None:
    try:
        token = await gateway.accounts.create_bootstrap_token()
    except ReadOnlyDatabase:
        return  # the store has said at ERROR that writes fail; no admin can be made now
    if token is None:
        return
    server = gateway.config.server  # `serve` puts the real --host/--port here
    # Printed, never logged: logs are kept and shipped, the console is the operator's.
    print(banner.bootstrap_admin(banner.base_url(server.host, server.port), token, banner.cli_command()),
          flush=True)
    log.warning("no admin user exists: a one-time admin registration token was printed to the console")


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left mid-body: nobody is left to answer and nothing failed here."""
    log.debug("client left during the body of %s %s", request.method, request.url.path)
    return Response(status_code=400)  # uvicorn drops writes after a disconnect


def _render(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = error_body(style_for_path(request.url.path), status, message)
    response = Response(body, status_code=status, headers=headers, media_type="application/json; charset=utf-8")
    return response


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _render(request, exc.status, exc.message, exc.headers)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    error = as_api_error(exc)
    return _render(request, error.status, error.message, error.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return _render(request, exc.status_code, message, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Runs outside the middleware stack (Starlette's ServerErrorMiddleware), so the request
    id header is added here."""
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
              exc_info=exc)
    note_internal_error(getattr(request.app.state, "gateway", None), request.scope, exc)
    response = _render(request, 500, "internal error")
    response.headers["x-request-id"] = request_id_of(request.scope)
    return response
