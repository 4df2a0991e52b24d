"""Account routes for the web chat: register, password login (OAuth2 form), refresh."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.accounts import Accounts
from .asgi import authorize
from .context import gateway_of
from .errors import ApiError
from .responses import json_response
from .validation import MAX_ADMIN_BODY, json_body


async def _fields(request: Request) -> dict[str, Any]:
    """OAuth2 password form (`username=..&password=..`) or a JSON object."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = await request.body()
        if len(body) > MAX_ADMIN_BODY:
            raise ApiError(413, "request body too large")
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return await json_body(request)


def _accounts(request: Request) -> Accounts:
    return gateway_of(request).accounts


async def register(request: Request) -> Response:
    data = await _fields(request)
    user = await _accounts(request).register(
        data.get("username"), data.get("password"), data.get("registration_token"))
    return json_response({"username": user.username, "is_admin": user.is_admin}, status=201)


async def token(request: Request) -> Response:
    data = await _fields(request)
    grant = data.get("grant_type", "password")
    if grant == "refresh_token":
        pair = await _accounts(request).refresh(data.get("refresh_token"))
    elif grant == "password":
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise ApiError(400, "username and password are required")
        pair = await _accounts(request).login(username, password)
    else:
        raise ApiError(400, "grant_type: must be password or refresh_token")
    return json_response(pair.as_json(), headers={"Cache-Control": "no-store"})


async def refresh(request: Request) -> Response:
    data = await _fields(request)
    pair = await _accounts(request).refresh(data.get("refresh_token"))
    return json_response(pair.as_json(), headers={"Cache-Control": "no-store"})


async def me(request: Request) -> Response:
    principal = authorize(request, "user")
    return json_response({"name": principal.name, "kind": principal.kind, "priority": principal.priority,
                          "is_admin": principal.is_admin})


def auth_routes() -> list[Route]:
    return [
        Route("/auth/register", register, methods=["POST"]),
        Route("/auth/token", token, methods=["POST"]),
        Route("/auth/refresh", refresh, methods=["POST"]),
        Route("/auth/me", me, methods=["GET"]),
    ]
