"""A small HTTP/1.1 client on asyncio protocols and httptools' C parser, for the proxy path.

Why not a general client: the proxy needs one thing, done for every request and every token:
send a request on a pooled keep-alive connection and hand the response body on as it arrives.
aiohttp spent most of the gateway's CPU doing that (`ClientSession._request`, its stream reader,
header objects); this module does it with one protocol object per connection, the parser
uvicorn already uses (llhttp via httptools), no per-chunk allocation beyond the bytes, and one
event-loop wake-up per chunk. bench/RESULTS.md has the numbers.

What it does and does not do:
- keep-alive pooling per backend (LIFO, idle connections dropped after `keepalive_s`, below
  the 5 s idle timeout of uvicorn-based backends), no connection limit (the scheduler limits
  concurrency); a request that finds its reused connection closed before any answer byte is
  sent once more on a fresh connection (the server closed it idle, it never saw the request;
  one that timed out is not: the server has it);
- `read_timeout_s` of silence before the head or between body bytes fails the response; one
  timer per connection, re-armed lazily (a chunk only stores the time);
- bodies raw (no decompression), request bodies as bytes (Content-Length) or an async
  iterator (chunked); no redirects, cookies, proxies or environment settings;
- back-pressure both ways: the transport stops reading when the consumer lags 256 KiB behind,
  and request body writes wait while the kernel buffer is full;
- a request with its whole body leaves through the pool's `WriteBatch`: at once when the
  caller says it is `alone`, else at the end of the loop's turn (seadragon_gw/write_batch.py).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

from ..write_batch import WriteBatch

_HIGH_WATER = 256 * 1024


class ConnectFailed(Exception):
    """No connection could be made; `cause` is the OSError or TimeoutError."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ResponseFailed(Exception):
    """The connection failed or went silent while a response was expected or read."""

    def __init__(self, reason: str, *, timed_out: bool = False, before_answer: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out
        self.before_answer = before_answer


class Response:
    """One response: its head, then its body as it arrives."""

    __slots__ = ("_conn", "_chunks", "_waiter", "_buffered", "done", "error", "status", "headers",
                 "_head", "_released", "_sink", "_pushed")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._chunks = conn.body  # the connection's: the parser appends to it (`Connection.body`)
        self._waiter: asyncio.Future[None] | None = None
        self._buffered = 0
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._released = False
        self._sink: Callable[[bytes], bool] | None = None
        self._pushed: asyncio.Future[None] | None = None
        self.done = False
        self.error: ResponseFailed | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def head(self) -> None:
        """Wait for the status line and headers."""
        if not self._head.done():
            self._conn.arm_timer()
            await self._head

    async def chunk(self) -> bytes:
        """The body bytes received since the last call (b"" once the body is complete).
        Bytes that arrived before a failure are returned before the failure is raised."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._buffered >= _HIGH_WATER:
                    self._conn.resume_reading()
                self._buffered = 0
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            waiter = self._waiter = self._conn.loop.create_future()
            self._conn.arm_timer()
            await waiter

    def push(self, sink: Callable[[bytes], bool]) -> asyncio.Future[None]:
        """Hand the body to `sink` from the connection's own callback as it arrives, instead
        of waking a reader task per chunk (a streamed token then costs one call, not a task
        step; bench/RESULTS.md). `sink` returns False when its consumer cannot take more for
        now: reading pauses until `resume()`. The future ends with the body, or with its
        failure (a ResponseFailed, or whatever `sink` raised)."""
        done: asyncio.Future[None] = self._conn.loop.create_future()
        self._sink, self._pushed = sink, done
        if self._chunks:
            self._buffered = 0
            self._conn.resume_reading()
            self.flush_push()
        if self.done or self.error is not None:
            self._settle()
        else:
            self._conn.arm_timer()
        return done

    def resume(self) -> None:
        """The sink's consumer takes bytes again: read on."""
        if self._sink is not None:
            self._conn.resume_reading()
            self._conn.arm_timer()  # silence while paused was the client's; from now on it is the backend's

    def detach(self) -> None:
        """No more pushing (the consumer is gone or done)."""
        self._sink = self._pushed = None

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def complete(self) -> bool:
        return self.done and not self._chunks

    def release(self) -> None:
        """Done with this response: a fully read one gives its connection back to the pool,
        anything else closes the connection (the backend stops generating)."""
        if self._released:
            return
        self._released = True
        self._conn.finished(self, reuse=self.complete and self.error is None)

    # -- fed by the connection ----------------------------------------------------------
    def _received(self, nbytes: int) -> None:
        """A read of `nbytes` is parsed and its body bytes are in `_chunks`: wake the reader,
        and stop reading once it lags `_HIGH_WATER` behind (a pushed response's read goes to
        `flush_push` instead)."""
        if not self._chunks:
            return
        self._buffered += nbytes
        if self._buffered >= _HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _headers_done(self, status: int) -> None:
        self.status = status
        if not self._head.done():
            self._head.set_result(None)

    def _finish(self) -> None:
        self.flush_push()
        self.done = True
        self._headers_done(self.status)
        self._wake()
        self._settle()

    def _fail(self, error: ResponseFailed) -> None:
        if self.done or self.error is not None:
            return
        self.flush_push()  # what arrived before the failure still goes out first
        self.error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here: whoever awaits head() gets it raised
        self._wake()
        self._settle()

    def flush_push(self) -> None:
        """Push what this read brought (several chunks of a burst go out as one write, as the
        pull loop relays what it finds waiting in one send)."""
        chunks = self._chunks
        sink = self._sink
        if sink is None or not chunks:
            return
        if len(chunks) == 1:  # a streamed token: one read, one chunk
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        try:
            more = sink(data)
        except BaseException as exc:  # the consumer's failure ends the push, not the loop's callback
            self._sink = None
            pushed = self._pushed
            if pushed is not None and not pushed.done():
                pushed.set_exception(exc)
            return
        if not more:
            self._conn.pause_reading()

    def _settle(self) -> None:
        """End the push future: the body is complete, or it failed."""
        pushed = self._pushed
        if pushed is None or pushed.done() or not (self.done or self.error is not None):
            return
        self._sink = None
        if self.error is not None:
            pushed.set_exception(self.error)
        else:
            pushed.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend; serves one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # The body bytes of the current response, appended by the parser itself: its `on_body`
        # callback is this deque's (C) `append`, not a Python method (one frame less per read,
        # which for a streamed token is per token). httptools reads the callback once, here.
        self.body: collections.deque[bytes] = collections.deque()
        self.on_body = self.body.append
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self._head_only = False
        self._framed = False
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes while idle: not a server we can trust with the next request
            self.close()
            return
        response = self.response
        self._last_data = self.loop.time()
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ResponseFailed(f"bad response from the backend ({exc})"))
            self.close()
            return
        if response._sink is not None:
            response.flush_push()  # in one piece: several chunks of a burst go out as one write
        else:
            response._received(len(data))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        response = self.response
        if response is not None and not response.done:
            if exc is None and response.status and not self._framed:
                response._finish()  # a body delimited by the end of the connection
            else:
                reason = failure_reason(exc) if exc is not None else "the backend closed the connection"
                response._fail(ResponseFailed(reason, before_answer=not self.received_any))
        self.pool.forget(self)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name, value))
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response._headers_done(self.parser.get_status_code())
        if self._head_only:
            response._finish()
            self.close()  # the parser would wait for a body a HEAD answer never has

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and not response.done:
            response._finish()
            if not self.parser.should_keep_alive():
                self.closed = True  # finished() will close it

    # -- used by Pool and Response --------------------------------------------------------
    async def send(self, method: str, head: bytes, body: bytes | AsyncIterator[bytes] | None,
                   alone: bool = True) -> Response:
        transport = self.transport
        assert transport is not None
        self.body.clear()  # a reused connection's last body was read to the end: nothing is left
        self.response = response = Response(self)
        self.received_any = False
        self._framed = False
        self._head_only = method == "HEAD"
        self._last_data = self.loop.time()
        if body is None or isinstance(body, bytes):
            self.pool.writes.write(transport, head + body if body else head, self.loop, alone)
        else:
            transport.write(head)
            async for part in body:
                if part:
                    transport.write(b"%x\r\n%b\r\n" % (len(part), part))
                    if self._write_paused:
                        await self._drained()
            transport.write(b"0\r\n\r\n")
        return response

    def finished(self, response: Response, reuse: bool) -> None:
        if response is not self.response:
            return
        self.response = None
        # The silence timer stays armed for the next request on this connection: it checks the
        # silence when it fires (and re-arms from the last byte), and on an idle connection it
        # fires once and stops. A timer made and cancelled per request was a TimerHandle and
        # two libuv timer-heap operations each time.
        if reuse and not self.closed:
            self.resume_reading()
            self.pool.give_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_data = self.loop.time()
            self.transport.resume_reading()

    def arm_timer(self) -> None:
        """Make sure silence longer than the read timeout is noticed."""
        if self._timer is None:
            self._timer = self.loop.call_at(self._last_data + self.pool.read_timeout_s, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        response = self.response
        if response is None or response.done or self._paused:
            return
        due = self._last_data + self.pool.read_timeout_s
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check_silence)
            return
        response._fail(ResponseFailed("timed out", timed_out=True, before_answer=not self.received_any))
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: ResponseFailed) -> None:
        if self.response is not None:
            self.response._fail(error)

    async def _drained(self) -> None:
        self._drain = self.loop.create_future()
        await self._drain
        self._drain = None
        if self.closed:
            raise ResponseFailed("the backend closed the connection")


