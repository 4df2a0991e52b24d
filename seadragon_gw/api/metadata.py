"""Routes the gateway answers itself: health, version and merged model listings.

These bypass the queue: Roo calls /api/tags and /api/show before every chat turn, and they
must not wait behind inference.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .. import __version__
from ..model_names import model_key
from .asgi import authorize
from .errors import ApiError
from .responses import json_response


def _gateway(request: Request) -> Any:
    return request.app.state.gateway


async def root(request: Request) -> Response:
    authorize(request, "read")
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    authorize(request, "read")
    versions = [b.version for b in _gateway(request).registry.backends if b.healthy and b.version]
    return json_response({"version": versions[0] if versions else __version__})


async def tags(request: Request) -> Response:
    principal = authorize(request, "read")
    return json_response(_gateway(request).registry.ollama_tags(principal.allowed_models))


async def ps(request: Request) -> Response:
    authorize(request, "user")
    backends = [b for b in _gateway(request).registry.backends if b.kind == "ollama" and b.healthy]
    results = await asyncio.gather(*(b.upstream.get_json("/api/ps") for b in backends), return_exceptions=True)
    models: list[Any] = []
    for result in results:
        if isinstance(result, dict):
            models.extend(result.get("models") or [])
    return json_response({"models": models})


async def openai_models(request: Request) -> Response:
    principal = authorize(request, "user")
    return json_response(_gateway(request).registry.openai_models(principal.allowed_models))


async def openai_model(request: Request) -> Response:
    principal = authorize(request, "user")
    name = request.path_params["model"]
    model = _gateway(request).registry.openai_model(name)
    if model is None or not principal.may_use(model_key(name)):
        raise ApiError(404, f"model '{name}' not found")
    return json_response(model)


async def health(request: Request) -> Response:
    report = _gateway(request).registry.health()
    report["queued"] = _gateway(request).scheduler.waiting()
    report["version"] = __version__
    return json_response(report, status=200 if report["status"] == "ok" else 503)
