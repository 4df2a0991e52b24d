"""Synchronous writes of a streamed response body, past the ASGI `send` coroutine.

A relayed token arrives in the upstream connection's callback. Through ASGI it would wake the
relay task, which awaits `send`, which frames and writes it: a task step and two coroutine
calls per token, most of the gateway's cost per token (bench/RESULTS.md). `DirectBody` lets
the relay write the token from that callback instead, framed exactly as uvicorn's
`RequestResponseCycle.send` frames a chunked body, and only while that cycle is in the state
where its own `send` would do the same: head sent, chunked, not complete, client still there.
The head and the end of the body still go through `send`, so the cycle's bookkeeping (keep-
alive, response complete, the next pipelined request) is its own.

Back-pressure: `write` returns False once the client's socket buffer is over its high-water
mark (uvicorn's flow control has paused writing); the caller stops reading the backend and
`on_resume`'s callback runs when the buffer has drained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIRECT_BODY = "seadragon.direct_body"
"""Scope key: the request's `DirectBody` (only under the gateway's own server protocol)."""


class DirectBody:
    __slots__ = ("_protocol", "_cycle")

    def __init__(self, protocol: Any, cycle: Any) -> None:
        self._protocol = protocol  # GatewayHttpProtocol (uvicorn's HttpToolsProtocol)
        self._cycle = cycle  # uvicorn's RequestResponseCycle of this request

    @property
    def usable(self) -> bool:
        """The head is out, the body is chunked and not finished: body writes may go direct."""
        cycle = self._cycle
        return bool(cycle.response_started and cycle.chunked_encoding and not cycle.response_complete
                    and cycle.scope["method"] != "HEAD")

    def write(self, data: bytes) -> bool:
        """One chunk of the body (non-empty); False when the caller should wait for `on_resume`.
        A client that has gone is written nothing, as `send` does (the relay is being cancelled)."""
        cycle = self._cycle
        if cycle.disconnected:
            return True
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return not cycle.flow.write_paused

    def on_resume(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when the client's socket takes bytes again (None: stop)."""
        self._protocol.resume_callback = callback