class Pool:
    """Keep-alive connections to one backend."""

    def __init__(self, host: str, port: int, host_header: str, connect_timeout_s: float,
                 read_timeout_s: float, keepalive_s: float = 4.0, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.host = host
        self.port = port
        self.host_header = host_header.encode("latin-1")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self.writes = WriteBatch()

    async def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes | AsyncIterator[bytes] | None, alone: bool = True) -> Response:
        """Send a request and return once the response head is in. `alone`: the caller's
        is the only request in progress (sent at once; else perhaps at the end of the turn)."""
        head = _head(method, target, self.host_header, headers, body)
        conn = self._take()
        if conn is not None:
            try:
                return await self._exchange(conn, method, head, body, alone)
            except ResponseFailed as exc:
                # a connection the backend closed while idle: it never saw this request. Not a
                # timeout: a backend that is slow to answer has the request, and would get it twice
                if not exc.before_answer or exc.timed_out or not isinstance(body, (bytes, type(None))):
                    raise
        return await self._exchange(await self._connect(), method, head, body, alone)

    async def _exchange(self, conn: Connection, method: str, head: bytes,
                        body: bytes | AsyncIterator[bytes] | None, alone: bool) -> Response:
        try:
            response = await conn.send(method, head, body, alone)
        except BaseException:  # the body's source failed (a client gone mid-upload, a limit):
            conn.close()       # the backend must not wait for the rest of a half-sent body
            raise
        try:
            await response.head()
        except BaseException:
            response.release()
            raise
        return response

    def _take(self) -> Connection | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port,
                                                       ssl=self.tls, server_hostname=self.host if self.tls else None)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(exc) from None
        self._all.add(conn)
        return conn

    def give_back(self, conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def forget(self, conn: Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)


def _head(method: str, target: str, host: bytes, headers: list[tuple[bytes, bytes]],
          body: bytes | AsyncIterator[bytes] | None) -> bytes:
    """The request head: the header bytes as they came, joined once (no line of its own each)."""
    parts = [method.encode("latin-1"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if isinstance(body, bytes):
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
    elif body is not None:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
    elif method in ("POST", "PUT", "PATCH"):
        parts.append(b"content-length: 0\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def failure_reason(exc: BaseException) -> str:
    """What went wrong with a connection, as an operator would say it."""
    if isinstance(exc, ConnectFailed):
        exc = exc.cause
    if isinstance(exc, ResponseFailed):
        return exc.reason
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    number = getattr(exc, "errno", None)
    return _ERRNO_WORDS.get(number, "connection failed") if number is not None else "connection failed"


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
}
