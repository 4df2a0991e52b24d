"""`GET /openapi.json` and `GET /docs` (Swagger UI, packaged: works offline).

The spec is built from one declarative table of operations (`operations()`): method, path,
who may call it, the named request and answer schemas (`openapi_schemas.py`) and whether it
waits in the queue. The builder derives the rest the same way for every operation (path
parameters, the error answers each kind of route can give in its route's error shape, the
security requirement), so a new route is one line here, and `tests/test_openapi.py` fails on
any route of the app the table lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..errors import NotFound
from .errors import style_for_path
from .openapi_schemas import ANY_OBJECT, INT, STRING, Schema, ref, schemas

Access = Literal["public", "read", "user", "admin"]
JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
TEXT = "text/plain"
OLLAMA_PREFIX = "/api/ollama"
ADMIN: Access = "admin"


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: Schema | None = None  # a string when None
    required: bool = False


@dataclass(frozen=True)
class Op:
    """One operation: what the builder needs to describe it completely."""

    method: str
    path: str
    summary: str
    tag: str
    access: Access = "user"
    body: str | None = None  # request schema name (JSON)
    answer: str | None = None  # answer schema name; None: `media`'s plain content
    status: int = 200
    media: tuple[str, ...] = (JSON,)
    query: tuple[Param, ...] = ()
    form: bool = False  # the body may also be an OAuth2 form
    upload: bool = False  # the body is multipart/form-data (a file upload)
    queued: bool = False  # waits in a model's queue (429/502/503/504, unknown model 404)
    native: bool = False  # also served under /api/ollama
    header_params: tuple[str, ...] = ()


_LIMIT = Param("limit", "at most this many, newest first", {"type": "integer", "minimum": 1})
_INFERENCE_HEADERS = ("X-Client-ID", "X-Priority", "Prefer")


def _inference(path: str, summary: str, tag: str, body: str, answer: str, stream: str | None,
               native: bool = False) -> Op:
    media = (JSON,) if stream is None else (JSON, stream)
    return Op("POST", path, summary, tag, "user", body, answer, media=media, queued=True, native=native,
              header_params=_INFERENCE_HEADERS)


def _ollama_ops() -> list[Op]:
    tag = "Ollama"
    return [
        Op("GET", "/", "Ollama's liveness line (\"Ollama is running\")", tag, "read", media=(TEXT,), native=True),
        Op("HEAD", "/", "Ollama's liveness check", tag, "read", media=(), native=True),
        Op("GET", "/api/version", "Version of the backends (else the gateway's)", tag, "read", answer="Version",
           native=True),
        Op("HEAD", "/api/version", "Version check", tag, "read", media=(), native=True),
        Op("GET", "/api/tags", "Models of every backend, merged", tag, "read", answer="Tags", native=True),
        Op("HEAD", "/api/tags", "Model listing check", tag, "read", media=(), native=True),
        Op("GET", "/api/ps", "Models loaded in Ollama backends", tag, answer="RunningModels", native=True),
        Op("POST", "/api/show", "Model details", tag, body="ShowRequest", answer="ShowResponse", native=True),
        _inference("/api/chat", "Chat (NDJSON stream by default)", tag, "ChatRequest", "ChatResponse", NDJSON, True),
        _inference("/api/generate", "Generate (NDJSON stream by default)", tag, "GenerateRequest",
                   "GenerateResponse", NDJSON, True),
        _inference("/api/embed", "Embeddings", tag, "EmbedRequest", "EmbedResponse", None, True),
        _inference("/api/embeddings", "Embeddings (legacy)", tag, "EmbeddingsRequest", "EmbeddingsResponse", None,
                   True),
        Op("POST", "/api/pull", "Pull a model (admin)", tag, "admin", "ModelOperation", "Status",
           media=(JSON, NDJSON), native=True),
        Op("POST", "/api/push", "Push a model (admin)", tag, "admin", "ModelOperation", "Status",
           media=(JSON, NDJSON), native=True),
        Op("POST", "/api/create", "Create a model (admin)", tag, "admin", "ModelOperation", "Status",
           media=(JSON, NDJSON), native=True),
        Op("POST", "/api/copy", "Copy a model (admin)", tag, "admin", "CopyRequest", media=(), native=True),
        Op("DELETE", "/api/delete", "Delete a model (admin)", tag, "admin", "ModelOperation", media=(), native=True),
        Op("HEAD", "/api/blobs/{digest}", "Whether a blob exists (admin)", tag, "admin", media=(), native=True),
        Op("POST", "/api/blobs/{digest}", "Upload a blob (admin; raw body)", tag, "admin", status=201, media=(),
           native=True),
    ]


def _openai_ops() -> list[Op]:
    tag = "OpenAI"
    chat = ("ChatCompletionRequest", "ChatCompletion")
    completion = ("CompletionRequest", "Completion")
    return [
        _inference("/v1/chat/completions", "Chat completion (SSE with stream: true)", tag, *chat, SSE),
        _inference("/v1/completions", "Completion (SSE with stream: true)", tag, *completion, SSE),
        _inference("/v1/embeddings", "Embeddings", tag, "OpenAIEmbeddingsRequest", "EmbeddingList", None),
        Op("GET", "/v1/models", "Models", tag, answer="ModelList"),
        Op("GET", "/v1/models/{model}", "One model", tag, answer="Model"),
        _inference("/api/chat/completions", "Alias of /v1/chat/completions", tag, *chat, SSE),
        _inference("/api/completions", "Alias of /v1/completions", tag, *completion, SSE),
        Op("GET", "/api/models", "Alias of /v1/models", tag, answer="ModelList"),
    ]


def _auth_ops() -> list[Op]:
    tag = "Auth"
    return [
        Op("POST", "/auth/register", "Register with a registration token", tag, "public", "RegisterRequest",
           "RegisteredUser", 201, form=True),
        Op("POST", "/auth/token", "Log in (OAuth2 password form) or refresh", tag, "public", "TokenRequest",
           "TokenPair", form=True),
        Op("POST", "/auth/refresh", "A new token pair for a refresh token (the old one ends)", tag, "public",
           "RefreshRequest", "TokenPair", form=True),
        Op("POST", "/auth/logout", "End a session", tag, "public", "LogoutRequest", "LoggedOut", form=True),
        Op("GET", "/auth/me", "Who the credential is, and its limits", tag, answer="Me"),
    ]


def _admin_ops() -> list[Op]:
    tag, admin = "Admin", ADMIN
    p = "/api/admin"
    return [
        Op("GET", f"{p}/whitelist", "Whitelisted addresses", tag, admin, answer="WhitelistList"),
        Op("POST", f"{p}/whitelist", "Whitelist an address or network", tag, admin, "WhitelistCreate",
           "WhitelistEntry", 201),
        Op("DELETE", p + "/whitelist/{ip}", "Remove a whitelist entry", tag, admin, answer="Removed"),
        Op("GET", f"{p}/tokens", "Registration tokens", tag, admin, answer="RegistrationTokenList"),
        Op("POST", f"{p}/tokens", "Create a registration token (shown once)", tag, admin, "RegistrationTokenCreate",
           "RegistrationTokenCreated", 201),
        Op("GET", f"{p}/apikeys", "API keys", tag, admin, answer="ApiKeyList"),
        Op("POST", f"{p}/apikeys", "Create an API key (shown once)", tag, admin, "ApiKeyCreate", "ApiKeyCreated",
           201),
        Op("DELETE", p + "/apikeys/{key}", "Revoke an API key (by id or display prefix)", tag, admin,
           answer="ApiKey"),
        Op("GET", f"{p}/users", "Users", tag, admin, answer="UserList"),
        Op("PATCH", p + "/users/{username}", "Change a user's tier", tag, admin, "UserChange", "User"),
        Op("POST", p + "/users/{username}/{action}", "Activate or deactivate a user (action: activate|deactivate)",
           tag, admin, answer="User"),
    ]


def _ops_ops() -> list[Op]:
    tag, admin = "Queue and operations", ADMIN
    usage_query = (
        Param("since", "ISO 8601 or epoch seconds"), Param("until", "ISO 8601 or epoch seconds (exclusive)"),
        Param("client", "X-Client-ID or credential (token:alice)"), Param("model", "a model name"),
        Param("group_by", "how to group", {"type": "string", "enum": ["client", "model", "day", "credential"]}))
    return [
        Op("GET", "/api/queue/status", "Load per model and your waiting requests", tag, answer="QueueStatus"),
        Op("POST", "/api/queue/clear", "Answer every waiting request (of one model) at once", tag, admin,
           "QueueClear", "QueueCleared", query=(Param("model", "only this model's queue"),)),
        *(Op("GET", base + "/queue/{model}", "One model's queue and waits", tag, admin, answer="ModelQueue")
          for base in ("/api/admin", "/admin")),
        Op("GET", "/api/admin/stats", "Queue length, active requests, rates and waits", tag, admin, answer="Stats"),
        Op("GET", "/metrics", "Prometheus metrics (admin unless metrics.public)", tag, admin, media=(TEXT,)),
        *(Op("GET", path, "healthy, degraded (200) or unhealthy (503)", tag, "public", answer="Health")
          for path in ("/health", "/api/health", "/api/v1/health")),
        Op("GET", "/api/admin/usage", "Usage aggregates", tag, admin, answer="Usage", query=usage_query),
        *(Op("GET", path, "Crash log, newest first", tag, admin, answer="Crashes", query=(_LIMIT,))
          for path in ("/api/admin/crashes", "/admin/crashes")),
        *(Op("GET", path, "Requests for models no backend serves", tag, admin, answer="MissingModels",
             query=(_LIMIT,)) for path in ("/api/admin/missing-models", "/admin/missing-models")),
    ]


def _jobs_ops() -> list[Op]:
    tag = "Jobs"
    listing = (Param("status", "only jobs in this status"), _LIMIT, Param("all", "admins: everyone's (1)"))
    return [
        Op("POST", "/api/jobs", "Submit an async job", tag, body="JobSubmit", answer="JobAccepted", status=202),
        Op("GET", "/api/jobs", "Your jobs, newest first", tag, answer="JobList", query=listing),
        Op("GET", "/api/jobs/{job_id}", "A job and its result", tag, answer="Job"),
        Op("DELETE", "/api/jobs/{job_id}", "Cancel a job", tag, answer="Job"),
        Op("POST", "/api/v1/inference/text-generation", "Seed 003: a generate job", tag,
           body="TextGenerationRequest", answer="Task", status=202),
        Op("GET", "/api/v1/tasks/{task_id}", "Seed 003: a task", tag, answer="Task"),
        Op("DELETE", "/api/v1/tasks/{task_id}", "Seed 003: cancel a task", tag, answer="Task"),
        Op("GET", "/api/ws", "WebSocket for inference (upgrade; see the README)", tag, "public", status=101,
           media=()),
    ]


def _seed_ops() -> list[Op]:
    tag = "Seed compatibility"
    return [
        _inference("/chat", "Seed 002: /api/chat", tag, "ChatRequest", "ChatResponse", NDJSON),
        _inference("/generate", "Seed 002: /api/generate", tag, "GenerateRequest", "GenerateResponse", NDJSON),
        _inference("/embed", "Seed 002: /api/embed", tag, "EmbedRequest", "EmbedResponse", None),
        Op("GET", "/tags", "Seed 002: /api/tags", tag, "read", answer="Tags"),
    ]


def _docs_ops() -> list[Op]:
    tag = "Docs"
    return [
        Op("GET", "/openapi.json", "This OpenAPI document", tag, "public", answer="OpenAPIDocument"),
        Op("GET", "/docs", "Swagger UI", tag, "public", media=("text/html",)),
        Op("GET", "/docs/{asset}", "Swagger UI's files", tag, "public", media=("text/css", "text/javascript")),
    ]


def _managed_ops() -> list[Op]:
    tag, admin = "Managed models", ADMIN
    graceful = Param("graceful", "let active requests finish first (default true)", {"type": "boolean"})
    profile = Param("profile", "a profile of the backend (seed 004: resolution)")
    ops = [Op("GET", "/api/admin/backends", "Every backend: health, load, totals, last error", tag, admin,
              answer="BackendList")]
    for base in ("/api/admin/models", "/admin/models"):
        ops += [
            Op("GET", base, "Managed backends with status, profile, pid, uptime", tag, admin, answer="ManagedList"),
            Op("POST", base + "/{name}/start", "Start a managed backend (waits until it serves)", tag, admin,
               answer="ModelAction", query=(profile, Param("resolution", "seed 004's name for profile"))),
            Op("POST", base + "/{name}/stop", "Stop a managed backend", tag, admin, answer="ModelAction",
               query=(graceful,)),
            Op("POST", base + "/{name}/profile", "Switch a managed backend's profile", tag, admin,
               answer="ModelAction", query=(Param("profile", "the profile to run", required=False),
                                            Param("resolution", "seed 004's name for profile"), graceful)),
            Op("GET", base + "/{name}/logs", "The process's recent output", tag, admin, answer="ModelLogs",
               query=(Param("lines", "how many (1-10000)", {"type": "integer", "minimum": 1}),)),
        ]
    return ops


def _ocr_ops() -> list[Op]:
    tag, admin = "OCR", ADMIN
    resolution = Param("resolution", "one of the OCR backend's profiles", required=True)
    return [
        Op("POST", "/api/ocr", "OCR: an OpenAI chat body with image_url parts (X-Resolution picks the profile)",
           tag, body="ChatCompletionRequest", answer="ChatCompletion", media=(JSON, SSE), queued=True,
           header_params=(*_INFERENCE_HEADERS, "X-Resolution")),
        *(Op("POST", path, "Switch every OCR backend to a resolution", tag, admin, answer="ModelAction",
             query=(resolution, Param("graceful", "after active requests (default true)", {"type": "boolean"})))
          for path in ("/api/admin/ocr/resolution", "/admin/ocr/resolution")),
    ]


def _passthrough_ops() -> list[Op]:
    """OpenAI routes the gateway forwards as they are (queued like inference)."""
    tag, headers = "OpenAI", _INFERENCE_HEADERS
    return [
        Op("POST", "/v1/images/generations", "Image generation (passed through)", tag, body="PassthroughBody",
           answer="PassthroughBody", queued=True, header_params=headers),
        Op("POST", "/v1/audio/speech", "Text to speech (passed through; audio answer)", tag, body="PassthroughBody",
           media=("application/octet-stream",), queued=True, header_params=headers),
        *(Op("POST", f"/v1/audio/{kind}", f"Audio {kind} (multipart upload, passed through)", tag,
             answer="PassthroughBody", upload=True, queued=True, header_params=headers)
          for kind in ("transcriptions", "translations")),
    ]


def _web_ops() -> list[Op]:
    tag = "Web pages"
    return [
        Op("GET", "/admin", "The admin page", tag, "public", media=("text/html",)),
        Op("GET", "/chat", "The web chat page (POST /chat is seed 002's chat)", tag, "public", media=("text/html",)),
        Op("GET", "/web/{path}", "The pages' files", tag, "public", media=("text/css", "text/javascript")),
        Op("GET", "/api/admin/overview", "What the admin page's overview shows", tag, "admin", answer="Overview"),
    ]


def operations() -> list[Op]:
    """Every operation of the API, in the order the docs show them."""
    return [*_ollama_ops(), *_openai_ops(), *_auth_ops(), *_admin_ops(), *_ops_ops(), *_jobs_ops(),
            *_seed_ops(), *_docs_ops(), *_web_ops(), *_managed_ops(), *_ocr_ops(),
            *_passthrough_ops()]


# -- building the document ----------------------------------------------------------------
_ERRORS = {400: "invalid input", 401: "no or an invalid credential", 403: "not allowed for this credential",
           404: "not found", 409: "conflicts with the current state", 413: "body too large",
           429: "rate limit, quota or login throttle (Retry-After)", 502: "the backend failed",
           503: "queue full, cleared, shutting down or the database read-only (Retry-After)",
           504: "waited longer than queue.timeout_s"}
_PARAM = re.compile(r"{([^}]+)}")


def _error_statuses(op: Op) -> list[int]:
    codes: set[int] = set()
    if op.body is not None or op.method in ("POST", "PATCH", "DELETE"):
        codes |= {400, 413}
    if op.access != "public":
        codes.add(401)
    if op.access == "admin":
        codes.add(403)
    if op.access == "user" and op.queued:
        codes.add(403)  # a model-restricted key asking for another model
    if _PARAM.search(op.path) or op.queued or op.method in ("DELETE", "PATCH"):
        codes.add(404)
    if op.method in ("POST", "PATCH") and op.access == "admin":
        codes.add(409)
    if op.queued or op.path.startswith("/auth/"):
        codes.add(429)
    if op.queued:
        codes |= {502, 504}
    codes.add(503)  # the gateway starting or shutting down, the database read-only
    return sorted(codes)


def _content(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for media in op.media:
        if op.answer is not None and media in (JSON, NDJSON):
            out[media] = {"schema": ref(op.answer)}
        elif media == SSE:
            out[media] = {"schema": STRING}
        else:
            out[media] = {"schema": STRING}
    return out


def _responses(op: Op) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    content = _content(op)
    if content:
        success["content"] = content
    responses: dict[str, Any] = {str(op.status): success}
    if op.queued:
        responses["202"] = {"description": "Prefer: respond-async: the job that will answer it",
                            "content": {JSON: {"schema": ref("JobAccepted")}}}
    error_schema = ref("OpenAIError" if style_for_path(op.path) == "openai" else "Error")
    for code in _error_statuses(op):
        responses[str(code)] = {"description": _ERRORS[code], "content": {JSON: {"schema": error_schema}}}
    if op.path in ("/health", "/api/health", "/api/v1/health"):
        either = {"anyOf": [ref("Health"), error_schema]}  # the report, or the gateway not started yet
        responses["503"] = {"description": "unhealthy: nothing can serve", "content": {JSON: {"schema": either}}}
    return responses


def _parameters(op: Op) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": STRING} for name in _PARAM.findall(op.path)]
    params += [{"name": q.name, "in": "query", "required": q.required, "description": q.description,
                "schema": q.schema or STRING} for q in op.query]
    header_docs = {"X-Client-ID": ("Your client's name in usage and queue views", STRING),
                   "X-Priority": ("Ask for a lower priority than your credential's (a higher number)", INT),
                   "Prefer": ("respond-async: answer 202 with a job instead", STRING),
                   "X-Resolution": ("the OCR profile this request needs", STRING)}
    for name in op.header_params:
        description, schema = header_docs[name]
        params.append({"name": name, "in": "header", "required": False, "description": description,
                       "schema": schema})
    return params


_SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    "public": [],
    "read": [{}, {"bearer": []}, {"apiKey": []}],
    "user": [{"bearer": []}, {"apiKey": []}],
    "admin": [{"bearer": []}, {"apiKey": []}],
}


def _operation(op: Op, path: str, tag: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(op.method, path), "summary": op.summary, "tags": [tag],
        "security": _SECURITY[op.access], "responses": _responses(op)}
    params = _parameters(op)
    if params:
        operation["parameters"] = params
    if op.body is not None:
        content: dict[str, Any] = {JSON: {"schema": ref(op.body)}}
        if op.form:
            content["application/x-www-form-urlencoded"] = {"schema": ref(op.body)}
        operation["requestBody"] = {"required": op.method != "DELETE", "content": content}
    if op.upload:
        upload = {"type": "object", "properties": {"file": {"type": "string", "contentEncoding": "binary"},
                                                   "model": STRING}, "required": ["file"]}
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": upload}}}
    if op.access == "admin":
        operation["description"] = "Needs an admin credential."
    return operation


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    return f"{method.lower()}_{words}"


def _security_schemes() -> dict[str, Any]:
    return {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "A tokens.json token, an API key, or the access token from POST /auth/token. "
                                  "Whitelisted addresses need no credential."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key"},
    }


def build_spec(ops: list[Op] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `ops` (all of them by default)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in ops if ops is not None else operations():
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, op.path, op.tag)
        if op.native:
            prefixed = OLLAMA_PREFIX + op.path
            paths.setdefault(prefixed, {})[op.method.lower()] = _operation(op, prefixed, "Ollama under /api/ollama")
    named = {**schemas(), "OpenAPIDocument": ANY_OBJECT, "Overview": ANY_OBJECT, "PassthroughBody": ANY_OBJECT}
    components = {"schemas": named, "securitySchemes": _security_schemes()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "seadragon_gw", "version": __version__,
                 "description": "A self-hosted LLM gateway: the Ollama and OpenAI APIs behind authentication "
                                "and an aging priority queue. Native routes answer errors as {\"error\": \"...\"}, "
                                "OpenAI-style routes as {\"error\": {\"message\", \"type\", ...}}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": components,
        "security": [{"bearer": []}, {"apiKey": []}],
    }


# -- serving it ---------------------------------------------------------------------------
_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
           "swagger-init.js": "text/javascript; charset=utf-8"}
_CACHE = {"Cache-Control": "public, max-age=86400"}


class Docs:
    """The spec (built once, on first request) and Swagger UI's packaged files."""

    def __init__(self) -> None:
        self._spec: bytes | None = None
        self._files = resources.files("seadragon_gw.api") / "static" / "docs"

    async def spec(self, request: Request) -> Response:
        if self._spec is None:
            self._spec = orjson.dumps(build_spec())
        return Response(self._spec, media_type=JSON)

    async def page(self, request: Request) -> Response:
        return Response((self._files / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["asset"]
        media = _ASSETS.get(name)
        if media is None:
            raise NotFound(f"no docs file '{name}'")
        return Response((self._files / name).read_bytes(), media_type=media, headers=_CACHE)


def openapi_routes() -> list[BaseRoute]:
    docs = Docs()
    return [
        Route("/openapi.json", docs.spec, methods=["GET"]),
        Route("/docs", docs.page, methods=["GET"]),
        Route("/docs/{asset}", docs.asset, methods=["GET"]),
    ]
