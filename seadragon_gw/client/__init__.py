"""The gateway's Python SDK: `GatewayClient` (blocking) and `AsyncGatewayClient` (asyncio), on httpx.

Both are declared once (`api.py`) over one request-building module (`operations.py`, plans
without I/O); `sync.py` and `aio.py` are only the two transports.
"""

from .aio import AsyncGatewayClient
from .errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    GatewayError,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    StreamError,
    Unavailable,
    UpstreamError,
    WaitTimeout,
)
from .sync import GatewayClient

__all__ = [
    "AsyncGatewayClient", "AuthenticationError", "BadRequest", "Conflict", "ConnectionFailed", "GatewayClient",
    "GatewayError", "GatewayTimeout", "NotFound", "PayloadTooLarge", "PermissionDenied", "RateLimited",
    "StreamError", "Unavailable", "UpstreamError", "WaitTimeout",
]
