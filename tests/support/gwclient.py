"""Driving a running gateway from the test thread: request bodies, polling, background calls.

Queue tests need requests that block (they wait in the gateway's queue) while the test keeps
acting, so `GatewayClient.submit` runs one on a worker thread, with its own httpx client.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.conftest import FakeClock, GatewayFactory, RunningGateway

from .fakebackend import FakeBackend

T = TypeVar("T")


def chat(marker: str = "hello", *, model: str = "llama3", stream: bool | None = False) -> dict[str, Any]:
    """A chat body (valid on /api/chat and /v1/chat/completions) carrying `marker` as its content;
    `stream=None` leaves the field out."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": marker}]}
    if stream is not None:
        body["stream"] = stream
    return body


def markers(backend: FakeBackend) -> list[str]:
    """The marker of each inference request, in the order the backend received them."""
    return [r.json["messages"][0]["content"] for r in backend.inference_requests()]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def ndjson(lines: Iterable[str]) -> list[Any]:
    """Parse NDJSON lines; a blank line fails the parse, as it would in ollama-py."""
    return [orjson.loads(line) for line in lines]


def sse_data(lines: Iterable[str]) -> list[str]:
    """The payloads of the `data:` lines of an SSE stream."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


class GatewayClient:
    """A sync httpx client for one gateway plus a worker pool for calls that must wait."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.http = httpx.Client(base_url=url, headers=headers, timeout=10)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gw-call")

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, json=body, headers=headers)

    @contextmanager
    def stream(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """Returns as soon as the response headers are in; leaving early closes the connection."""
        with self.http.stream("POST", path, json=body, headers=headers) as response:
            yield response

    def submit(self, path: str, body: Any, headers: dict[str, str] | None = None,
               on_headers: threading.Event | None = None) -> Future[httpx.Response]:
        """POST on a worker thread; the result has its body read. `on_headers` is set the
        moment the response headers arrive, before the body."""
        hooks = {"response": [lambda _response: on_headers.set()]} if on_headers else {}

        def run() -> httpx.Response:
            with httpx.Client(base_url=self.url, headers=self.headers, timeout=10, event_hooks=hooks) as client:
                return client.post(path, json=body, headers=headers)

        return self.background(run)

    def background(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run any blocking call (a real client's stream, say) on a worker thread."""
        return self._pool.submit(fn, *args)

    def raw_post(self, path: str, body: Any) -> socket.socket:
        """Send a POST over a bare socket and return it unread, so the test can hang up at will."""
        parts = urlsplit(self.url)
        data = orjson.dumps(body)
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in self.headers.items())]
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + data)
        return sock

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self._pool.shutdown(wait=False)


class Fleet:
    """Gateways started once per test module, one per distinct queue config (and clock), all in
    front of one fake backend: gateway start-up is the slow part of these tests.

    `settle()` runs after each test: it releases the fake, waits until every gateway's queues
    and slots are empty, and forgets what the fake recorded, so tests cannot see each other.
    """

    def __init__(self, mktemp: Callable[[str], Path], backend: FakeBackend, headers: dict[str, str]) -> None:
        self._mktemp = mktemp
        self.backend = backend
        self.headers = headers
        self._running: dict[str, tuple[GatewayFactory, RunningGateway, GatewayClient]] = {}

    def get(self, clock: FakeClock | None = None, **queue: Any) -> tuple[RunningGateway, GatewayClient]:
        key = repr((id(clock) if clock else None, sorted(queue.items())))
        if key not in self._running:
            factory = GatewayFactory(self._mktemp("gw"))
            gw = factory.start([self.backend], clock=clock, queue=queue)
            self._running[key] = (factory, gw, GatewayClient(gw.url, self.headers))
        _, gw, client = self._running[key]
        return gw, client

    def settle(self) -> None:
        self.backend.reset()
        for _, gw, _ in self._running.values():
            wait_until(gw.drained, "the gateway to drain after the test")
        self.backend.wait_idle()
        self.backend.reset()

    def close(self) -> None:
        for factory, _, client in self._running.values():
            client.close()
            factory.close()


def fleet_fixtures(headers: dict[str, str]) -> tuple[Any, Any]:
    """`module_fleet, fleet = fleet_fixtures(ALICE)`: one Fleet per test module in front of
    one fake backend, settled after every test."""

    @pytest.fixture(scope="module")
    def module_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
        with FakeBackend() as backend:
            fleet = Fleet(tmp_path_factory.mktemp, backend, headers)
            yield fleet
            fleet.close()

    @pytest.fixture
    def fleet(module_fleet: Fleet) -> Iterator[Fleet]:
        yield module_fleet
        module_fleet.settle()

    return module_fleet, fleet
