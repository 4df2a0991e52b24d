"""The proxy's HTTP/1.1 client against scripted raw-socket servers: framing, keep-alive,
stale connections, silence, HEAD, back-pressure and failures, each as a real TCP exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from seadragon_gw.backends.http1 import ConnectFailed, Pool, ResponseFailed
from seadragon_gw.backends.upstream import BackendTimedOut, BackendUnreachable, StreamBroken, Upstream
from tests.support.server import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Script:
    """A raw TCP server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Script:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def pool(self, read_timeout_s: float = 5.0, keepalive_s: float = 4.0) -> Pool:
        return Pool("127.0.0.1", self.port, f"127.0.0.1:{self.port}", 2.0, read_timeout_s, keepalive_s)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def test_keep_alive_reuses_one_connection_and_sends_host_and_length() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(head + body)
            writer.write(ok(b'{"n": %d}' % len(seen)))

    async with Script(handler) as script:
        pool = script.pool()
        for n in (1, 2, 3):
            response = await pool.request("POST", "/api/chat", [(b"content-type", b"application/json")], b"{}")
            assert response.status == 200 and await response.read() == b'{"n": %d}' % n
            response.release()
        await pool.close()
    assert script.connections == 1
    assert seen[0].startswith(b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}" in seen[0]


async def test_a_connection_closed_while_idle_is_replaced_without_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first" if handler.calls == 0 else b"again"))  # type: ignore[attr-defined]
        handler.calls += 1  # type: ignore[attr-defined]
        await writer.drain()
        # the server closes the kept-alive connection right after answering (idle timeout)

    handler.calls = 0  # type: ignore[attr-defined]
    async with Script(handler) as script:
        pool = script.pool()
        first = await pool.request("GET", "/", [], None)
        assert await first.read() == b"first"
        first.release()
        second = await pool.request("POST", "/x", [], b"body")
        assert await second.read() == b"again"
        second.release()
        await pool.close()
    assert script.connections == 2


async def test_chunked_and_close_delimited_bodies_arrive_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/chunked" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    async with Script(handler) as script:
        pool = script.pool()
        chunked = await pool.request("GET", "/chunked", [], None)
        assert await chunked.read() == b"hello world"
        chunked.release()
        closing = await pool.request("GET", "/close", [], None)
        assert await closing.read() == b"until the end"
        closing.release()
        await pool.close()


async def test_head_answers_have_no_body_even_with_a_length() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Script(handler) as script:
        pool = script.pool()
        response = await pool.request("HEAD", "/api/blobs/x", [], None)
        assert response.status == 200 and await response.read() == b""
        response.release()
        await pool.close()


