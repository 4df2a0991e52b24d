"""Ollama's load and unload calls, answered as Ollama answers them.

A native `/api/generate` with no prompt (or `/api/chat` with no messages) generates nothing:
with `keep_alive: 0` it unloads the model (what `ollama stop M` sends) and is answered at
once, before any scheduling; without it, it loads the model and is answered once it is
loaded (Ollama's `server/routes.go`). A backend reached through the OpenAI translation has
no such calls, so the gateway answers them itself: "unload" stops a managed process,
"load" is answered when the request gets its slot (the process is up).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from .ollama_over_openai import now_rfc3339

Call = Literal["load", "unload"]
CONTENT_TYPE = b"application/json; charset=utf-8"  # Ollama answers these with one JSON object, streamed or not


def control_call(route: str, payload: dict[str, Any] | None) -> Call | None:
    """"load" or "unload" for a generate with no prompt (a chat with no messages), else None."""
    if payload is None:
        return None
    if route == "/api/generate":
        empty = payload.get("prompt") in (None, "")
    elif route == "/api/chat":
        empty = payload.get("messages") in (None, [])
    else:
        return None
    if not empty:
        return None
    return "unload" if keep_alive_zero(payload) else "load"


def keep_alive_zero(payload: dict[str, Any] | None) -> bool:
    """Ollama's `keep_alive: 0` (or "0", "0s", "0m"): unload the model once this request ends."""
    value = payload.get("keep_alive") if payload is not None else None
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, str) and value.strip().rstrip("smh") in ("0", "0.0")


def answer(route: str, model: str, call: Call) -> bytes:
    """Ollama's answer: generate's `response: ""`, chat's empty assistant message."""
    body: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if route == "/api/chat":
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    body.update(done=True, done_reason=call)
    return orjson.dumps(body)
