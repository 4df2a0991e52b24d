"""What the rate limiter refuses with (429 once the HTTP layer maps it)."""

from __future__ import annotations

from ..errors import TooManyRequests


class RateLimited(TooManyRequests):
    """A client went past its rate limit or a daily quota. The message names the limit and
    the client; `headers` carry `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds) and
    `retry_after_s` says when the next request can pass."""
