"""Error responses in the two shapes clients parse.

Native Ollama routes answer `{"error": "..."}`; OpenAI-style routes answer
`{"error": {"message", "type", "param", "code"}}`. Which one depends only on the path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import orjson
from starlette.types import Scope, Send

from .. import errors as e

ErrorStyle = Literal["ollama", "openai"]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_OPENAI_PREFIXES = ("/v1/", "/api/chat/completions", "/api/completions", "/api/models", "/api/ocr")


@dataclass
class ApiError(Exception):
    """Raised anywhere in request handling; rendered once, in the caller's error style."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


# The one table from a lower layer's kind of failure to an HTTP status (most specific first).
_STATUS: tuple[tuple[type[e.GatewayError], int], ...] = (
    (e.InvalidInput, 400),
    (e.NotAuthenticated, 401),
    (e.NotPermitted, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.TooLarge, 413),
    (e.TooManyRequests, 429),
    (e.UpstreamFailed, 502),
    (e.Unavailable, 503),
    (e.TimedOut, 504),
)


def status_for(error: e.GatewayError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def as_api_error(error: e.GatewayError) -> ApiError:
    """A lower layer's error as the HTTP answer: its status, message and headers."""
    status = status_for(error)
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return ApiError(status, error.message, headers)


def style_for_path(path: str) -> ErrorStyle:
    return "openai" if path.startswith(_OPENAI_PREFIXES) or path == "/v1" else "ollama"


def error_payload(style: ErrorStyle, status: int, message: str) -> dict[str, object]:
    if style == "ollama":
        return {"error": message}
    kind = _OPENAI_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_body(style: ErrorStyle, status: int, message: str) -> bytes:
    return orjson.dumps(error_payload(style, status, message))


def stream_error_line(style: ErrorStyle, message: str) -> bytes:
    """The in-band error that ends a stream whose 200 headers are already sent."""
    if style == "ollama":
        return orjson.dumps({"error": message}) + b"\n"
    return b"data: " + error_body("openai", 500, message) + b"\n\n"


def header_pairs(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """An error's own headers (`ApiError.headers`) as ASGI header pairs."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_error(send: Send, scope: Scope, status: int, message: str, request_id: bytes | None,
                     extra: dict[str, str] | None = None) -> None:
    """A JSON error answer in the route's error shape, straight to the ASGI `send` (for a
    request that has no writer); `extra`: the error's own headers (`ApiError.headers`)."""
    body = error_body(style_for_path(scope["path"]), status, message)
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += header_pairs(extra or {})
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
