"""Relaying a backend's answer to the client, streamed or whole.

Streams are passed on as they arrive, cut only at line ends: a chunk is sent up to its last
newline and any partial line waits for the rest. Nothing is re-split or padded, so NDJSON and
SSE framing reach the client exactly as the backend wrote it, and a mid-stream failure can end
the stream with a clean in-band error line (raised here, written by the caller's writer).
"""

from __future__ import annotations

from ..backends.upstream import UpstreamError, UpstreamResponse
from ..lifecycle.forwarding import Rewrite, error_message_of
from ..server.direct import DirectBody
from .writer import STREAM_HEADERS, HttpWriter

_DROP_RESPONSE = frozenset({
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"server",
    b"content-encoding",
})


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in raw if k.lower() not in _DROP_RESPONSE]


async def start_stream_like(writer: HttpWriter, response: UpstreamResponse) -> None:
    """The backend's own stream head, plus the no-buffering hints."""
    await writer.start(response.status, response_headers(response.headers) + STREAM_HEADERS)


async def send_whole(writer: HttpWriter, response: UpstreamResponse, rewrite: Rewrite | None = None) -> None:
    """A non-streamed answer: keep the backend's status, type and body."""
    body = await response.read()
    if rewrite is not None:
        body = rewrite(body)
    await writer.whole(response.status, response_headers(response.headers), body)


async def relay_stream(writer: HttpWriter, response: UpstreamResponse, rewrite: Rewrite | None = None) -> None:
    """Pass stream chunks on at line boundaries. Raises UpstreamError if the backend's
    stream breaks; `writer.event_open` then says whether an SSE event was cut.

    Under the gateway's own server protocol a stream is pushed: each chunk is cut, rewritten
    and written from the upstream connection's callback (`_Push`; a translated stream is
    translated there too), without a task wake-up per token. An answer with no connection
    behind it (`pushable` False) is pulled."""
    lines = _Lines(writer, rewrite)
    direct = writer.direct
    if direct is not None and direct.usable and response.pushable:
        await _push(lines, response, direct)
    else:
        next_chunk = response.next_chunk
        while chunk := await next_chunk():
            out = lines.cut(chunk)
            if out:
                await writer.chunk(out)
    if lines.pending:
        await writer.chunk(lines.pending)
    await writer.end()


class _Lines:
    """Cuts a stream at its last line end; the partial line after it waits for the rest."""

    __slots__ = ("writer", "rewrite", "pending")

    def __init__(self, writer: HttpWriter, rewrite: Rewrite | None) -> None:
        self.writer = writer
        self.rewrite = rewrite
        self.pending = b""

    def cut(self, chunk: bytes) -> bytes:
        """The complete lines so far (rewritten), b"" while a line is still open."""
        pending = self.pending
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self.pending = data
            return b""
        if cut == len(data):
            out, self.pending = data, b""
        else:
            out, self.pending = data[:cut], data[cut:]
        self.writer.event_open = out[-2:] != b"\n\n"
        return out if self.rewrite is None else self.rewrite(out)

    def push(self, chunk: bytes) -> bool:
        """The pushed relay's sink, in the upstream's callback: False when the client is full.
        A read of whole lines with nothing waiting (a streamed token, nearly always) goes out
        as it is, without `cut`'s frame."""
        if self.pending or self.rewrite is not None or chunk[-1:] != b"\n":
            out = self.cut(chunk)
            return self.writer.chunk_now(out) if out else True
        writer = self.writer
        writer.event_open = chunk[-2:] != b"\n\n"
        return writer.chunk_now(chunk)


async def _push(lines: _Lines, response: UpstreamResponse, direct: DirectBody) -> None:
    direct.on_resume(response.resume)
    try:
        await response.pushed(lines.push)
    finally:
        direct.on_resume(None)


async def upstream_error_message(response: UpstreamResponse) -> str:
    """The message of a backend error body, in either error shape."""
    try:
        body = await response.read()
    except UpstreamError as exc:
        return exc.message
    return error_message_of(body, response.status)
