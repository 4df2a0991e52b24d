"""Driving an exchange to its end without an HTTP client: for async jobs and the WebSocket.

The HTTP writer relays bytes as they come; the other ways in want the whole answer (`complete`)
or the answer line by line (`lines`). Both wait for the slot, open the upstream, keep the
record (first byte, bytes, token counts) and release exactly once, like the HTTP writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..backends.upstream import StreamBroken, UpstreamResponse
from ..errors import GatewayError
from ..records.record import Outcome
from ..records.usage import scan_usage
from .forwarding import error_message_of
from .service import Body, Exchange, outcome_of

OnWaiting = Callable[[int], Awaitable[None]]
"""Called while the request waits for its slot, with its queue position at admission."""


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What to send upstream."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: Body
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Ending:
    """How an exchange ended, released exactly once on the way out of a `with` block: the
    error that ended it sets the outcome (a consumer that stopped or was cancelled is
    `client_gone`)."""

    __slots__ = ("exchange", "outcome", "status", "error")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.outcome: Outcome = "ok"
        self.status = 0
        self.error: str | None = None

    def __enter__(self) -> _Ending:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self.outcome, self.error = "client_gone", "cancelled"
        elif isinstance(exc, GatewayError):
            self.outcome, self.error = outcome_of(exc), exc.message
        self.exchange.release(self.outcome, self.status, self.error)


async def complete(exchange: Exchange, request: Forwarded, *, on_waiting: OnWaiting | None = None,
                   step_s: float | None = None) -> Answer:
    """Wait, forward, read the whole answer, release. Raises what ended the request."""
    with _Ending(exchange) as ending:
        response = await _open(exchange, request, on_waiting, step_s)
        try:
            body = await response.read()
        finally:
            await response.aclose()
        if exchange.rewrite is not None:
            body = exchange.rewrite(body)
        _count(exchange, body)
        ending.status = response.status
        if response.status >= 500:
            ending.outcome = "upstream_error"
        return Answer(response.status, response.headers, body)


async def lines(exchange: Exchange, request: Forwarded, *, on_waiting: OnWaiting | None = None,
                step_s: float | None = None) -> AsyncGenerator[bytes, None]:
    """Wait, forward, and yield the answer line by line (NDJSON lines, SSE lines, without
    the newline), release at the end or when the consumer stops. A backend error status
    raises StreamBroken with the backend's message before any line."""
    with _Ending(exchange) as ending:
        response = await _open(exchange, request, on_waiting, step_s)
        try:
            ending.status = response.status
            if response.status >= 400:
                raise StreamBroken(error_message_of(await response.read(), response.status))
            async for line in _split(exchange, response):
                yield line
        finally:
            await response.aclose()


async def _open(exchange: Exchange, request: Forwarded, on_waiting: OnWaiting | None,
                step_s: float | None) -> UpstreamResponse:
    while not await exchange.wait(step_s if on_waiting is not None else None):
        if on_waiting is not None:
            await on_waiting(exchange.position)
    return await exchange.open(request.method, request.path, request.headers, request.body, request.payload)


async def _split(exchange: Exchange, response: UpstreamResponse) -> AsyncIterator[bytes]:
    pending = b""
    async for chunk in response.chunks():
        if exchange.rewrite is not None:
            chunk = exchange.rewrite(chunk)
        _count(exchange, chunk)
        data = pending + chunk
        *complete_lines, pending = data.split(b"\n")
        for line in complete_lines:
            yield line.rstrip(b"\r")
    if pending:
        yield pending


def _count(exchange: Exchange, data: bytes) -> None:
    record = exchange.record
    if record.first_byte_at is None:
        record.first_byte_at = exchange.service.recorder.clock()
    record.bytes_out += len(data)
    scan_usage(record, data)
