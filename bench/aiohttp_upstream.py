"""Bench-only: the aiohttp version of seadragon_gw/backends/upstream.py, for comparison runs.

The gateway shipped this client (it replaced httpx, measuring 3-6x less CPU per proxied
request) until backends/http1.py (asyncio protocols + httptools' parser) replaced it in turn.
`bench/run.py --targets seadragon,aiohttp,nginx` loads it *as* `seadragon_gw.backends.upstream`
through bench/launch_variant.py, so the same gateway runs with either client; it keeps the
module's surface (`Upstream`, `UpstreamResponse`, `UpstreamError` and its kinds,
`failure_reason`) and semantics:

- no connection (refused, connect timeout, DNS) -> BackendUnreachable; silence longer than
  `read_timeout_s` before the headers or between body bytes -> BackendTimedOut; any other
  failure -> StreamBroken; each message names the backend and the reason in words. A stream
  that breaks or stalls mid-body raises from `chunks()`.
- no connection limit (the scheduler limits concurrency), keep-alive pooling, no redirects.
- bodies are relayed raw (no decompression; the relay asks for `accept-encoding: identity`).
- no cookie jar (one user's Set-Cookie must not be replayed for another), no proxy settings
  from the environment, and no User-Agent/Content-Type of aiohttp's own.
- the session is created on first use: aiohttp needs the running loop, and backends are built
  before the server's loop starts.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ..errors import GatewayError, TimedOut, UpstreamFailed


class UpstreamError(GatewayError):
    """A backend failed; the subclass says how. Messages name the backend and the reason in
    words ("connection refused", "timed out"), never an exception class."""


class BackendUnreachable(UpstreamError, UpstreamFailed):
    """No connection could be made: the backend is down (passive health marks it so)."""


class BackendTimedOut(UpstreamError, TimedOut):
    """The backend went silent for longer than `read_timeout_s`."""


class StreamBroken(UpstreamError, UpstreamFailed):
    """The connection failed after it was made (mid-answer, or a bad reply)."""


def failure_reason(exc: BaseException) -> str:
    """What went wrong with a connection, as an operator would say it."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the backend closed the connection"
    os_error = getattr(exc, "os_error", None) or (exc if isinstance(exc, OSError) else None)
    number = getattr(os_error, "errno", None)
    return _ERRNO_WORDS.get(number, "connection failed") if number is not None else "connection failed"


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
}


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _response: aiohttp.ClientResponse
    backend: str

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises UpstreamError if the stream breaks or stalls."""
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except TimeoutError:
            raise BackendTimedOut(f"{self.backend} timed out while streaming") from None
        except aiohttp.ClientError as exc:
            leftover = _received_before_failure(content)
            if leftover:
                yield leftover
            raise StreamBroken(f"{self.backend}: stream broke ({failure_reason(exc)})") from None

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError:
            raise BackendTimedOut(f"{self.backend} timed out while answering") from None
        except aiohttp.ClientError as exc:
            raise StreamBroken(f"{self.backend}: answer broke off ({failure_reason(exc)})") from None

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()   # body fully read: the connection goes back to the pool
        else:
            response.close()     # client left mid-stream: drop the connection, freeing the backend


def _received_before_failure(content: aiohttp.StreamReader) -> bytes:
    """Bytes the backend sent before its connection broke. aiohttp raises the stored error
    before handing out what is still buffered, which would drop the backend's last chunks;
    a client should get everything the backend wrote, then the in-band error."""
    try:
        return content._read_nowait(-1) if content._buffer else b""  # aiohttp internals, on purpose
    except (AttributeError, aiohttp.ClientError, TimeoutError):
        return b""


class Upstream:
    def __init__(self, name: str, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 api_key: str | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.label = f"backend '{name}' at {self.base_url}"
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout_s,
                                              sock_read=read_timeout_s)
        self._auth = [("authorization", f"Bearer {api_key}")] if api_key else []
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            # keepalive 4 s: below the 5 s idle timeout of uvicorn-based backends (vLLM,
            # llama-cpp-python), so we drop an idle connection before the server does
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=4.0,
                                             ttl_dns_cache=300)
            session = self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Content-Type"),
                trust_env=False)
        return session

    def _url(self, path: str) -> URL:
        return URL(self.base_url + path, encoded=True)

    async def open(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes] | None, alone: bool = True) -> UpstreamResponse:
        """Send a request and return once the response headers are in (`alone`: unused here)."""
        try:
            response = await self._client().request(
                method, self._url(path), headers=[*((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers),
                                                  *self._auth], data=content,
                allow_redirects=False)
        except aiohttp.ClientConnectorError as exc:  # includes connect timeouts and DNS
            raise self.unreachable(exc) from None
        except aiohttp.ConnectionTimeoutError as exc:
            raise self.unreachable(exc) from None
        except TimeoutError:
            raise BackendTimedOut(f"{self.label} timed out before answering") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamBroken(f"{self.label} failed ({failure_reason(exc)})") from None
        return UpstreamResponse(response.status, list(response.raw_headers), response, self.label)

    def unreachable(self, exc: BaseException) -> BackendUnreachable:
        return BackendUnreachable(f"{self.label} is unreachable ({failure_reason(exc)}); is it running?")

    async def get_json(self, path: str, timeout_s: float = 5.0) -> Any:
        """Metadata fetch for discovery and health; raises UpstreamError on any failure."""
        try:
            async with self._client().get(self._url(path), headers=self._auth, auto_decompress=True,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                body = await response.read()
                if response.status >= 400:
                    raise StreamBroken(f"{self.label}: {path} answered HTTP {response.status}")
            return orjson.loads(body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise self.unreachable(exc) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StreamBroken(f"{self.label}: {path} failed ({failure_reason(exc)})") from None
        except orjson.JSONDecodeError:
            raise StreamBroken(f"{self.label}: {path} is not valid JSON") from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
