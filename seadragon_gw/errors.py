"""What went wrong, in words every layer shares; what HTTP status it is, only `api/` decides.

Lower layers (`queue/`, `auth/`, `store/`, `backends/`, services) raise subclasses of
`GatewayError` that say what happened (`QueueFull`, `Unauthorized`, `ReadOnlyDatabase`...).
They never name an HTTP status: `api/errors.py` maps each kind below to a status and to the
caller's error shape in one table, so the same failure reads the same on every way in (HTTP,
jobs, WebSocket, CLI).
"""

from __future__ import annotations


class GatewayError(Exception):
    """A failure a caller should see: `message` is one line, safe to show (never a secret).

    `retry_after_s` tells the caller when trying again may work (429, 503); `headers` carries
    extra response hints a layer owns (rate-limit figures); the HTTP layer adds them.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})


class InvalidInput(GatewayError):
    """The request itself is wrong (a field's type, a missing value): 400."""


class NotAuthenticated(GatewayError):
    """No credential, or one that does not check out: 401."""


class NotPermitted(GatewayError):
    """A valid credential that may not do this: 403."""


class NotFound(GatewayError):
    """The thing named does not exist (or must not be revealed to this caller): 404."""


class Conflict(GatewayError):
    """The change clashes with what exists (a taken name, the last admin): 409."""


class TooLarge(GatewayError):
    """A body or field over its limit: 413."""


class TooManyRequests(GatewayError):
    """A rate limit or throttle said no for now: 429 (with `retry_after_s`)."""


class Unavailable(GatewayError):
    """Cannot serve right now (queue full, database read-only, backend down): 503."""


class UpstreamFailed(GatewayError):
    """A backend was reached but failed, or could not be reached: 502."""


class TimedOut(GatewayError):
    """Waited too long (in the queue, for a backend): 504."""
