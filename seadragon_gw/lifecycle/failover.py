"""When a request whose backend failed goes to another backend of its model (seed 003).

The rule: only failures that happened before the backend answered anything, and only where
sending the request again cannot be wrong.
- No connection (refused, unreachable, connect timeout): the backend never saw the request;
  tried elsewhere whatever the body (a streamed upload was not read yet).
- The connection dropped before an answer (a crash mid-request): tried elsewhere when the
  body is in memory (a streamed upload is partly gone).
- An answer of 502 or 503 (a proxy in front of a dead server, Ollama's "server busy"): the
  backend could not serve it now; tried elsewhere when the body is in memory.
- Everything else is an answer and goes to the client as it is: 4xx (Ollama's 404 "model not
  found" is that backend's truth, not a reason to guess), 500 (the model failed on this
  input, and would again), a timeout before the answer (the request may be running there).
- After the first byte of an answer nothing is retried: the error is in-band, as always.
At most `retries` other backends are tried (the failing backend's setting, default 1), never
one that failed this request already; with no other backend of the model, the error stands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..backends.upstream import BackendUnreachable, StreamBroken, UpstreamError

RETRY_STATUSES = frozenset({502, 503})

Body = bytes | AsyncIterator[bytes] | None


def replayable(body: Body) -> bool:
    return body is None or isinstance(body, bytes)


def after_error(error: UpstreamError, body: Body) -> bool:
    """May a request that failed with `error` while opening be sent to another backend?"""
    if isinstance(error, BackendUnreachable):
        return True
    return isinstance(error, StreamBroken) and replayable(body)


def after_answer(status: int, body: Body) -> bool:
    """May a request answered with `status` (nothing relayed yet) go to another backend?"""
    return status in RETRY_STATUSES and replayable(body)
