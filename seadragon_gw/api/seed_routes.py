"""Seed 002's endpoint names: `/generate`, `/chat`, `/embed` and `/tags` without the `/api`.

They are the very same routes as `/api/...` (same spec, same lifecycle, same error shape); the
backend is always sent the `/api/...` path, which is the only one Ollama knows.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from ..lifecycle.route import INFERENCE
from . import metadata
from .routes import Forward

_FORWARDED = ("/generate", "/chat", "/embed")


def seed_routes() -> list[BaseRoute]:
    forwarded: list[BaseRoute] = [
        Route(path, Forward(INFERENCE["/api" + path].at("/api" + path)), methods=["POST"]) for path in _FORWARDED
    ]
    return [*forwarded, Route("/tags", metadata.tags, methods=["GET", "HEAD"])]
