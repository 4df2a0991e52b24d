"""uvicorn's httptools protocol with the edges an unauthenticated client must not get past.

uvicorn with httptools bounds neither the request head (a 150 MB header field took 22 s of
CPU in httptools' buffer growth and stalled the event loop) nor the time a client may take
to send it, nor the number of connections. This subclass adds, at the byte level:

- the head: its bytes are counted in `data_received` *before* httptools sees them, so parsing
  stops at `max_head_bytes`; header fields are counted and sized as httptools reports them.
  Past a limit: 431 `{"error": ...}` naming the limit, and the connection is closed.
- deadlines: the head must be complete `header_timeout_s` after the connection opened (or,
  on a kept-alive connection, after its first byte); a body may go silent for at most
  `body_timeout_s`; an idle kept-alive connection is closed after `keepalive_s`. Enforced by
  the server's `DeadlineSweep`, not by a timer per request (uvicorn's keep-alive timer was a
  timer handle made and cancelled for every request).
- `max_connections`: one more connection is answered 503 and closed at once.
- the access log goes through `RedactingAccessLogger`.

Per request this adds integer compares and attribute stores only; see `data_received`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

import httptools
from uvicorn._types import HTTPScope
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from ..write_batch import WriteBatch
from .answers import refusal
from .cap import ConnectionCap
from .direct import DIRECT_BODY, DirectBody
from .light import ConnectionGone, Flow, MessageEvent, Pipeline
from .limits import EdgeLimits
from .redact import RedactingAccessLogger
from .sweep import DeadlineSweep

log = logging.getLogger("seadragon_gw.server")

_MAX_SHARED = 256  # entries of each table a server's connections share (header names, targets)

_K = TypeVar("_K")
_V = TypeVar("_V")

Target = tuple[str, bytes, bytes]  # the scope's path, raw_path and query_string of a request target

# What the sweep checks for a connection (`_wait`).
_IDLE = 0  # the request is in and the app answers (or a pipelined request waits its turn)
_HEAD = 1  # the request head has begun (or the connection is new) and is not complete
_BODY = 2  # the head is complete and the body is not
_KEPT = 3  # the answer is out: kept alive, idle until the next request begins


CONNECTION_GONE = "seadragon.connection_gone"
"""Scope key: the connection's `light.ConnectionGone`, set once the client's connection is lost."""


class HeadLimitExceeded(Exception):
    """Raised inside an httptools callback so that parsing stops at once."""


class GatewayHttpProtocol(HttpToolsProtocol):
    """Use `protocol_class(limits)`: each server needs its own class (its cap and sweep).

    This class's own attributes are slots: with uvicorn's ~30 in the instance dict, 7 more
    would push it past the size CPython shares keys for, and every connection (thousands wait
    in the queue) would carry a private ~1.6 KB dict."""

    __slots__ = ("_head_room", "_wait", "_wait_since", "_head_error", "_accepted", "_gone", "resume_callback")

    limits: ClassVar[EdgeLimits]
    cap: ClassVar[ConnectionCap]
    sweep: ClassVar[DeadlineSweep]
    access: ClassVar[RedactingAccessLogger]
    busy: ClassVar[bytes]  # the 503 for a connection past the cap, built once: it answers floods
    asgi: ClassVar[dict[str, str]]  # the scope's `asgi`, one for all requests (see on_message_begin)
    addresses: ClassVar[dict[tuple[str, int | None], tuple[str, int | None]]]  # the listening ones
    header_names: ClassVar[dict[bytes, bytes]]  # a header name as sent -> lower-cased (on_header)
    targets: ClassVar[dict[bytes, Target]]  # a request target as sent -> parsed (on_headers_complete)
    writes: ClassVar[WriteBatch]  # whole answers held to the end of the loop's turn (write_batch.py)

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pipeline = Pipeline()  # type: ignore[assignment]  # light.py: the deque's 64-slot block
        # RequestResponseCycle only calls `.info(...)` on it (the `access_log` flag was read above).
        self.access_logger = cast(logging.Logger, self.access)
        self._head_room = self.limits.max_head_bytes  # head bytes still allowed
        self._wait = _HEAD
        self._wait_since = 0  # sweep tick at which the current wait began
        self._head_error: str | None = None
        self._accepted = False
        self._gone = ConnectionGone()
        self.resume_callback: Callable[[], None] | None = None  # DirectBody.on_resume

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.cap.refused()
            transport.write(self.busy)
            transport.close()
            return
        self._accepted = True
        # uvicorn's connection_made, but with light.py's Flow (not a FlowControl replaced at
        # once) and the server's address shared by its connections, not a tuple each.
        self.connections.add(self)
        self.transport = transport
        self.flow = Flow(transport, self.loop)
        local = get_local_addr(transport)
        self.server = self.addresses.setdefault(local, local) if local is not None else None
        self.client = get_remote_addr(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        self._wait_since = self.sweep.ticks
        self.sweep.watch(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._accepted:
            return  # refused in connection_made: uvicorn never saw it
        self.sweep.unwatch(self)
        super().connection_lost(exc)
        self._gone.set()
        self.cap.closed(len(self.connections))

    def resume_writing(self) -> None:
        super().resume_writing()
        callback = self.resume_callback
        if callback is not None:
            callback()

    def shutdown(self) -> None:
        """uvicorn's (it closes a connection between requests), once held answers are out."""
        if self.writes.held:
            self.writes.flush()
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        self.sweep.unwatch(self)  # the WebSocket protocol takes the transport over
        super().handle_websocket_upgrade()

    # -- bytes in -----------------------------------------------------------------------------

    def data_received(self, data: bytes | memoryview) -> None:
        """Count head bytes before httptools sees them; note body progress for the sweep.

        Hot path (a head, or a body read): one or two integer compares and attribute stores.
        Bytes of a pipelined head that follow a complete request in the same read are not
        counted (that head's later reads are), so such a head may pass 64 KiB by one read.
        An answer held in `writes` leaves first: whatever these bytes make this connection
        write (a 400, a 431) must follow it.
        """
        if self.writes.held:
            self.writes.flush()
        if self._wait == _BODY:
            self._wait_since = self.sweep.ticks
        else:
            if self._wait != _HEAD:  # idle, or a pipelined head after a request
                self._wait, self._wait_since = _HEAD, self.sweep.ticks
            room = self._head_room
            if len(data) > room:
                self._receive_past_room(memoryview(data), room)
                return
            self._head_room = room - len(data)
        self._feed(data)

    def _receive_past_room(self, data: memoryview, room: int) -> None:
        """`data` holds more than the head may still grow: feed what fits, then see whether the
        head ended inside it (the rest is then its body or the next request)."""
        self._head_room = 0
        if not self._feed(data[:room]):
            return
        if self._wait == _HEAD and self._head_room == 0:
            self._refuse_head(f"request head larger than {self.limits.max_head_bytes} bytes")
            return
        self.data_received(data[room:])

    def _feed(self, data: bytes | memoryview) -> bool:
        """uvicorn's `data_received` (less its keep-alive timer: there is none, see
        `on_response_complete`), plus the 431 answer; False when the connection is done."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError:
            if self._head_error is not None:
                self._refuse_head(self._head_error)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return False
        return True

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """uvicorn's, with the scope built at its final size in one allocation: uvicorn's nine
        keys, then `method`, `path`, `raw_path`, `query_string` (its `on_headers_complete`
        sets them) and the gateway's own keys, which grew it past two table sizes (~700 bytes
        for each of the thousands of requests that may wait; ~400 now). The `asgi` dict is
        shared, not one per request, and `state` is only copied when the lifespan set some
        (Starlette's `request.state` makes it when needed)."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        scope: dict[str, Any] = {
            "type": "http", "asgi": self.asgi, "http_version": "1.1", "server": self.server,
            "client": self.client, "scheme": self.scheme, "root_path": self.root_path,
            "headers": self.headers, "method": "", "path": "", "raw_path": b"", "query_string": b"",
            CONNECTION_GONE: self._gone, DIRECT_BODY: None,
        }
        if self.app_state:
            scope["state"] = self.app_state.copy()
        self.scope = cast(HTTPScope, scope)

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        if len(self.headers) >= limits.max_header_fields:
            raise self._head_limit(f"more than {limits.max_header_fields} header fields")
        if len(name) + len(value) > limits.max_field_bytes:
            shown = name[:64].decode("latin-1")
            raise self._head_limit(f"header field {shown!r} larger than {limits.max_field_bytes} bytes")
        # uvicorn's on_header, inline (it runs for every field of every request), with the
        # lower-cased names shared: the same few names come with every request, and each
        # request's own lower-cased copies were ~250 bytes of every waiting request.
        lower = self.header_names.get(name)
        if lower is None:
            lower = _shared(self.header_names, name, name.lower())
        name = lower
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """uvicorn's, less what it redid for every request: the target parsed and decoded again
        for a path this server has seen (`targets`, a table bounded as `header_names` is), and an
        `asyncio.Event` made for the cycle (light.py's `MessageEvent` instead, which uvicorn's
        replaced at once). The cycle also gets its `DirectBody` (direct.py)."""
        self._wait, self._wait_since = _BODY, self.sweep.ticks
        parser, scope = self.parser, self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        target = self.targets.get(self.url)
        if target is None:
            target = self._parse_target(self.url)
        scope["path"], scope["raw_path"], scope["query_string"] = target
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        cycle = self.cycle = RequestResponseCycle(
            scope=scope, transport=self.transport, flow=self.flow, logger=self.logger,
            access_logger=self.access_logger, access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=MessageEvent(self.loop),  # type: ignore[arg-type]  # light.py
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        scope[DIRECT_BODY] = DirectBody(self, cycle)  # type: ignore[literal-required]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined: it waits for the one before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _parse_target(self, url: bytes) -> Target:
        """uvicorn's parse of a request target (a bad one raises inside the parser's callback:
        a 400), kept for the connections after this one while the table has room."""
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        return _shared(self.targets, url, (self.root_path + path, self.root_path.encode("ascii") + raw_path,
                                           parsed.query or b""))

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered before its body was in (a 401)
            self._wait, self._wait_since = _KEPT, self.sweep.ticks
        else:
            self._wait = _IDLE
        self._head_room = self.limits.max_head_bytes
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, but an idle kept-alive connection is left to the sweep (`_KEPT`), not to a
        timer of its own."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._wait == _IDLE:  # not if the next head has begun already
            self._wait, self._wait_since = _KEPT, self.sweep.ticks

    # -- limits -------------------------------------------------------------------------------

    def _head_limit(self, reason: str) -> HeadLimitExceeded:
        self._head_error = reason
        return HeadLimitExceeded(reason)

    def _refuse_head(self, reason: str) -> None:
        """431 and close. Nothing more is read: the rest of a 150 MB head is never parsed."""
        log.debug("%s: request refused: %s", self._peer(), reason)
        if self.cycle is None or self.cycle.response_complete:  # not inside another response
            self.transport.write(refusal(431, reason))
        self.transport.close()

    def check_deadline(self, ticks: int) -> None:
        """Called by the sweep each tick: close a connection whose head or body is late, or
        that was kept alive idle for too long."""
        wait = self._wait
        if wait == _IDLE or self.transport.is_closing():
            return
        waited = ticks - self._wait_since
        if wait == _KEPT:
            if waited > self.sweep.keepalive_ticks:
                self.timeout_keep_alive_handler()
        elif wait == _HEAD:
            if waited > self.sweep.header_ticks:
                self._close_late("request head not complete within server.header_timeout_s")
        elif self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._wait_since = ticks  # the app has not asked for more: not the client's silence
        elif waited > self.sweep.body_ticks:
            self._close_late("request body silent for longer than server.body_timeout_s")

    def _close_late(self, reason: str) -> None:
        log.debug("%s: connection closed: %s", self._peer(), reason)
        self.transport.close()  # the app, if it is reading the body, gets http.disconnect

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"


def _shared(table: dict[_K, _V], key: _K, value: _V) -> _V:
    """`value`, kept in `table` for the server's later requests while the table has room:
    bounded, because a client may send any header names and targets it likes."""
    if len(table) < _MAX_SHARED:
        table[key] = value
    return value


def protocol_class(limits: EdgeLimits) -> type[GatewayHttpProtocol]:
    """A `GatewayHttpProtocol` subclass bound to `limits`, with its own cap state and sweep:
    pass it to uvicorn as `http=` (one per server)."""
    namespace = {
        "limits": limits,
        "cap": ConnectionCap(limits.max_connections, limits.rearm_connections),
        "sweep": DeadlineSweep(limits.header_timeout_s, limits.body_timeout_s, limits.keepalive_s),
        "access": RedactingAccessLogger(logging.getLogger("uvicorn.access"), None),
        "busy": refusal(503, f"too many open connections (limit {limits.max_connections})"),
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # uvicorn's for `interface="asgi3"` (options.py)
        "addresses": {},
        "header_names": {},
        "targets": {},
        "writes": WriteBatch(),
    }
    return cast(type[GatewayHttpProtocol], type("GatewayHttpProtocol", (GatewayHttpProtocol,), namespace))
