"""The SDK's errors: one class per kind of answer, each carrying the status and the server's message.

The gateway answers errors as `{"error": "..."}` (native routes) or `{"error": {"message": ...}}`
(OpenAI-style routes); `message` is that text, so a caller shows what the server said.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Anything the gateway answered with an error status, or an error line in a stream."""

    def __init__(self, status: int, message: str, *, request_id: str | None = None,
                 retry_after: float | None = None, body: bytes = b"") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body


class BadRequest(GatewayError):
    """400: the request was refused as invalid (the message names the field)."""


class AuthenticationError(GatewayError):
    """401: no credential, a wrong one, or an expired session that could not be renewed."""


class PermissionDenied(GatewayError):
    """403: the credential may not do this (not an admin, a model outside its allowed models)."""


class NotFound(GatewayError):
    """404: no such model, job, key, user or route."""


class Conflict(GatewayError):
    """409: conflicts with the current state (already whitelisted, the last admin)."""


class PayloadTooLarge(GatewayError):
    """413: the body is over `server.max_body_bytes`."""


class RateLimited(GatewayError):
    """429: rate limit, daily quota or login throttle; `retry_after` says when to try again."""


class UpstreamError(GatewayError):
    """502: the backend failed (refused, reset, a 5xx, a failed start)."""


class Unavailable(GatewayError):
    """503: queue full or cleared, the gateway shutting down, the database read-only."""


class GatewayTimeout(GatewayError):
    """504: waited longer than the gateway's queue timeout."""


class StreamError(GatewayError):
    """An error line inside a stream whose 200 headers had already been sent."""


class ConnectionFailed(GatewayError):
    """The gateway could not be reached, or the connection broke (status 0: no answer)."""


class WaitTimeout(GatewayError, TimeoutError):
    """`jobs.wait` gave up before the job ended (status 0: the job goes on)."""


_BY_STATUS: Mapping[int, type[GatewayError]] = {
    400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 429: RateLimited, 502: UpstreamError, 503: Unavailable, 504: GatewayTimeout,
}


def error_for(status: int, message: str, *, request_id: str | None = None, retry_after: float | None = None,
              body: bytes = b"") -> GatewayError:
    """The typed error for an answer's status (GatewayError itself for any other)."""
    kind = _BY_STATUS.get(status, GatewayError)
    return kind(status, message, request_id=request_id, retry_after=retry_after, body=body)
