"""Building the ASGI app: the gateway's parts, wired once and kept on `app.state.gateway`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from .api.errors import ApiError, error_body, style_for_path
from .api.proxy import Proxy
from .api.routes import OllamaPrefix, all_routes, native_routes
from .auth.authenticator import Authenticator
from .auth.tokens_file import TokenFile
from .backends.registry import Registry
from .config import GatewayConfig
from .queue.scheduler import Scheduler

log = logging.getLogger("seadragon_gw")


@dataclass
class Gateway:
    """Everything a request may need; one per app, no globals."""

    config: GatewayConfig
    registry: Registry
    scheduler: Scheduler
    auth: Authenticator
    proxy: Proxy


def build_gateway(config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> Gateway:
    registry = Registry(config.backends)
    scheduler = Scheduler(registry.backends, config.queue, clock=clock)
    registry.on_change = scheduler.rebalance
    tokens_path = config.resolve_path(config.auth.tokens_file) if config.auth.tokens_file else None
    tokens = TokenFile(tokens_path, default_priority=config.auth.default_token_priority)
    auth = Authenticator(config.auth, tokens)
    proxy = Proxy(config, registry, scheduler, auth)
    return Gateway(config, registry, scheduler, auth, proxy)


def create_app(config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> Starlette:
    gateway = build_gateway(config, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.registry.start()
        gateway.scheduler.start()
        log.info("seadragon_gw ready: %d backend(s)", len(gateway.registry.backends))
        try:
            yield
        finally:
            await gateway.scheduler.stop()
            await gateway.registry.stop()

    routes = all_routes()
    routes.append(Route("/api/ollama{rest:path}", OllamaPrefix(Router(native_routes()))))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.gateway = gateway
    return app


def _render(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = error_body(style_for_path(request.url.path), status, message)
    return Response(body, status_code=status, headers=headers, media_type="application/json; charset=utf-8")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _render(request, exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return _render(request, exc.status_code, message, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
              exc_info=exc)
    return _render(request, 500, "internal error")
