"""CORS for browser pages on other origins: an exact allowlist (`server.cors_origins`).

Starlette's CORSMiddleware does the header work, but as configured it still sends
`Access-Control-Allow-Credentials: true` to any page that sends an `Origin`, and answers an
unlisted origin's preflight with CORS headers too. Here an origin that is not listed gets no
`Access-Control-*` header at all (a preflight from it is refused with a JSON 403, a plain
request is answered as if no `Origin` were sent, with `Vary: Origin` for caches), so
credentials are only ever allowed for the listed origins. With no origins listed there is no
middleware at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# What the gateway's clients send: credentials, the gateway's own options, the openai SDK's
# x-stainless-* headers (a browser page using it) and the request id.
REQUEST_HEADERS = ("Authorization", "Content-Type", "X-API-Key", "X-Client-ID", "X-Priority", "X-Request-ID",
                   "X-Resolution", "Prefer", "User-Agent", "X-Stainless-Arch", "X-Stainless-Lang",
                   "X-Stainless-OS", "X-Stainless-Package-Version", "X-Stainless-Runtime",
                   "X-Stainless-Runtime-Version", "X-Stainless-Retry-Count", "X-Stainless-Timeout")
# What a page may read from an answer (queue position, limits, where a job is).
EXPOSED_HEADERS = ("X-Request-ID", "X-Queue-Position", "Retry-After", "Location", "X-RateLimit-Limit",
                   "X-RateLimit-Remaining", "X-RateLimit-Reset", "Preference-Applied")
MAX_AGE_S = 600


class AllowlistCORS(CORSMiddleware):
    """CORSMiddleware for exactly the listed origins, silent to every other one."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=list(origins), allow_methods=METHODS, allow_headers=REQUEST_HEADERS,
                         allow_credentials=True, expose_headers=EXPOSED_HEADERS, max_age=MAX_AGE_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not self.is_allowed_origin(origin):
                await self._unlisted(origin, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _unlisted(self, origin: str, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            body = orjson.dumps({"error": f"CORS: origin {origin} is not allowed (server.cors_origins)"})
            await send({"type": "http.response.start", "status": 403, "headers": [
                (b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin")]})
            await send({"type": "http.response.body", "body": body})
            return

        async def vary_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer["Vary"] = ", ".join([*answer.getlist("Vary"), "Origin"])
            await send(message)

        await self.app(scope, receive, vary_origin)


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """The middleware for `server.cors_origins`; none when the list is empty."""
    return [Middleware(AllowlistCORS, origins=origins)] if origins else []
