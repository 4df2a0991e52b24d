"""The HTTP side of one forwarded request: what has been sent, and how to end it.

"Has the response started" lives here and only here: before the head is sent any failure is
a real status with a JSON error; after it, the only way left is an in-band error line that
ends the stream. The writer also keeps the record's byte count and first-byte time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import Send

from ..records.record import RequestRecord
from ..records.usage import COUNT_MARKER, TOKENS_MARKER, scan_usage
from ..server.direct import DirectBody
from .errors import ApiError, ErrorStyle, error_body, header_pairs, stream_error_line

NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"
JSON_TYPE = b"application/json; charset=utf-8"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class HttpWriter:
    __slots__ = ("_send", "style", "record", "started", "status", "event_open", "_clock", "_echo", "direct")

    def __init__(self, send: Send, style: ErrorStyle, record: RequestRecord, clock: Callable[[], float],
                 echo_id: bytes | None = None, direct: DirectBody | None = None) -> None:
        """`direct`: the server's synchronous body writer for this request, when it has one
        (server/direct.py): the relay then writes tokens from the upstream's callback.
        `echo_id`: the request id for the head, given only on the fast path (no middleware
        to echo it); only then may a whole answer go out past `send` (`_whole`)."""
        self._send = send
        self.direct = direct
        self.style = style
        self.record = record
        self.started = False
        self.status = 0
        self.event_open = False  # an SSE event is half written (no blank line yet)
        self._clock = clock
        self._echo = echo_id

    @property
    def stream_type(self) -> bytes:
        return EVENT_STREAM if self.style == "openai" else NDJSON

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the head; `headers` is the caller's fresh list (extended here)."""
        self.started, self.status = True, status
        if self._echo is not None:
            headers.append((b"x-request-id", self._echo))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def start_stream(self, status: int = 200, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        await self.start(status, [(b"content-type", self.stream_type), *STREAM_HEADERS, *extra])

    async def chunk(self, data: bytes) -> None:
        """A piece of a streamed body: counted, scanned for token usage, sent."""
        self._count(data)
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    def chunk_now(self, data: bytes) -> bool:
        """`chunk` without the await, through `direct` (check `direct.usable` first); False
        when the client's buffer is full (wait for `direct.on_resume`)."""
        self._count(data)
        assert self.direct is not None
        return self.direct.write(data)

    def _count(self, data: bytes) -> None:
        """The record's share of a body piece: first-byte time, bytes, token usage."""
        record = self.record
        if record.first_byte_at is None:
            record.first_byte_at = self._now()
        record.bytes_out += len(data)
        if COUNT_MARKER in data or TOKENS_MARKER in data:  # no call for a token without a count
            scan_usage(record, data)

    async def comment(self, data: bytes) -> None:
        """Bytes that are not the backend's (keepalives): sent, not counted."""
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b""})

    async def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete answer in one piece (`headers` without content-length: added here)."""
        record = self.record
        record.first_byte_at = self._now()
        record.bytes_out += len(body)
        scan_usage(record, body)
        await self._whole(status, headers, body)

    async def _whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Head and body in one write where the server allows it (`DirectBody.whole`), else
        the two ASGI messages."""
        self.started, self.status = True, status
        echo = self._echo
        if echo is not None:
            headers.append((b"x-request-id", echo))
            # Only on the fast path (the one that asks for the echo): no middleware wraps
            # `send` there, so none has headers to add (CORS, the request id) that a write
            # past `send` would leave out.
            direct = self.direct
            if direct is not None and direct.whole(status, headers, body):
                return
        headers.append((b"content-length", b"%d" % len(body)))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def fail(self, error: ApiError) -> None:
        """End the request with `error`: a JSON answer, or the in-band line after the head."""
        if not self.started:
            headers = [(b"content-type", JSON_TYPE), *header_pairs(error.headers)]
            await self._whole(error.status, headers, error_body(self.style, error.status, error.message))
            return
        line = stream_error_line(self.style, error.message)
        if self.style == "openai" and self.event_open:
            line = b"\n" + line
        await self._send({"type": "http.response.body", "body": line, "more_body": True})
        await self.end()

    def _now(self) -> float:
        return self._clock()
