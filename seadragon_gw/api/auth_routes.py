"""Account routes for the web chat: register, password login (OAuth2 form), refresh, logout.

Bodies are read within `MAX_ADMIN_BODY` before anything else happens; the accounts service
does the rest (throttling, bounded hashing, rotation) and raises what went wrong.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.accounts import Accounts
from ..auth.authenticator import bearer_token
from ..errors import InvalidInput
from .asgi import authorize, header_map
from .context import gateway_of
from .responses import json_response
from .validation import json_object, read_limited

NO_STORE = {"Cache-Control": "no-store"}


async def _fields(request: Request) -> dict[str, Any]:
    """OAuth2 password form (`username=..&password=..`) or a JSON object."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = await read_limited(request)
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return await json_object(request)


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
        gateway = gateway_of(request)
        address = gateway.auth.addresses.resolve(request.scope, header_map(request.scope))
        pair = await gateway.accounts.login(data.get("username"), data.get("password"), address)
    else:
        raise InvalidInput("grant_type: must be password or refresh_token")
    return json_response(pair.as_json(), headers=NO_STORE)


async def refresh(request: Request) -> Response:
    data = await _fields(request)
    pair = await _accounts(request).refresh(data.get("refresh_token"))
    return json_response(pair.as_json(), headers=NO_STORE)


async def logout(request: Request) -> Response:
    """Ends the session of the refresh token in the body, else of the Bearer access token."""
    data = await _fields(request)
    refresh_token = data.get("refresh_token")
    access_token = None if refresh_token is not None else bearer_token(header_map(request.scope))
    await _accounts(request).logout(refresh_token, access_token)
    return json_response({"logged_out": True}, headers=NO_STORE)


async def me(request: Request) -> Response:
    principal = authorize(request, "user")
    limits = gateway_of(request).limits.describe(principal)
    return json_response({"name": principal.name, "kind": principal.kind, "priority": principal.priority,
                          "is_admin": principal.is_admin, "limits": limits})


def auth_routes() -> list[Route]:
    return [
        Route("/auth/register", register, methods=["POST"]),
        Route("/auth/token", token, methods=["POST"]),
        Route("/auth/refresh", refresh, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/me", me, methods=["GET"]),
    ]
