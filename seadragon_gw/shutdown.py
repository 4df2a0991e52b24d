"""What the gateway does the moment it is told to stop (SIGTERM, SIGINT).

uvicorn itself then stops listening, lets running requests finish for up to
`server.shutdown_grace_s` and only afterwards runs the lifespan shutdown (`Gateway.close`,
which flushes batched writes). Requests still waiting for a slot would wait in vain, and new
ones must not start, so both are answered here, at once, before uvicorn closes anything.
"""

from __future__ import annotations

import logging

from .gateway import Gateway
from .queue.errors import SHUTDOWN_MESSAGE, ShuttingDown

log = logging.getLogger("seadragon_gw")


def stop_accepting(gateway: Gateway) -> int:
    """Refuse every new request (503 with Retry-After) and answer every waiting one the same
    way; requests holding a slot run on. Returns how many waiting requests were answered."""
    error = ShuttingDown(SHUTDOWN_MESSAGE, retry_after_s=gateway.config.queue.retry_after_s)
    gateway.requests.refuse_new(error)
    answered = gateway.scheduler.reject_waiting(None, error)
    running = gateway.scheduler.processing()
    log.info("shutting down: new requests refused, %d waiting answered, %d running get up to %gs to finish",
             answered, running, gateway.config.server.shutdown_grace_s)
    return answered
