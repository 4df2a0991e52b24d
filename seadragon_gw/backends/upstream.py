"""The HTTP client side: one pooled keep-alive aiohttp session per backend.

aiohttp replaced httpx here because it measured 3-6x less gateway CPU per proxied request
(bench/RESULTS.md: ~160-250 us vs 650-3,100 us; httpx's pool checks every idle connection on
each request). Everything the proxy needs is behind this small surface, so the choice stays a
one-file decision; bench/httpx_upstream.py keeps the httpx version for comparison runs.

- connect timeout -> 502; silence longer than `read_timeout_s` before the headers or between
  body bytes -> 504; any other client failure -> 502 naming the exception type; a stream that
  breaks or stalls mid-body -> UpstreamError from `chunks()`.
- no connection limit (the scheduler limits concurrency), keep-alive pooling, no redirects.
- bodies are relayed raw (no decompression; the relay asks for `accept-encoding: identity`).
- no cookie jar (one user's Set-Cookie must not be replayed for another), no proxy settings
  from the environment, and no User-Agent/Content-Type of aiohttp's own.
- the session is created on first use: aiohttp needs the running loop, and backends are built
  before the server's loop starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL


class UpstreamError(Exception):
    """The backend could not be reached (`status` 502) or timed out (504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _response: aiohttp.ClientResponse

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
            raise UpstreamError(504, "upstream timed out while streaming") from None
        except aiohttp.ClientError as exc:
            leftover = _received_before_failure(content)
            if leftover:
                yield leftover
            raise UpstreamError(502, f"upstream stream broke: {type(exc).__name__}") from None

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out while streaming") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, f"upstream stream broke: {type(exc).__name__}") from None

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
        return content._read_nowait(-1) if content._buffer else b""  # noqa: SLF001
    except (AttributeError, aiohttp.ClientError, TimeoutError):
        return b""


class Upstream:
    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 max_connections: int, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
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

    async def open(self, method: str, path: str, headers: Iterable[tuple[str, str]],
                   content: bytes | AsyncIterator[bytes] | None) -> UpstreamResponse:
        """Send a request and return once the response headers are in."""
        try:
            response = await self._client().request(
                method, self._url(path), headers=[*headers, *self._auth], data=content,
                allow_redirects=False)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamError(502, f"backend unreachable at {self.base_url}: connect timeout") from None
        except TimeoutError:
            raise UpstreamError(504, f"backend at {self.base_url} timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(502, f"backend unreachable at {self.base_url}: {type(exc).__name__}") from None
        return UpstreamResponse(response.status, list(response.raw_headers), response)

    async def get_json(self, path: str, timeout_s: float = 5.0) -> Any:
        """Metadata fetch for discovery and health; raises UpstreamError on any failure."""
        try:
            async with self._client().get(self._url(path), headers=self._auth, auto_decompress=True,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                body = await response.read()
                if response.status >= 400:
                    raise UpstreamError(502, f"{path}: HTTP {response.status}")
            return orjson.loads(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamError(502, f"{path}: {type(exc).__name__}") from None
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"{path}: invalid JSON") from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
