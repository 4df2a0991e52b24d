"""`X-Request-ID` on every answer, errors included.

The client's id is kept when it is sane (so its logs and ours line up), else one is made up.
It is put in the scope for the handlers and added to the response head as it passes.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..records.record import request_id_from
from .context import REQUEST_ID_KEY, request_ids_of

_HEADER = b"x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                header = value
        request_id = scope[REQUEST_ID_KEY] = request_id_from(header, request_ids_of(scope))
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
