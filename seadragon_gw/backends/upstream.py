"""The HTTP client side of the gateway: one keep-alive pool per backend, and every failure
mapped to what it means.

The client is `backends/http1.py` (asyncio protocols + httptools' parser): it replaced aiohttp,
which replaced httpx, each time because the proxy's CPU per request and per streamed token
dropped by a large factor (bench/RESULTS.md; bench/aiohttp_upstream.py keeps the aiohttp
version of this module for comparison runs). Everything the proxy needs is behind this small
surface, so the choice stays a one-file decision.

- no connection (refused, connect timeout, DNS) -> BackendUnreachable; silence longer than
  `read_timeout_s` before the headers or between body bytes -> BackendTimedOut; any other
  failure -> StreamBroken; each message names the backend and the reason in words. A stream
  that breaks or stalls mid-body raises from `chunks()` after the bytes that did arrive.
- no connection limit (the scheduler limits concurrency), keep-alive pooling, no redirects,
  no cookies, no proxy settings from the environment, bodies relayed raw.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from ..errors import GatewayError, TimedOut, UpstreamFailed
from .http1 import ConnectFailed, Pool, Response, ResponseFailed, failure_reason

Explain = Callable[[], str | None]


class UpstreamError(GatewayError):
    """A backend failed; the subclass says how. Messages name the backend and the reason in
    words ("connection refused", "timed out"), never an exception class."""


class BackendUnreachable(UpstreamError, UpstreamFailed):
    """No connection could be made: the backend is down (passive health marks it so)."""


class BackendTimedOut(UpstreamError, TimedOut):
    """The backend went silent for longer than `read_timeout_s`."""


class StreamBroken(UpstreamError, UpstreamFailed):
    """The connection failed after it was made (mid-answer, or a bad reply)."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _response: Response
    backend: str
    explain: Explain | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises UpstreamError if the stream breaks or stalls
        (after the bytes that arrived before the failure)."""
        while chunk := await self.next_chunk():
            yield chunk

    async def next_chunk(self) -> bytes:
        """The body bytes received since the last call, b"" at the end (the relay's per-token
        call: one coroutine, no generator layers)."""
        try:
            return await self._response.chunk()
        except ResponseFailed as exc:
            raise _body_error(self.backend, exc, "while streaming", self.explain) from None

    @property
    def pushable(self) -> bool:
        """Whether `pushed` may be used (a live connection behind it)."""
        return True

    async def pushed(self, sink: Callable[[bytes], bool]) -> None:
        """The body handed to `sink` as it arrives, from the connection's callback (no task
        wake-up per chunk); returns at its end. `sink` returns False to pause reading until
        `resume()`. Raises UpstreamError if the stream breaks or stalls."""
        try:
            await self._response.push(sink)
        except ResponseFailed as exc:
            raise _body_error(self.backend, exc, "while streaming", self.explain) from None
        finally:
            self._response.detach()

    def resume(self) -> None:
        self._response.resume()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except ResponseFailed as exc:
            raise _body_error(self.backend, exc, "while answering", self.explain) from None

    async def aclose(self) -> None:
        """A fully read answer gives its connection back to the pool; a client that left
        mid-stream drops the connection, so the backend stops generating."""
        self._response.release()


@dataclass(slots=True)
class FixedResponse(UpstreamResponse):
    """An answer the gateway gives in a backend's place (Ollama's load and unload calls for a
    backend that has neither): no connection behind it, so every method that would read
    one is overridden. Relays read it as any response (`next_chunk`, `read`, `aclose`)."""

    body: bytes = b""
    _sent: bool = False

    @classmethod
    def of(cls, status: int, content_type: bytes, body: bytes, backend: str) -> FixedResponse:
        no_connection = cast(Response, None)  # never touched: see the overrides below
        return cls(status, [(b"content-type", content_type)], no_connection, backend, body=body)

    async def next_chunk(self) -> bytes:
        if self._sent:
            return b""
        self._sent = True
        return self.body

    async def read(self) -> bytes:
        self._sent = True
        return self.body

    async def aclose(self) -> None:
        return None

    @property
    def pushable(self) -> bool:
        return False  # no connection to push from: relays pull its one body


def _credentials(api_key: str | None, user: str | None, password: str | None) -> list[tuple[bytes, bytes]]:
    if api_key:
        return [(b"authorization", f"Bearer {api_key}".encode("latin-1"))]
    if user is not None:
        pair = f"{unquote(user)}:{unquote(password or '')}".encode()
        return [(b"authorization", b"Basic " + base64.b64encode(pair))]
    return []


def _body_error(label: str, exc: ResponseFailed, when: str, explain: Explain | None) -> UpstreamError:
    if exc.timed_out:
        return BackendTimedOut(f"{label} timed out {when}")
    return StreamBroken(_explained(f"{label}: stream broke ({exc.reason})", explain))


def _explained(message: str, explain: Explain | None) -> str:
    """A broken connection's message, with why the backend went away when it is known (a
    managed process stopped or crashed: "...: stopped at once by an operator")."""
    why = explain() if explain is not None else None
    return f"{message}: {why}" if why else message


class Upstream:
    def __init__(self, name: str, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 api_key: str | None = None) -> None:
        self.name = name
        parts = urlsplit(base_url.rstrip("/"))
        # `user:password@` in the URL is a credential: sent as Basic auth, never shown
        self.base_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.label = f"backend '{name}' at {self.base_url}"
        # why the backend went away, if it knows (a managed process: its lifecycle's reason)
        self.explain: Explain | None = None
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        default_port = (secure and port == 443) or (not secure and port == 80)
        host = parts.hostname or "127.0.0.1"
        host_header = host if default_port else f"{host}:{port}"
        self._prefix = parts.path
        self._auth = _credentials(api_key, parts.username, parts.password)
        self._pool = Pool(host, port, host_header, connect_timeout_s, read_timeout_s,
                          tls=ssl.create_default_context() if secure else None)

    async def open(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes] | None, alone: bool = True) -> UpstreamResponse:
        """Send a request and return once the response headers are in. `alone` False: other
        requests are in progress, and this one may leave with theirs at the end of the loop's
        turn (seadragon_gw/write_batch.py)."""
        try:
            response = await self._pool.request(method, self._prefix + path, [*headers, *self._auth], content,
                                                alone)
        except ConnectFailed as exc:
            raise self.unreachable(exc) from None
        except ResponseFailed as exc:
            if exc.timed_out:
                raise BackendTimedOut(f"{self.label} timed out before answering") from None
            raise StreamBroken(_explained(f"{self.label} failed ({exc.reason})", self.explain)) from None
        return UpstreamResponse(response.status, response.headers, response, self.label, self.explain)

    def unreachable(self, exc: BaseException) -> BackendUnreachable:
        return BackendUnreachable(f"{self.label} is unreachable ({failure_reason(exc)}); is it running?")

    async def get_json(self, path: str, timeout_s: float = 5.0) -> Any:
        """Metadata fetch for discovery and health; raises UpstreamError on any failure."""
        try:
            async with asyncio.timeout(timeout_s):
                response = await self.open("GET", path, [(b"accept", b"application/json")], None)
                try:
                    body = await response.read()
                finally:
                    await response.aclose()
        except TimeoutError:
            raise BackendTimedOut(f"{self.label}: {path} timed out") from None
        if response.status >= 400:
            raise StreamBroken(f"{self.label}: {path} answered HTTP {response.status}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise StreamBroken(f"{self.label}: {path} is not valid JSON") from None

    async def aclose(self) -> None:
        await self._pool.close()


def error_message_of(body: bytes, status: int) -> str:
    """The message of a backend's error body, in either error shape."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, str) and error:
        return error
    return f"backend answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
