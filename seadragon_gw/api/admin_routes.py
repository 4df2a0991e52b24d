"""The admin API: whitelist, registration tokens, API keys and users, over HTTP.

Every route needs an admin credential; the work, its validation and its rules are the admin
service's (`admin/service.py`), which the CLI calls too. Routes only read the body (within
its limit), call the service and shape the answer; a failure is raised as the service's
error and rendered once by the app.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..admin.service import Actor, AdminService
from ..admin.views import entry_json, key_json, token_json, user_json
from ..errors import NotFound
from .asgi import authorize
from .context import gateway_of
from .responses import json_response
from .validation import json_object


def _admin(request: Request) -> tuple[AdminService, Actor]:
    principal = authorize(request, "admin")
    return gateway_of(request).admin, Actor.of(principal)


async def list_whitelist(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response({"whitelist": [entry_json(e) for e in await admin.list_whitelist()]})


async def add_whitelist(request: Request) -> Response:
    admin, actor = _admin(request)
    entry = await admin.add_whitelist(await json_object(request), actor)
    return json_response(entry_json(entry), status=201)


async def remove_whitelist(request: Request) -> Response:
    admin, actor = _admin(request)
    return json_response({"removed": await admin.remove_whitelist(request.path_params["ip"], actor)})


async def create_token(request: Request) -> Response:
    admin, actor = _admin(request)
    created = await admin.create_registration_token(await json_object(request), actor)
    return json_response({**token_json(created.token), "token": created.plaintext}, status=201)


async def list_tokens(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response({"tokens": [token_json(t) for t in await admin.list_registration_tokens()]})


async def create_key(request: Request) -> Response:
    admin, actor = _admin(request)
    created = await admin.create_key(await json_object(request), actor)
    return json_response({**key_json(created.key), "key": created.plaintext}, status=201)


async def list_keys(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response({"apikeys": [key_json(k) for k in await admin.list_keys()]})


async def revoke_key(request: Request) -> Response:
    admin, actor = _admin(request)
    return json_response(key_json(await admin.revoke_key(request.path_params["key"], actor)))


async def list_users(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response({"users": [user_json(u) for u in await admin.list_users()]})


async def set_user_active(request: Request) -> Response:
    admin, actor = _admin(request)
    action = request.path_params["action"]
    if action not in ("activate", "deactivate"):
        raise NotFound("not found")
    user = await admin.set_user_active(request.path_params["username"], action == "activate", actor)
    return json_response(user_json(user))


async def change_user(request: Request) -> Response:
    admin, actor = _admin(request)
    user = await admin.change_user(request.path_params["username"], await json_object(request), actor)
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
        Route(prefix + "/users/{username}", change_user, methods=["PATCH"]),
        Route(prefix + "/users/{username}/{action:str}", set_user_active, methods=["POST"]),
    ]
