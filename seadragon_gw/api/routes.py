"""The route table: where every request goes."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..lifecycle.route import INFERENCE, RouteSpec
from . import metadata
from .context import gateway_of
from .models_routes import models_routes
from .ocr_routes import ocr_routes
from .proxy import forward
from .show import Show


def _admin(model_field: str | None = "model", *, must_exist: bool = True, changes: bool = True,
           raw: bool = False, also: tuple[str, ...] = ()) -> RouteSpec:
    return RouteSpec(access="admin", queued=False, native=True, model_field=model_field, model_fields=also,
                     model_must_exist=must_exist, changes_models=changes, raw_body=raw)


class Forward:
    """ASGI endpoint for a forwarded route; all of them share `proxy.forward`."""

    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        """`forward`'s coroutine itself, not one that awaits it: one coroutine frame less for
        each of the thousands of requests that may wait in the queue."""
        return forward(gateway_of(scope), self.spec, scope, receive, send)


def _forward(path: str, spec: RouteSpec, methods: list[str], upstream: str | None = None) -> Route:
    return Route(path, Forward(spec if upstream is None else spec.at(upstream)), methods=methods)


def native_routes() -> list[BaseRoute]:
    """The Ollama API; also served under /api/ollama."""
    post = ["POST"]
    return [
        Route("/", metadata.root, methods=["GET", "HEAD"]),
        Route("/api/version", metadata.version, methods=["GET", "HEAD"]),
        Route("/api/tags", metadata.tags, methods=["GET", "HEAD"]),
        Route("/api/ps", metadata.ps, methods=["GET"]),
        Route("/api/show", Show(), methods=post),
        *(_forward(path, INFERENCE[path], post) for path in ("/api/chat", "/api/generate", "/api/embed",
                                                              "/api/embeddings")),
        _forward("/api/pull", _admin(must_exist=False), post),
        _forward("/api/push", _admin(changes=False), post),
        _forward("/api/create", _admin(must_exist=False, also=("from",)), post),
        _forward("/api/copy", _admin("source", also=("destination",)), post),
        _forward("/api/delete", _admin(), ["DELETE"]),
        _forward("/api/blobs/{digest}", _admin(None, changes=False, raw=True), ["HEAD", "POST"]),
    ]


def openai_routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        *(_forward(path, INFERENCE[path], post) for path in ("/v1/chat/completions", "/v1/completions",
                                                              "/v1/embeddings")),
        Route("/v1/models", metadata.openai_models, methods=["GET"]),
        Route("/v1/models/{model:path}", metadata.openai_model, methods=["GET"]),
        _forward("/api/chat/completions", INFERENCE["/v1/chat/completions"], post, upstream="/v1/chat/completions"),
        _forward("/api/completions", INFERENCE["/v1/completions"], post, upstream="/v1/completions"),
        Route("/api/models", metadata.openai_models, methods=["GET"]),
    ]


class OllamaPrefix:
    """`/api/ollama/<native path>` serves the native API under a prefix (`/api/ollama/api/chat`;
    `/api/ollama/chat` works too), so clients can use `http://gw/api/ollama` as their host."""

    def __init__(self, router_app: ASGIApp) -> None:
        self.router_app = router_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rest = scope["path"][len("/api/ollama"):] or "/"
        if rest != "/" and not rest.startswith("/api/"):
            rest = "/api" + rest
        inner = {**scope, "path": rest, "raw_path": rest.encode(), "root_path": ""}
        await self.router_app(inner, receive, send)


def all_routes() -> list[BaseRoute]:
    return [
        *native_routes(),
        *openai_routes(),
        *ocr_routes(),  # issue 9: POST /api/ocr, seed 004's OCR resolution switch
        *models_routes(),  # issue 9: /api/admin/models (start, stop, profile, logs), /api/admin/backends
    ]
