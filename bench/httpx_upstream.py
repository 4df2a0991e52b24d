"""The HTTP client side: one pooled keep-alive client per backend.

Everything the proxy needs from the upstream library is behind this small surface, so the
library choice stays a one-file decision measured by `bench/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


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
    _response: httpx.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises UpstreamError if the stream breaks or stalls."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamError(504, "upstream timed out while streaming") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"upstream stream broke: {type(exc).__name__}") from None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        await self._response.aclose()


class Upstream:
    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float,
                 max_connections: int, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=None)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(max_connections, 8))
        self._auth = [("authorization", f"Bearer {api_key}")] if api_key else []
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits)

    async def open(self, method: str, path: str, headers: Iterable[tuple[str, str]],
                   content: bytes | AsyncIterator[bytes] | None) -> UpstreamResponse:
        """Send a request and return once the response headers are in."""
        request = self._client.build_request(
            method, path, headers=[*headers, *self._auth], content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise UpstreamError(502, f"backend unreachable at {self.base_url}: connect timeout") from None
        except httpx.TimeoutException:
            raise UpstreamError(504, f"backend at {self.base_url} timed out") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"backend unreachable at {self.base_url}: {type(exc).__name__}") from None
        return UpstreamResponse(response.status_code, response.headers.raw, response)

    async def get_json(self, path: str, timeout_s: float = 5.0) -> Any:
        """Metadata fetch for discovery and health; raises UpstreamError on any failure."""
        try:
            response = await self._client.get(path, headers=self._auth, timeout=timeout_s)
            response.raise_for_status()
            return orjson.loads(response.content)
        except httpx.HTTPStatusError as exc:
            raise UpstreamError(502, f"{path}: HTTP {exc.response.status_code}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"{path}: {type(exc).__name__}") from None
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"{path}: invalid JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()
