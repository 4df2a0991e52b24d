"""The fast path before the gateway is open: a forwarded route answers 503 in its own error
shape, with the request id and Retry-After, instead of reaching a gateway that does not exist
yet."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Message

from seadragon_gw.app import create_app
from seadragon_gw.config import parse_config


async def test_a_forwarded_route_answers_503_while_the_gateway_starts() -> None:
    app = create_app(parse_config({"backends": [{"name": "b", "url": "http://127.0.0.1:1", "models": ["m"]}]}))
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/chat", "raw_path": b"/api/chat",
                             "query_string": b"", "headers": [(b"x-request-id", b"early-1")], "http_version": "1.1",
                             "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2), "root_path": ""}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b'{"model": "m"}', "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    assert start["status"] == 503
    assert dict(start["headers"])[b"x-request-id"] == b"early-1"
    assert dict(start["headers"])[b"retry-after"] == b"1"  # the error's retry_after_s, as every 503 says it
    assert orjson.loads(body["body"]) == {"error": "the gateway is starting"}
