"""Synchronous writes of a streamed response body, past the ASGI `send` coroutine.

A relayed token arrives in the upstream connection's callback. Through ASGI it would wake the
relay task, which awaits `send`, which frames and writes it: a task step and two coroutine
calls per token, most of the gateway's cost per token (bench/RESULTS.md). `DirectBody` lets
the relay write the token from that callback instead, framed exactly as uvicorn's
`RequestResponseCycle.send` frames a chunked body, and only while that cycle is in the state
where its own `send` would do the same: head sent, chunked, not complete, client still there.
The head and the end of the body still go through `send`, so the cycle's bookkeeping (keep-
alive, response complete, the next pipelined request) is its own.

A complete answer (`whole`) goes out the same way, head and body in one write: through `send`
they are two writes, and so two system calls and two wake-ups of the client per non-stream
request (bench/RESULTS.md). `whole` leaves the cycle exactly as `send` would: started,
complete, the connection closed when it is not kept alive, the next pipelined request begun.
On a kept-alive connection the write goes through the server's `WriteBatch`, which sends it
at once or at the end of the loop's turn (seadragon_gw/write_batch.py says why).

Back-pressure: `write` returns False once the client's socket buffer is over its high-water
mark (uvicorn's flow control has paused writing); the caller stops reading the backend and
`on_resume`'s callback runs when the buffer has drained.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

DIRECT_BODY = "seadragon.direct_body"
"""Scope key: the request's `DirectBody` (only under the gateway's own server protocol)."""


def drop_direct_body(scope: MutableMapping[str, Any]) -> None:
    """Call when the app is done with the request. The DirectBody refers to uvicorn's request
    cycle, which refers to the scope: a reference cycle per request, left (with the cycle's ~10
    other objects) to the garbage collector, which then ran every ~65 requests. Dropped when
    the app returns, all of it is freed when the request ends."""
    scope.pop(DIRECT_BODY, None)


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

    @property
    def alone(self) -> bool:
        """This is the server's only request in progress (uvicorn's set of request tasks):
        nothing else will write in this turn of the loop."""
        return len(self._protocol.tasks) <= 1

    def take_body(self, receive: Callable[[], Any]) -> bytes | None:
        """The request body, when all of it has arrived and none of it was read: what the
        cycle's `receive` would return in one message, without its coroutine, its event wait
        and its message dict. None when `receive` is needed: it is not the cycle's own (a
        middleware's, or a replay of a body read already), more is to come, a 100-continue is
        still to send, the client is gone or the answer out, or `receive` ran already (it
        clears the event that the body's arrival set)."""
        cycle = self._cycle
        if (receive != cycle.receive or cycle.more_body or not cycle.message_event.is_set() or cycle.disconnected
                or cycle.response_complete or cycle.waiting_for_100_continue):
            return None
        body = bytes(cycle.body)
        cycle.body = cycle.body[:0]  # as `receive` leaves it: empty, of its own type
        cycle.message_event.clear()
        cycle.flow.resume_reading()
        return body

    def write(self, data: bytes) -> bool:
        """One chunk of the body (non-empty); False when the caller should wait for `on_resume`.
        A client that has gone is written nothing, as `send` does (the relay is being cancelled)."""
        cycle = self._cycle
        if cycle.disconnected:
            return True
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return not cycle.flow.write_paused

    def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Head and body of a fixed-length answer in one write; False (nothing written) unless
        the cycle is where its `send` would write both at once: not started, the client there
        and its buffer not full. `headers` are the gateway's own or a parsed backend's (no CR or
        LF: httptools refuses those) and hold no content-length or transfer-encoding: the
        content-length of `body` is added here."""
        cycle = self._cycle
        if cycle.response_started or cycle.disconnected or cycle.flow.write_paused:
            return False
        scope = cycle.scope
        head_only = scope["method"] == "HEAD"
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = False
        if cycle.access_log:
            cycle.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],
                                     get_path_with_query_string(scope), scope["http_version"], status)
        content = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            content += (name, b": ", value, b"\r\n")
        closing = False
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                cycle.keep_alive, closing = False, True
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        content += (b"content-length: %d\r\n\r\n" % len(body), b"" if head_only else body)
        if cycle.keep_alive:  # held to the end of the loop's turn unless alone (write_batch.py)
            self._protocol.writes.write(cycle.transport, b"".join(content), self._protocol.loop, self.alone)
        else:
            cycle.transport.write(b"".join(content))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        return True

    def on_resume(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when the client's socket takes bytes again (None: stop)."""
        self._protocol.resume_callback = callback

