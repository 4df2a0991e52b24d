"""Raw HTTP answers the protocol writes itself, before or instead of an ASGI request cycle.

They are whole responses with `connection: close`: the connection is closed right after.
The body has the gateway's `{"error": "..."}` shape, so clients show the reason.
"""

from __future__ import annotations

import http
import json


def refusal(status: int, message: str) -> bytes:
    """A complete `status` response carrying `{"error": message}`."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "content-type: application/json; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body
