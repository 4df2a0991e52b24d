"""What a forwarded request carries to the backend, and what comes back renamed.

Shared by every way in: the HTTP writer, async jobs and the WebSocket writer all forward
through `Exchange.open`, which uses these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..backends.backend import Backend
from ..backends.upstream import error_message_of
from ..model_names import model_key

__all__ = ["Rewrite", "body_for", "error_message_of", "model_renamer", "upstream_headers"]

Rewrite = Callable[[bytes], bytes]

_DROP_REQUEST = frozenset({
    b"host", b"content-length", b"authorization", b"x-api-key", b"cookie", b"connection",
    b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authorization",
    b"proxy-connection", b"accept-encoding", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"x-real-ip", b"x-priority", b"x-client-id", b"expect",
})


def upstream_headers(client_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers minus its credentials and hop-by-hop ones; `Host` becomes the
    backend's (Ollama on loopback answers 403 to a foreign Host). Bytes as the server parsed
    them (lower-case names) into the upstream request's head, never decoded on the way."""
    headers = [(k, v) for k, v in client_headers if k not in _DROP_REQUEST]
    headers.append((b"accept-encoding", b"identity"))
    return headers


def model_renamer(backend_name: str, client_name: str) -> Rewrite:
    """Put the client's model name back into a reply from a backend that knows the model by
    another name (`qwen` vs `qwen:latest`): clients expect their own name echoed."""
    pattern = re.compile(rb'("model"\s*:\s*)' + re.escape(orjson.dumps(backend_name)))
    client_json = orjson.dumps(client_name)
    return lambda data: pattern.sub(lambda m: m.group(1) + client_json, data)


def body_for(backend: Backend, body: bytes | None, payload: dict[str, Any] | None
             ) -> tuple[bytes | None, Rewrite | None]:
    """The client's bytes, untouched, unless an OpenAI backend knows the model by another
    name: then the request carries the backend's name and the reply gets the client's back."""
    if backend.kind != "openai" or payload is None:
        return body, None
    name = payload.get("model")
    info = backend.models.get(model_key(name)) if isinstance(name, str) else None
    if info is None or info.name == name:
        return body, None
    assert isinstance(name, str)
    return orjson.dumps({**payload, "model": info.name}), model_renamer(info.name, name)
