"""What both transports share: a `Call` as httpx request arguments, an httpx answer as a `Reply`."""

from __future__ import annotations

from typing import Any

import httpx

from .errors import ConnectionFailed
from .protocol import Call, Reply

DEFAULT_TIMEOUT_S = 600.0  # a queued request may wait minutes for its turn


def request_args(call: Call) -> dict[str, Any]:
    args: dict[str, Any] = {"params": dict(call.params or {}), "headers": dict(call.headers)}
    if call.data is not None:
        args["data"] = dict(call.data)
    elif call.json is not None:
        args["json"] = call.json
    return args


def reply_of(response: httpx.Response, body: bytes, stream: Any = None) -> Reply:
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, body, stream)


def connection_failed(call: Call, exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(0, f"{call.method} {call.path}: {type(exc).__name__}: {exc or 'no answer'}")
