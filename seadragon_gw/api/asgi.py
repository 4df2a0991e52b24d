"""Small raw-ASGI helpers for the proxy hot path (no Request/Response objects)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope

from ..auth.principal import Principal
from ..lifecycle.route import Access
from ..server.direct import DirectBody
from ..server.light import ConnectionGone
from ..server.protocol import CONNECTION_GONE
from .context import gateway_of
from .errors import ApiError


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name (the last one wins, as is enough here)."""
    return dict(scope["headers"])


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int,
                    direct: DirectBody | None = None) -> bytes:
    """Read the whole request body, refusing (413) as soon as it passes `limit`. With the
    server's `direct` body, a body that is all in already is taken without `receive`."""
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    whole = direct.take_body(receive) if direct is not None else None
    if whole is not None:
        if len(whole) > limit:
            raise _too_large(limit)
        return whole
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body too large (limit {limit} bytes)", {"Connection": "close"})


class DisconnectWatch:
    """Cancels `task` as soon as the client goes away, so waits and streams stop at once.

    uvicorn silently drops writes after a disconnect, so without this a stalled upstream would
    keep its slot until it produced another chunk. The gateway's own server protocol puts its
    connection's `ConnectionGone` in the scope, which tells this watch at once (a flag and a
    reference, nothing per request beyond this object). Under another server a task watches
    `receive()` instead. Start only after the body was read.
    """

    __slots__ = ("disconnected", "_armed", "_target", "_gone", "_task")  # one per waiting request

    def __init__(self, scope: Scope, receive: Receive, task: asyncio.Task[Any]) -> None:
        self.disconnected = False
        self._armed = True
        self._target = task
        self._gone: ConnectionGone | None = scope.get(CONNECTION_GONE)
        self._task: asyncio.Future[None] | None = None
        if self._gone is not None:
            self._gone.watch(self)
        else:
            self._task = asyncio.ensure_future(self._watch(receive))

    def client_gone(self) -> None:
        if self._armed:
            self.disconnected = True
            self._target.cancel()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone()
                return

    def close(self) -> None:
        self._armed = False
        if self._gone is not None:
            self._gone.watch(None)
        if self._task is not None:
            self._task.cancel()


def authorize(request: Request, access: Access) -> Principal:
    """Authenticate a Starlette request for `access` ("read", "user" or "admin")."""
    return gateway_of(request).auth.authenticate(request.scope, header_map(request.scope), access)
