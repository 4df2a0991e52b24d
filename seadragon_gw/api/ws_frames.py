"""The WebSocket's messages: what a client may send, what the socket answers, and what a
backend's stream line becomes.

Client to gateway (text or binary frames holding one JSON object):

    {"type": "auth", "token": "..."}                       first message, without header credentials
    {"id": "1", "route": "/api/chat", "body": {...}}       start a request ("type": "request" optional)
    {"type": "cancel", "id": "1"}                          cancel one

Gateway to client: `{"type": "ready"}` once authenticated, then per request
`{"id", "queued": N}` while it waits, `{"id", "chunk": {...}}` per NDJSON line or SSE event,
and last `{"id", "done": true, "usage": {...}}`, `{"id", "error": "..."}` or
`{"id", "cancelled": true}`. A message that cannot be used gets `{"id"?, "error"}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..errors import GatewayError, InvalidInput
from ..lifecycle.route import INFERENCE
from ..records.record import RequestRecord

MAX_ID_CHARS = 64
MAX_TOKEN_CHARS = 4096
ROUTES = ", ".join(INFERENCE)


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Start:
    id: str
    route: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cancel:
    id: str


Command = Auth | Start | Cancel


class BadMessage(InvalidInput):
    """A client message the socket answers with an error and otherwise ignores."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_command(data: str | bytes) -> Command:
    """One client message as a command, or BadMessage saying what is wrong with it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadMessage("message is not JSON") from None
    if not isinstance(value, dict):
        raise BadMessage("message must be a JSON object")
    kind = value.get("type", "request")
    if kind == "auth":
        return Auth(_token(value.get("token")))
    request_id = _id_of(value)
    if kind == "cancel":
        return Cancel(_required_id(request_id, value))
    if kind != "request":
        raise BadMessage(f"unknown message type {str(kind)[:32]!r} (expected 'request', 'cancel' or 'auth')",
                         request_id)
    route = value.get("route")
    if not isinstance(route, str) or not route:
        raise BadMessage("route is required", request_id)
    if route not in INFERENCE:
        raise BadMessage(f"unknown route {route[:100]!r} (expected one of: {ROUTES})", request_id)
    body = value.get("body")
    if not isinstance(body, dict):
        raise BadMessage("body must be a JSON object", request_id)
    return Start(_required_id(request_id, value), route, body)


def _id_of(value: dict[str, Any]) -> str | None:
    request_id = value.get("id")
    if isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_CHARS:
        return request_id
    return None


def _required_id(request_id: str | None, value: dict[str, Any]) -> str:
    if request_id is None:
        shown = "is required" if value.get("id") is None else "must be a string"
        raise BadMessage(f"id {shown} (1 to {MAX_ID_CHARS} characters)")
    return request_id


def _token(token: Any) -> str:
    if not isinstance(token, str) or not token.strip():
        raise BadMessage("auth needs a token: {\"type\": \"auth\", \"token\": \"...\"}")
    if len(token) > MAX_TOKEN_CHARS:
        raise BadMessage(f"token longer than {MAX_TOKEN_CHARS} characters")
    return token.strip()


def wants_stream(body: dict[str, Any], native: bool) -> bool:
    """Native routes stream unless `"stream": false`; OpenAI routes only with `"stream": true`
    (as over HTTP)."""
    value = body.get("stream")
    if value is None:
        return native
    if not isinstance(value, bool):
        raise InvalidInput("stream must be a boolean")
    return value


# -- reading backend lines ----------------------------------------------------------------

LineKind = Literal["chunk", "skip", "done"]


def read_line(line: bytes, sse: bool) -> tuple[LineKind, Any]:
    """What one stream line is: a chunk (its JSON value), nothing to send (blank lines, SSE
    comments and `event:`/`id:` fields), or the end (`data: [DONE]`). A line that is not JSON
    raises InvalidInput."""
    line = line.strip()
    if sse:
        if not line.startswith(b"data:"):
            return "skip", None  # blank separator, ": comment", event:, id:, retry:
        line = line[5:].strip()
        if line == b"[DONE]":
            return "done", None
    if not line:
        return "skip", None
    try:
        return "chunk", orjson.loads(line)
    except orjson.JSONDecodeError:
        shown = line[:100].decode("utf-8", "replace")
        raise InvalidInput(f"the backend sent a line that is not JSON: {shown}") from None


def in_band_error(chunk: Any) -> str | None:
    """The message of an error a backend sent inside its stream (`{"error": "..."}` from
    Ollama, `{"error": {"message": ...}}` from OpenAI-style servers)."""
    if not isinstance(chunk, dict) or "error" not in chunk:
        return None
    error = chunk["error"]
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) and error else "the backend reported an error"


# -- what the socket sends ----------------------------------------------------------------


def _dump(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


def ready() -> str:
    return _dump({"type": "ready"})


def queued(request_id: str, position: int) -> str:
    return _dump({"id": request_id, "queued": position})


def chunk(request_id: str, value: Any) -> str:
    return _dump({"id": request_id, "chunk": value})


def done(request_id: str, record: RequestRecord) -> str:
    usage = {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}
    return _dump({"id": request_id, "done": True, "usage": usage})


def cancelled(request_id: str) -> str:
    return _dump({"id": request_id, "cancelled": True})


def error(request_id: str | None, message: str) -> str:
    return _dump({"error": message} if request_id is None else {"id": request_id, "error": message})


def failure(request_id: str | None, exc: GatewayError) -> str:
    """A GatewayError as an error message: its words, and `retry_after` (seconds) when it
    has one (429, 503)."""
    value: dict[str, Any] = {"error": exc.message}
    if request_id is not None:
        value = {"id": request_id, **value}
    if exc.retry_after_s is not None:
        value["retry_after"] = max(1, math.ceil(exc.retry_after_s))
    return _dump(value)
