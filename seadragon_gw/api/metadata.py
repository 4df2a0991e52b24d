"""Routes the gateway answers itself: version and merged model listings (health is ops_routes').

These bypass the queue: Roo calls /api/tags and /api/show before every chat turn, and they
must not wait behind inference.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .. import __version__
from ..backends import listings
from ..errors import NotFound
from ..managed.ps import running_models
from ..model_names import model_key
from .asgi import authorize
from .context import gateway_of
from .responses import json_response


async def root(request: Request) -> Response:
    authorize(request, "read")
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    authorize(request, "read")
    versions = [b.version for b in gateway_of(request).registry.backends if b.healthy and b.version]
    return json_response({"version": versions[0] if versions else __version__})


async def tags(request: Request) -> Response:
    principal = authorize(request, "read")
    return json_response(listings.ollama_tags(gateway_of(request).registry.backends, principal.allowed_models))


async def ps(request: Request) -> Response:
    """What Ollama backends have loaded, and the running managed processes' models."""
    principal = authorize(request, "user")
    registry = gateway_of(request).registry
    backends = [b for b in registry.backends if b.kind == "ollama" and b.healthy and not b.managed]
    results = await asyncio.gather(*(b.upstream.get_json("/api/ps") for b in backends), return_exceptions=True)
    models: list[Any] = []
    for result in results:
        if isinstance(result, dict):
            models.extend(result.get("models") or [])
    models.extend(running_models(registry.backends, principal.allowed_models))
    return json_response({"models": models})


async def openai_models(request: Request) -> Response:
    principal = authorize(request, "user")
    return json_response(listings.openai_models(gateway_of(request).registry.backends, principal.allowed_models))


async def openai_model(request: Request) -> Response:
    principal = authorize(request, "user")
    name = request.path_params["model"]
    model = listings.openai_model(gateway_of(request).registry.backends, name)
    if model is None or not principal.may_use(model_key(name)):
        raise NotFound(f"model '{name}' not found")
    return json_response(model)

