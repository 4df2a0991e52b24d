"""The one typed way from a request to the gateway it belongs to."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Scope

from ..errors import Unavailable
from ..gateway import Gateway
from ..records.record import RequestIds

REQUEST_ID_KEY = "seadragon.request_id"
ECHO_REQUEST_ID = "seadragon.echo_request_id"
"""Scope key: the id as bytes when the handler's writer must put it in the head itself (the
fast path has no middleware to do it)."""


class GatewayApp(Starlette):
    """The gateway's Starlette app, with the running gateway as a plain attribute (set by the
    lifespan, as `state.gateway` is): it is looked up for every request, and through `state`
    that is a call of State's Python `__getattr__`."""

    gateway: Gateway | None = None


def gateway_of(where: Request | Scope) -> Gateway:
    """The running gateway (503 while it is still starting: the lifespan builds it)."""
    scope = where.scope if isinstance(where, Request) else where
    gateway = getattr(scope["app"], "gateway", None)
    if not isinstance(gateway, Gateway):
        raise Unavailable("the gateway is starting", retry_after_s=1)
    return gateway


def request_id_of(scope: Scope) -> str:
    """Set for every request by `RequestIdMiddleware`."""
    return str(scope.get(REQUEST_ID_KEY, ""))


def request_ids_of(scope: Scope) -> RequestIds | None:
    """The running gateway's id maker (None while it starts)."""
    gateway = getattr(scope["app"], "gateway", None)
    return gateway.recorder.ids if isinstance(gateway, Gateway) else None