async def test_a_chunked_request_body_is_streamed() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        received.append(await reader.readuntil(b"0\r\n\r\n"))
        writer.write(ok(b"stored"))
        await writer.drain()

    async def body() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defg"):
            yield part

    async with Script(handler) as script:
        pool = script.pool()
        response = await pool.request("POST", "/api/blobs/x", [], body())
        assert await response.read() == b"stored"
        response.release()
        await pool.close()
    assert received == [b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"]


async def test_a_request_body_that_fails_midway_closes_the_backend_connection() -> None:
    """A client gone mid-upload (or a limit cutting the body) must not leave the backend
    waiting for the rest of a half-sent chunked body on an open connection."""
    seen: list[bytes] = []
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen.append(await reader.read())  # everything until the gateway closes the connection
        closed.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("the client went away")

    async with Script(handler) as script:
        pool = script.pool()
        with pytest.raises(ConnectionResetError):
            await pool.request("POST", "/api/blobs/x", [], body())
        async with asyncio.timeout(5):
            await closed.wait()
        await pool.close()
    assert seen == [b"3\r\nabc\r\n"]  # the part sent, then EOF: no terminating chunk, no hang


async def test_a_pushed_body_reaches_the_sink_in_order_and_its_connection_is_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # the second part in a later read
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            await writer.drain()

    async with Script(handler) as script:
        pool = script.pool()
        for _ in range(2):
            got: list[bytes] = []
            response = await pool.request("GET", "/stream", [], None)
            await response.push(lambda data, into=got: into.append(data) is None)
            assert b"".join(got) == b"hello world" and len(got) >= 2
            response.release()
        await pool.close()
    assert script.connections == 1


async def test_a_sink_that_says_stop_pauses_reading_until_resumed() -> None:
    """The client side of the relay is full: the backend's bytes wait in the kernel, not in
    the gateway, until the sink's consumer drains."""
    first_seen, second_sent = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await first_seen.wait()
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")
        await writer.drain()
        second_sent.set()

    got: list[bytes] = []

    def sink(data: bytes) -> bool:
        got.append(data)
        first_seen.set()
        return False  # full after every part

    async with Script(handler) as script:
        pool = script.pool()
        response = await pool.request("GET", "/stream", [], None)
        done = response.push(sink)
        await second_sent.wait()
        for _ in range(20):  # loop turns in which an unpaused transport would have read it
            await asyncio.sleep(0.005)
        assert got == [b"one"] and not done.done()
        response.resume()
        await done
        assert got == [b"one", b"two"]
        response.release()
        await pool.close()


async def test_a_push_ends_with_the_failure_of_the_body_or_of_the_sink() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()  # then the connection closes mid-body

    async with Script(handler) as script:
        pool = script.pool()
        broken = await pool.request("GET", "/a", [], None)
        got: list[bytes] = []
        with pytest.raises(ResponseFailed, match="the backend closed the connection"):
            await broken.push(lambda data: got.append(data) is None)
        assert got == [b"one"]
        broken.release()

        def failing(data: bytes) -> bool:
            raise ValueError("the client side broke")

        refused = await pool.request("GET", "/b", [], None)
        with pytest.raises(ValueError, match="the client side broke"):
            await refused.push(failing)
        refused.release()
        await pool.close()


async def test_silence_before_the_head_and_mid_body_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/mid" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    async with Script(handler) as script:
        pool = script.pool(read_timeout_s=0.2)
        with pytest.raises(ResponseFailed) as before:
            await pool.request("GET", "/head", [], None)
        assert before.value.timed_out
        response = await pool.request("GET", "/mid", [], None)
        assert await response.chunk() == b"one"
        with pytest.raises(ResponseFailed) as mid:
            await response.chunk()
        assert mid.value.timed_out and mid.value.reason == "timed out"
        response.release()
        await pool.close()


async def test_silence_on_a_reused_connection_times_out_after_an_idle_spell() -> None:
    """The silence timer outlives a request on a kept-alive connection: while the connection
    waits in the pool it fires with nothing to watch, and a later request that the backend
    never answers still times out, on the same connection, and is not sent again on a new
    one (the backend has it: only a connection closed while idle is retried)."""
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            requests.append(head.split(b" ")[1])
            if len(requests) > 1:
                await asyncio.sleep(5)  # every later request: never answered
            writer.write(ok(b"first"))
            await writer.drain()

    async with Script(handler) as script:
        pool = script.pool(read_timeout_s=0.2)
        response = await pool.request("GET", "/one", [], None)
        assert await response.read() == b"first"
        response.release()
        await asyncio.sleep(0.5)  # longer than the read timeout, idle in the pool
        with pytest.raises(ResponseFailed) as silent:
            await pool.request("POST", "/two", [], b"{}")
        assert silent.value.timed_out
        assert requests == [b"/one", b"/two"] and script.connections == 1  # on the kept-alive connection
        await pool.close()


async def test_a_slow_consumer_pauses_reading_instead_of_buffering_everything() -> None:
    total = 8 * 1024 * 1024
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        sent.set()

    async with Script(handler) as script:
        pool = script.pool()
        response = await pool.request("GET", "/big", [], None)
        await asyncio.sleep(0.3)  # the consumer does nothing for a while
        assert not sent.is_set()  # the server is blocked by back-pressure
        got = 0
        while chunk := await response.chunk():
            got += len(chunk)
        assert got == total
        response.release()
        await pool.close()


async def test_refused_connect_and_broken_answers_map_to_typed_errors() -> None:
    port = free_port()
    upstream = Upstream("b0", f"http://127.0.0.1:{port}", 1.0, 1.0)
    with pytest.raises(BackendUnreachable) as refused:
        await upstream.open("GET", "/api/tags", [], None)
    assert refused.value.message == (f"backend 'b0' at http://127.0.0.1:{port} is unreachable "
                                     "(connection refused); is it running?")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/garbage" in head:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async with Script(handler) as script:
        upstream = Upstream("b1", f"http://127.0.0.1:{script.port}", 1.0, 1.0)
        with pytest.raises(StreamBroken, match=r"backend 'b1' at .* failed \(bad response from the backend"):
            await upstream.open("GET", "/garbage", [], None)
        response = await upstream.open("GET", "/cut", [], None)
        chunks = response.chunks()
        assert await anext(chunks) == b"partial"
        with pytest.raises(StreamBroken, match="stream broke"):
            await anext(chunks)
        await response.aclose()
        await upstream.aclose()


async def test_silence_is_backend_timed_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with Script(handler) as script:
        upstream = Upstream("b2", f"http://127.0.0.1:{script.port}", 1.0, 0.2)
        with pytest.raises(BackendTimedOut, match="timed out before answering"):
            await upstream.open("POST", "/api/chat", [], b"{}")
        await upstream.aclose()


async def test_connect_failures_carry_their_cause() -> None:
    pool = Pool("127.0.0.1", free_port(), "x", 1.0, 1.0)
    with pytest.raises(ConnectFailed) as caught:
        await pool.request("GET", "/", [], None)
    assert isinstance(caught.value.cause, ConnectionRefusedError)
