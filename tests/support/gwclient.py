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
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httpx
import orjson

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
    return [cast("dict[str, Any]", r.json)["messages"][0]["content"] for r in backend.inference_requests()]


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
