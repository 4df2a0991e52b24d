"""Why the queue did not give a request its slot."""

from __future__ import annotations

from ..errors import TimedOut, Unavailable

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"  # Ollama's words
CLEARED_MESSAGE = "queue cleared by an administrator"
SHUTDOWN_MESSAGE = "the gateway is shutting down"


class QueueFull(Unavailable):
    """`queue.max_waiting` requests wait already for this model (Ollama's 503)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(BUSY_MESSAGE, retry_after_s=retry_after_s)


class QueueTimeout(TimedOut):
    """A request waited `queue.timeout_s` without getting a slot."""


class QueueCleared(Unavailable):
    """An administrator answered every waiting request at once."""

    def __init__(self, message: str = CLEARED_MESSAGE) -> None:
        super().__init__(message)


class ShuttingDown(Unavailable):
    """The gateway is stopping: waiting requests are answered, new ones refused."""
