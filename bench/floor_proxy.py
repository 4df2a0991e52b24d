"""The floor: the least a Python proxy can do per request on this machine (bench target `floor`).

Not the gateway and not a product: a reverse proxy with no auth, no queue, no records, no
limits and no error handling beyond closing the socket, written as two `asyncio.Protocol`s on
uvloop with httptools parsing both sides, relaying synchronously from the parser callbacks (no
task, no future, no await per request or per chunk). Whatever it costs per request is what
CPython + uvloop + httptools + the four socket calls cost before any gateway logic, so issue 7's
"<= 5x nginx" can be read against it: if the floor is already near 5x, the target needs a
different runtime, not a better gateway.

    python bench/floor_proxy.py --port 8080 --backend-port 11434 [--burn-us 50]

`--burn-us N` (target `floor+N` in bench/run.py) spins N us of CPU per request before
forwarding it: a stand-in for the gateway's own work, to see how the cost of the same socket
calls grows once the proxy is the slowest process (its peers sleep and each write must wake
them) rather than faster than the load generator and the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the backend; relays one response at a time to `client`."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.chunked = False
        self.head: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None and self.client.transport is not None:
            self.client.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"transfer-encoding":
            self.chunked = True
        if lower not in (b"connection", b"keep-alive"):
            self.head.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        line = b"HTTP/1.1 %d OK\r\n" % status
        assert self.client is not None and self.client.transport is not None
        self.client.transport.write(line + b"".join(self.head) + b"\r\n")
        self.head = []

    def on_body(self, body: bytes) -> None:
        assert self.client is not None and self.client.transport is not None
        if self.chunked:
            self.client.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self.client.transport.write(body)

    def on_message_complete(self) -> None:
        assert self.client is not None and self.client.transport is not None
        if self.chunked:
            self.client.transport.write(b"0\r\n\r\n")
        self.client = None
        self.chunked = False
        self.pool.append(self)


class Client(asyncio.Protocol):
    """One client connection; each complete request goes to an idle upstream connection."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.head: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-type", b"authorization"):
            self.head.append(name + b": " + value + b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        method = self.parser.get_method()
        request = (b"%b %b HTTP/1.1\r\nHost: backend\r\nContent-Length: %d\r\n%b\r\n%b"
                   % (method, self.url, len(body), b"".join(self.head), body))
        self.url, self.head, self.body = b"", [], []
        if self.proxy.burn_s:
            self.proxy.burn()
        self.proxy.send(self, request)


class Proxy:
    def __init__(self, backend_port: int, burn_us: float = 0.0) -> None:
        self.backend_port = backend_port
        self.burn_s = burn_us / 1e6
        self.pool: list[Upstream] = []
        self.loop = asyncio.get_event_loop()

    def burn(self) -> None:
        """Spin for `burn_s` of CPU per request: a stand-in for a gateway's own work."""
        end = time.thread_time() + self.burn_s
        while time.thread_time() < end:
            pass

    def send(self, client: Client, request: bytes) -> None:
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = client
            assert upstream.transport is not None
            upstream.transport.write(request)
            return
        self.loop.create_task(self._connect_and_send(client, request))

    async def _connect_and_send(self, client: Client, request: bytes) -> None:
        _, upstream = await self.loop.create_connection(lambda: Upstream(self.pool), "127.0.0.1",
                                                        self.backend_port)
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(request)


async def serve(port: int, backend_port: int, burn_us: float) -> None:
    proxy = Proxy(backend_port, burn_us)
    server = await proxy.loop.create_server(lambda: Client(proxy), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--burn-us", type=float, default=0.0,
                        help="spin this many us of CPU per request (how syscall costs grow with the proxy's own work)")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.backend_port, args.burn_us))


if __name__ == "__main__":
    main()
