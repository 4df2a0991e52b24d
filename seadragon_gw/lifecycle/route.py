"""How one forwarded route is served: what it needs from the caller and from a backend."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Access = Literal["read", "user", "admin"]


@dataclass(frozen=True)
class RouteSpec:
    """`native`: an Ollama-API route (needs an Ollama backend; `stream` defaults to true).
    `queued`: waits in the model's aging queue for a slot (inference); else it goes straight
    to the least busy backend that has the model.
    `upstream_path`: the backend path when it differs from the request path.
    `model_field`: where the model name is in the body (None: the route names no model).
    `model_fields`: other body fields naming models a restricted credential must be allowed
    (copy's `destination`, create's `from`).
    `raw_body`: stream the request body through unread (blob uploads).
    `model_must_exist`: 404 for unknown models (false for pull/create, which make them).
    `changes_models`: re-read the backend's model list afterwards (pull, create, copy, delete).
    `streams`: the route may answer with a stream (false for embeddings and show, which never
    stream, so they never get early stream headers and always keep the backend's real status).
    """

    access: Access
    queued: bool
    native: bool
    upstream_path: str | None = None
    model_field: str | None = "model"
    model_fields: tuple[str, ...] = ()
    raw_body: bool = False
    model_must_exist: bool = True
    changes_models: bool = False
    streams: bool = True

    def at(self, upstream_path: str) -> RouteSpec:
        return replace(self, upstream_path=upstream_path)


NATIVE_INFERENCE = RouteSpec(access="user", queued=True, native=True)
OPENAI_INFERENCE = RouteSpec(access="user", queued=True, native=False)
NATIVE_EMBED = RouteSpec(access="user", queued=True, native=True, streams=False)
SHOW = RouteSpec(access="user", queued=False, native=True, streams=False)

INFERENCE: dict[str, RouteSpec] = {
    "/api/chat": NATIVE_INFERENCE,
    "/api/generate": NATIVE_INFERENCE,
    "/api/embed": NATIVE_EMBED,
    "/api/embeddings": NATIVE_EMBED,
    "/v1/chat/completions": OPENAI_INFERENCE,
    "/v1/completions": OPENAI_INFERENCE,
    "/v1/embeddings": OPENAI_INFERENCE,
}
"""The queued routes by path: what async jobs and the WebSocket may run."""
