"""The hot routes straight to their handler, everything else through Starlette.

Forwarded routes with a fixed path (`/api/chat`, `/v1/chat/completions`, ...) are most of the
traffic, and they need nothing from Starlette: they parse their own body and write their own
answers, errors included. A dict lookup sends them to their endpoint instead of Starlette's
middleware stack and its route-by-route regex scan (about a sixth of the gateway's CPU per
request in the performance issue's profile). The answer is the same either way: the endpoint
is the very `Forward` object the Starlette route holds, and the request id is echoed by the
writer (`ECHO_REQUEST_ID`) instead of the middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..errors import GatewayError
from ..records.record import request_id_from
from ..server.direct import drop_direct_body
from .context import ECHO_REQUEST_ID, REQUEST_ID_KEY, request_ids_of
from .errors import as_api_error, send_error
from .routes import Forward
from .show import Show

log = logging.getLogger("seadragon_gw")


class FastPath:
    """ASGI app: exact-path forwarded routes first, then the Starlette app."""

    def __init__(self, app: Starlette, *, exact_paths: bool = True) -> None:
        """`exact_paths=False` sends everything through Starlette: with CORS origins configured
        every answer needs the CORS middleware's headers, the forwarded routes' too."""
        self.app = app
        self._table: dict[str, tuple[frozenset[str], Forward | Show]] = {}
        for route in app.routes if exact_paths else ():
            if isinstance(route, Route) and isinstance(route.app, (Forward, Show)) and not route.param_convertors:
                self._table[route.path] = (frozenset(route.methods or ()), route.app)

    @property
    def state(self) -> Any:
        """The Starlette app's state (`app.state.gateway`), as if this were that app."""
        return self.app.state

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        """The coroutine of the route's own path, not one that awaits it: one coroutine frame
        less for each of the thousands of requests that may wait in the queue. (So the server
        must be told this is an ASGI 3 app: server/options.py.)"""
        if scope["type"] == "http":
            hit = self._table.get(scope["path"])
            if hit is not None and scope["method"] in hit[0]:
                return self._forward(hit[1], scope, receive, send)
        return self._starlette(scope, receive, send)

    async def _starlette(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            drop_direct_body(scope)

    def _forward(self, endpoint: Forward | Show, scope: Scope, receive: Receive, send: Send
                 ) -> Coroutine[Any, Any, None]:
        """What the middleware would have done (the request id), then the endpoint's own
        coroutine: `Forward`'s (`proxy.forward`) answers its errors and bugs itself, and frees
        the server's DirectBody, so it runs with no frame of this class above it for as long as
        the request waits in the queue. `Show` gets `_guarded`."""
        scope["app"] = self.app
        header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value
        request_id = scope[REQUEST_ID_KEY] = request_id_from(header, request_ids_of(scope))
        scope[ECHO_REQUEST_ID] = request_id.encode()
        if isinstance(endpoint, Forward):
            try:
                return endpoint(scope, receive, send)
            except GatewayError as exc:  # raised before its coroutine exists: the gateway is starting
                error = as_api_error(exc)
                return send_error(send, scope, error.status, error.message, scope[ECHO_REQUEST_ID], error.headers)
        return self._guarded(endpoint, scope, receive, send)

    async def _guarded(self, endpoint: Show, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await endpoint(scope, receive, send)
        except GatewayError as exc:  # before the writer exists (the gateway is starting)
            error = as_api_error(exc)
            await send_error(send, scope, error.status, error.message, scope[ECHO_REQUEST_ID], error.headers)
        except Exception as exc:  # a bug: answered and logged as Starlette's routes are
            handler = self.app.exception_handlers.get(Exception)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            try:
                await response(scope, receive, send)
            except RuntimeError:  # the answer had begun: uvicorn closes the connection
                log.debug("no error answer possible after the response started")
        finally:
            drop_direct_body(scope)
