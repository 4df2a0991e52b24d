"""Forwarding one request to a backend and relaying its answer, streamed or whole.

Streams are passed on as they arrive, cut only at line ends: a chunk is sent up to its last
newline and any partial line waits for the rest. Nothing is re-split or padded, so NDJSON and
SSE framing reach the client exactly as the backend wrote it, and a mid-stream failure can end
the stream with a clean in-band error line.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable

import orjson
from starlette.types import Send

from ..backends.backend import Backend
from ..backends.upstream import UpstreamError, UpstreamResponse
from .errors import ApiError, ErrorStyle, stream_error_line

NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

_DROP_REQUEST = frozenset({
    b"host", b"content-length", b"authorization", b"x-api-key", b"cookie", b"connection",
    b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authorization",
    b"proxy-connection", b"accept-encoding", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"x-real-ip", b"x-priority", b"x-client-id", b"expect",
})
_DROP_RESPONSE = frozenset({
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"server",
    b"content-encoding",
})


def upstream_headers(client_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers minus its credentials and hop-by-hop ones; `Host` becomes the
    backend's (Ollama on loopback answers 403 to a foreign Host)."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in client_headers if k not in _DROP_REQUEST]
    headers.append(("accept-encoding", "identity"))
    return headers


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in raw if k.lower() not in _DROP_RESPONSE]


def stream_start(status: int, content_type: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> dict:
    headers = [(b"content-type", content_type), *STREAM_HEADERS, *extra]
    return {"type": "http.response.start", "status": status, "headers": headers}


async def open_upstream(backend: Backend, method: str, path: str, headers: list[tuple[str, str]],
                        content: bytes | AsyncIterator[bytes] | None) -> UpstreamResponse:
    try:
        return await backend.upstream.open(method, path, headers, content)
    except UpstreamError as exc:
        raise ApiError(exc.status, exc.message) from None


Rewrite = Callable[[bytes], bytes]


def model_renamer(backend_name: str, client_name: str) -> Rewrite:
    """Put the client's model name back into a reply from a backend that knows the model by
    another name (`qwen` vs `qwen:latest`): clients expect their own name echoed."""
    pattern = re.compile(rb'("model"\s*:\s*)' + re.escape(orjson.dumps(backend_name)))
    client_json = orjson.dumps(client_name)
    return lambda data: pattern.sub(lambda m: m.group(1) + client_json, data)


async def send_whole(send: Send, response: UpstreamResponse, rewrite: Rewrite | None = None) -> None:
    """A non-streamed answer: keep the backend's status, type and body."""
    try:
        body = await response.read()
    except UpstreamError as exc:
        raise ApiError(exc.status, exc.message) from None
    if rewrite is not None:
        body = rewrite(body)
    headers = response_headers(response.headers)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def relay_stream(send: Send, response: UpstreamResponse, style: ErrorStyle,
                       rewrite: Rewrite | None = None) -> None:
    """Pass stream chunks on at line boundaries; end with an in-band error if it breaks."""
    pending = b""
    tail = b"\n\n"
    try:
        async for chunk in response.chunks():
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                pending = data
                continue
            if cut == len(data):
                out, pending = data, b""
            else:
                out, pending = data[:cut], data[cut:]
            tail = out[-2:]
            if rewrite is not None:
                out = rewrite(out)
            await send({"type": "http.response.body", "body": out, "more_body": True})
    except UpstreamError as exc:
        await end_stream_with_error(send, style, exc.message, event_open=tail != b"\n\n")
        return
    if pending:
        await send({"type": "http.response.body", "body": pending, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def end_stream_with_error(send: Send, style: ErrorStyle, message: str, event_open: bool = False) -> None:
    """After 200 headers the only way to report a failure is a last line in the stream."""
    line = stream_error_line(style, message)
    if style == "openai" and event_open:
        line = b"\n" + line
    await send({"type": "http.response.body", "body": line, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def upstream_error_message(response: UpstreamResponse) -> str:
    """The message of a backend error body, in either error shape."""
    try:
        body = await response.read()
    except UpstreamError as exc:
        return exc.message
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, str) and error:
        return error
    return f"backend answered HTTP {response.status}: {body[:200].decode('utf-8', 'replace')}"
