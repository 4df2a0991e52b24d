"""Request bodies for the admin and account routes: read within a limit, parsed as JSON.

The limit holds before reading: a `Content-Length` over it is refused at once, and a
chunked body is refused as soon as what arrived passes it, without reading the rest. The
413 also closes the connection, so the server stops reading what the client still sends.
The fields themselves are checked by the service that uses them (`admin.fields`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from .asgi import ClientGone, header_map, read_body
from .errors import ApiError

MAX_ADMIN_BODY = 64 * 1024


async def read_limited(request: Request, limit: int = MAX_ADMIN_BODY) -> bytes:
    """The whole body, at most `limit` bytes (else 413 with `Connection: close`); a client
    that leaves mid-body is Starlette's `ClientDisconnect` (the app answers it quietly)."""
    try:
        return await read_body(request.receive, header_map(request.scope), limit)
    except ClientGone:
        raise ClientDisconnect() from None


async def json_object(request: Request, limit: int = MAX_ADMIN_BODY) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    body = await read_limited(request, limit)
    return parse_json_object(body) if body else {}


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid JSON in request body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data
