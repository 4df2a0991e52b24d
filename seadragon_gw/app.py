"""Building the ASGI app: the gateway's parts, wired once and kept on `app.state.gateway`."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from .api.admin_routes import admin_routes
from .api.auth_routes import auth_routes
from .api.errors import ApiError, as_api_error, error_body, style_for_path
from .api.proxy import Proxy
from .api.routes import OllamaPrefix, all_routes, native_routes
from .auth.accounts import Accounts
from .auth.authenticator import Authenticator
from .auth.credentials import CredentialCache
from .auth.jwt_tokens import JwtCodec
from .auth.passwords import PasswordHasher
from .auth.tokens_file import TokenFile
from .backends.registry import Registry
from .config import GatewayConfig
from .errors import GatewayError
from .queue.scheduler import Scheduler
from .store.bundle import Store
from .store.write_behind import LastUsedBatcher

log = logging.getLogger("seadragon_gw")
JWT_SECRET_ENV = "SEADRAGON_JWT_SECRET"


@dataclass
class Gateway:
    """Everything a request may need; one per app, no globals. The store-backed parts are
    filled in at start-up, inside the server's event loop."""

    config: GatewayConfig
    registry: Registry
    scheduler: Scheduler
    auth: Authenticator
    proxy: Proxy
    credentials: CredentialCache
    clock: Callable[[], float] = time.time
    store: Store | None = None
    accounts: Accounts | None = None
    last_used: LastUsedBatcher | None = field(default=None)
    password_hasher: PasswordHasher = field(default_factory=PasswordHasher)

    async def open_store(self) -> None:
        self.store = store = await Store.open(self.config.resolve_path(self.config.database), self.clock)
        await self.credentials.attach(store)
        self.last_used = LastUsedBatcher(store.api_keys.touch_many)
        self.last_used.start()
        self.auth.last_used = self.last_used
        secret = self.config.auth.jwt_secret or os.environ.get(JWT_SECRET_ENV) or \
            await store.settings.get_or_create_secret("jwt_secret", lambda: secrets.token_urlsafe(48))
        jwt = JwtCodec(secret, self.config.auth.jwt_access_ttl_s, self.config.auth.jwt_refresh_ttl_s, self.clock)
        self.auth.jwt = jwt
        self.accounts = Accounts(store, jwt, self.password_hasher, self.credentials.reload, self.clock)
        await self._announce_bootstrap()

    async def _announce_bootstrap(self) -> None:
        assert self.accounts is not None
        token = await self.accounts.create_bootstrap_token()
        if token is None:
            return
        # Printed, never logged: logs are kept and shipped, the console is the operator's.
        print(f"\n  No admin exists yet. Create one (valid 24 h, one use):\n"
              f"    curl -X POST http://HOST:PORT/auth/register -H 'Content-Type: application/json' \\\n"
              f"      -d '{{\"username\": \"admin\", \"password\": \"...\", \"registration_token\": \"{token}\"}}'\n"
              f"  or run: seadragon-gw admin create USERNAME\n", flush=True)
        log.warning("no admin user exists: a one-time admin registration token was printed to the console")

    async def close_store(self) -> None:
        await self.credentials.close()
        if self.last_used is not None:
            await self.last_used.close()
        if self.store is not None:
            await self.store.close()


def build_gateway(config: GatewayConfig, clock: Callable[[], float] = time.monotonic,
                  wall_clock: Callable[[], float] = time.time) -> Gateway:
    registry = Registry(config.backends)
    scheduler = Scheduler(registry.backends, config.queue, clock=clock)
    registry.on_change = scheduler.rebalance
    tokens_path = config.resolve_path(config.auth.tokens_file) if config.auth.tokens_file else None
    tokens = TokenFile(tokens_path, default_priority=config.auth.default_token_priority)
    credentials = CredentialCache()
    auth = Authenticator(config.auth, tokens, credentials, clock=wall_clock)
    proxy = Proxy(config, registry, scheduler, auth)
    return Gateway(config, registry, scheduler, auth, proxy, credentials, wall_clock)


def create_app(config: GatewayConfig, clock: Callable[[], float] = time.monotonic,
               wall_clock: Callable[[], float] = time.time) -> Starlette:
    gateway = build_gateway(config, clock, wall_clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.open_store()
        await gateway.registry.start()
        gateway.scheduler.start()
        log.info("seadragon_gw ready: %d backend(s)", len(gateway.registry.backends))
        try:
            yield
        finally:
            await gateway.scheduler.stop()
            await gateway.registry.stop()
            await gateway.close_store()

    routes = [*all_routes(), *auth_routes(), *admin_routes()]
    routes.append(Route("/api/ollama{rest:path}", OllamaPrefix(Router(native_routes()))))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.gateway = gateway
    return app


def _render(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = error_body(style_for_path(request.url.path), status, message)
    return Response(body, status_code=status, headers=headers, media_type="application/json; charset=utf-8")


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
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
              exc_info=exc)
    return _render(request, 500, "internal error")
