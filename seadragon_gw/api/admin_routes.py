"""The admin API: whitelist, registration tokens, API keys and users.

Every route needs an admin credential. Each change reloads the credential cache at once, so
a revoked key or a removed address is refused on the very next request.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.secrets_util import DISPLAY_PREFIX_LEN
from ..store.api_keys import ApiKey
from ..store.errors import Ambiguous, AlreadyExists
from ..store.registration_tokens import RegistrationToken
from ..store.users import User
from ..store.whitelist_repo import WhitelistEntry
from . import validation as v
from ..gateway import Gateway
from .asgi import authorize
from .context import gateway_of
from .errors import ApiError
from .responses import json_response


def _admin(request: Request) -> Gateway:
    authorize(request, "admin")
    return gateway_of(request)


def _expires_at(gw: Gateway, data: dict[str, Any]) -> float | None:
    """`expires_in_s` (optional, positive) as an absolute time on the gateway's clock."""
    ttl = v.number(data, "expires_in_s")
    return gw.clock() + ttl if ttl else None


def key_json(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "priority": key.priority,
            "created_at": key.created_at, "last_used": key.last_used, "is_active": key.is_active,
            "expires_at": key.expires_at, "allowed_models": list(key.allowed_models or []) or None,
            "rate_limit_per_min": key.rate_limit_per_min, "is_admin": key.is_admin}


def entry_json(entry: WhitelistEntry) -> dict[str, Any]:
    return {"id": entry.id, "ip": entry.network, "priority": entry.priority, "label": entry.label,
            "created_at": entry.created_at}


def token_json(token: RegistrationToken) -> dict[str, Any]:
    return {"id": token.id, "prefix": token.prefix, "is_admin": token.is_admin, "created_at": token.created_at,
            "expires_at": token.expires_at, "used_at": token.used_at, "used_by": token.used_by, "note": token.note}


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin, "is_active": user.is_active,
            "created_at": user.created_at, "last_login": user.last_login}


async def list_whitelist(request: Request) -> Response:
    gw = _admin(request)
    return json_response({"whitelist": [entry_json(e) for e in await gw.store.whitelist.list_all()]})


async def add_whitelist(request: Request) -> Response:
    gw = _admin(request)
    data = await v.json_body(request)
    v.reject_unknown(data, {"ip", "priority", "label"})
    ip = v.string(data, "ip", required=True)
    priority = v.integer(data, "priority", gw.config.auth.whitelist_priority, 0, 1000)
    label = v.string(data, "label", "") or ""
    try:
        entry = await gw.store.whitelist.add(ip, priority=priority, label=label)
    except ValueError as exc:
        raise ApiError(400, f"ip: {exc}") from None
    except AlreadyExists:
        raise ApiError(409, f"ip: {ip} is already whitelisted") from None
    await gw.credentials.reload()
    return json_response(entry_json(entry), status=201)


async def remove_whitelist(request: Request) -> Response:
    gw = _admin(request)
    ip = request.path_params["ip"]
    try:
        removed = await gw.store.whitelist.remove(ip)
    except ValueError as exc:
        raise ApiError(400, f"ip: {exc}") from None
    if not removed:
        raise ApiError(404, f"{ip} is not whitelisted")
    await gw.credentials.reload()
    return json_response({"removed": ip})


async def create_token(request: Request) -> Response:
    gw = _admin(request)
    data = await v.json_body(request)
    v.reject_unknown(data, {"expires_in_s", "is_admin", "note"})
    token, plaintext = await gw.store.registration_tokens.create(
        is_admin=v.boolean(data, "is_admin"), expires_at=_expires_at(gw, data),
        note=v.string(data, "note", "") or "")
    return json_response({**token_json(token), "token": plaintext}, status=201)


async def list_tokens(request: Request) -> Response:
    gw = _admin(request)
    return json_response({"tokens": [token_json(t) for t in await gw.store.registration_tokens.list_all()]})


async def create_key(request: Request) -> Response:
    gw = _admin(request)
    data = await v.json_body(request)
    v.reject_unknown(data, {"name", "priority", "expires_in_s", "allowed_models", "rate_limit_per_min", "is_admin"})
    key, plaintext = await gw.store.api_keys.create(
        v.string(data, "name", required=True),
        v.integer(data, "priority", 2, 0, 1000),
        expires_at=_expires_at(gw, data),
        allowed_models=v.string_list(data, "allowed_models"),
        rate_limit_per_min=v.integer(data, "rate_limit_per_min", None, 1, 10**6),
        is_admin=v.boolean(data, "is_admin"),
    )
    await gw.credentials.reload()
    return json_response({**key_json(key), "key": plaintext}, status=201)


async def list_keys(request: Request) -> Response:
    gw = _admin(request)
    return json_response({"apikeys": [key_json(k) for k in await gw.store.api_keys.list_all()]})


async def revoke_key(request: Request) -> Response:
    gw = _admin(request)
    ident = request.path_params["key"]
    if len(ident) > DISPLAY_PREFIX_LEN:
        # A full key in a URL ends up in access and proxy logs.
        raise ApiError(400, "key: give the key's id or its display prefix, never the key itself")
    try:
        key = await gw.store.api_keys.revoke(ident)
    except Ambiguous:
        raise ApiError(400, f"'{ident}' matches several keys; use the id") from None
    if key is None:
        raise ApiError(404, f"no API key '{ident}'")
    await gw.credentials.reload()
    return json_response(key_json(key))


async def list_users(request: Request) -> Response:
    gw = _admin(request)
    return json_response({"users": [user_json(u) for u in await gw.store.users.list_all()]})


async def set_user_active(request: Request) -> Response:
    gw = _admin(request)
    action = request.path_params["action"]
    if action not in ("activate", "deactivate"):
        raise ApiError(404, "not found")
    active = action == "activate"
    user = await gw.store.users.set_active(request.path_params["username"], active)
    if user is None:
        raise ApiError(404, f"no user '{request.path_params['username']}'")
    await gw.credentials.reload()
    return json_response(user_json(user))


def admin_routes() -> list[Route]:
    prefix = "/api/admin"
    return [
        Route(f"{prefix}/whitelist", list_whitelist, methods=["GET"]),
        Route(f"{prefix}/whitelist", add_whitelist, methods=["POST"]),
        Route(prefix + "/whitelist/{ip:path}", remove_whitelist, methods=["DELETE"]),
        Route(f"{prefix}/tokens", list_tokens, methods=["GET"]),
        Route(f"{prefix}/tokens", create_token, methods=["POST"]),
        Route(f"{prefix}/apikeys", list_keys, methods=["GET"]),
        Route(f"{prefix}/apikeys", create_key, methods=["POST"]),
        Route(prefix + "/apikeys/{key}", revoke_key, methods=["DELETE"]),
        Route(f"{prefix}/users", list_users, methods=["GET"]),
        Route(prefix + "/users/{username}/{action:str}", set_user_active, methods=["POST"]),
    ]
