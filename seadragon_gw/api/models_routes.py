"""Managed models and backends over HTTP (issue 9, seed 004): canonical under `/api/admin`,
seed 004's `/admin/models...` as aliases. Every route needs an admin credential; the work is
`admin/models.py`'s (the CLI and the SDK use it too): routes only read the query."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..admin.models import ModelsAdmin
from ..errors import InvalidInput
from .asgi import authorize
from .context import gateway_of
from .responses import json_response


def _models(request: Request) -> ModelsAdmin:
    authorize(request, "admin")
    return gateway_of(request).models


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {value!r}")


def _number(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {value!r}") from None


def _profile(request: Request) -> str | None:
    """`profile`, or seed 004's `resolution`."""
    value = request.query_params.get("profile") or request.query_params.get("resolution")
    return value or None


async def list_models(request: Request) -> Response:
    return json_response({"models": _models(request).models()})


async def list_backends(request: Request) -> Response:
    return json_response({"backends": _models(request).backends()})


async def start_model(request: Request) -> Response:
    models = _models(request)
    return json_response(await models.start(request.path_params["name"], _profile(request)))


async def stop_model(request: Request) -> Response:
    models = _models(request)
    return json_response(await models.stop(request.path_params["name"], _flag(request, "graceful", True)))


async def switch_profile(request: Request) -> Response:
    models = _models(request)
    profile = _profile(request)
    if profile is None:
        raise InvalidInput("profile is required (?profile=NAME)")
    return json_response(await models.switch(request.path_params["name"], profile,
                                             _flag(request, "graceful", True)))


async def model_logs(request: Request) -> Response:
    models = _models(request)
    return json_response(await models.logs(request.path_params["name"], _number(request, "lines", 100)))


def models_routes() -> list[Route]:
    routes = [Route("/api/admin/backends", list_backends, methods=["GET"])]
    for prefix in ("/api/admin/models", "/admin/models"):
        routes += [
            Route(prefix, list_models, methods=["GET"]),
            Route(prefix + "/{name}/start", start_model, methods=["POST"]),
            Route(prefix + "/{name}/stop", stop_model, methods=["POST"]),
            Route(prefix + "/{name}/profile", switch_profile, methods=["POST"]),
            Route(prefix + "/{name}/logs", model_logs, methods=["GET"]),
        ]
    return routes
