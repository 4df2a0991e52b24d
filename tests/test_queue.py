"""The aging priority queue, seen from real clients through a real gateway and fake backend.

Ordering is made deterministic by holding the fake backend: one request occupies the only
slot, the requests under test queue behind it (each confirmed queued before the next is
sent), then a release lets the dispatcher pick them one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing
from typing import Any

import httpx
import httpx2  # the transport library of the openai client
import openai
import orjson
import pytest

from seadragon_gw.queue.errors import BUSY_MESSAGE
from tests.conftest import ALICE, TOKENS, FakeClock, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, markers, ndjson, sse_data, wait_until
from tests.support.shared import Fleet, fleet_fixtures

NATIVE = "/api/chat"
OPENAI = "/v1/chat/completions"


AGING_CLOCK = FakeClock()  # one clock for the aging gateway; each test only moves it forward


def as_user(name: str) -> dict[str, str]:
    entry = TOKENS[name]
    token = entry if isinstance(entry, str) else entry["token"]
    return {"Authorization": f"Bearer {token}"}


module_fleet, fleet = fleet_fixtures(ALICE)


def occupy(client: GatewayClient, backend: FakeBackend, path: str = NATIVE) -> Future[httpx.Response]:
    """Hold the backend and park a first request in its only slot."""
    backend.hold()
    first = client.submit(path, chat("first"))
    backend.wait_waiting(1)
    return first


def enqueue(client: GatewayClient, gw: RunningGateway, path: str, body: dict,
            headers: dict[str, str] | None = None, **kwargs: Any) -> Future[httpx.Response]:
    """Send a request and return once the gateway really has it in a queue."""
    before = gw.waiting()
    future = client.submit(path, body, headers, **kwargs)
    wait_until(lambda: gw.waiting() == before + 1, f"{body} to be queued")
    return future


def ok(*futures: Future[httpx.Response]) -> list[httpx.Response]:
    responses = [f.result(timeout=5) for f in futures]
    assert [r.status_code for r in responses] == [200] * len(responses)
    return responses


# ---------------------------------------------------------------- ordering


def test_priority_order(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    first = occupy(client, fleet.backend)
    queued = [enqueue(client, gw, NATIVE, chat(user), as_user(user)) for user in ("carol", "bob", "alice")]
    assert gw.waiting() == 3
    fleet.backend.release()
    ok(first, *queued)
    assert markers(fleet.backend) == ["first", "bob", "alice", "carol"]  # priorities 1, 2, 3


@pytest.mark.parametrize(("minutes", "order"), [
    (19.9, ["fresh-p1", "old-p3"]),   # 3 - 1.99 = 1.01 > 1
    (20.0, ["old-p3", "fresh-p1"]),   # 3 - 2.00 = 1.00 = 1: a tie keeps arrival order
    (20.1, ["old-p3", "fresh-p1"]),   # 3 - 2.01 = 0.99 < 1
    (21.0, ["old-p3", "fresh-p1"]),
])
def test_aging_old_low_priority_beats_fresh_high_priority(fleet: Fleet, minutes: float, order: list[str]) -> None:
    gw, client = fleet.queued(clock=AGING_CLOCK)  # aging_per_minute: 0.1 (the default)
    first = occupy(client, fleet.backend)
    old = enqueue(client, gw, NATIVE, chat("old-p3"), as_user("carol"))
    AGING_CLOCK.advance(minutes * 60)
    fresh = enqueue(client, gw, NATIVE, chat("fresh-p1"), as_user("bob"))
    fleet.backend.release()
    ok(first, old, fresh)
    assert markers(fleet.backend) == ["first", *order]


def test_latest_alias_shares_one_queue_and_echoes_name(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    first = occupy(client, fleet.backend)
    bare = enqueue(client, gw, NATIVE, chat("bare", model="llama3"))
    tagged = enqueue(client, gw, NATIVE, chat("tagged", model="llama3:latest"))
    assert gw.waiting(("llama3:latest", "ollama")) == 2
    assert gw.on_loop(lambda g: list(g.scheduler.queues)) == [("llama3:latest", "ollama")]
    fleet.backend.release()
    _, bare_reply, tagged_reply = ok(first, bare, tagged)
    assert bare_reply.json()["model"] == "llama3"
    assert tagged_reply.json()["model"] == "llama3:latest"
    assert markers(fleet.backend) == ["first", "bare", "tagged"]


def test_two_backends_share_load(gateways: GatewayFactory, backend: FakeBackend) -> None:
    with FakeBackend() as other:
        gw = gateways.start([backend, other])  # both serve llama3, max_concurrent 1 each
        with closing(GatewayClient(gw.url, ALICE)) as client:
            backend.hold()
            other.hold()
            calls = [client.submit(NATIVE, chat(f"req{i}")) for i in range(2)]
            backend.wait_waiting(1)
            other.wait_waiting(1)
            assert gw.active() == [1, 1]
            assert gw.waiting() == 0
            backend.release()
            other.release()
            ok(*calls)
        assert sorted(markers(backend) + markers(other)) == ["req0", "req1"]
        assert len(markers(backend)) == len(markers(other)) == 1


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("path", [NATIVE, OPENAI])
def test_queue_full_is_503_with_retry_after(fleet: Fleet, path: str) -> None:
    gw, client = fleet.queued(max_waiting=1)
    first = occupy(client, fleet.backend, path)
    second = enqueue(client, gw, path, chat("second"))
    refused = client.post(path, chat("third"))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    if path == NATIVE:
        assert refused.json() == {"error": BUSY_MESSAGE}
    else:
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"] == BUSY_MESSAGE
        assert isinstance(error["type"], str)
    fleet.backend.release()
    ok(first, second)
    assert markers(fleet.backend) == ["first", "second"]


def test_queue_timeout_non_stream_is_504(fleet: Fleet) -> None:
    gw, client = fleet.queued(timeout_s=0.5)
    first = occupy(client, fleet.backend)
    late = client.post(NATIVE, chat("late"))
    assert late.status_code == 504
    message = late.json()["error"]
    assert "timed out" in message and "queue" in message and "llama3" in message
    assert gw.waiting() == 0
    fleet.backend.release()
    ok(first)
    assert markers(fleet.backend) == ["first"]


def test_queue_timeout_stream_ends_with_inband_error(fleet: Fleet) -> None:
    gw, client = fleet.queued(timeout_s=0.5)
    first = occupy(client, fleet.backend)
    with client.stream(NATIVE, chat("late", stream=True)) as response:
        assert response.status_code == 200  # early headers: the status went out while queued
        lines = ndjson(response.iter_lines())
    assert len(lines) == 1 and set(lines[0]) == {"error"}
    assert "timed out" in lines[0]["error"] and "queue" in lines[0]["error"]
    assert gw.waiting() == 0
    fleet.backend.release()
    ok(first)
    assert markers(fleet.backend) == ["first"]


# ---------------------------------------------------------------- early headers and keepalives


def test_early_headers_arrive_while_backend_is_held(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    first = occupy(client, fleet.backend)
    with client.stream(NATIVE, chat("queued", stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["x-queue-position"] == "1"
        assert gw.waiting() == 1 and markers(fleet.backend) == ["first"]  # still queued
        fleet.backend.release()
        lines = ndjson(response.iter_lines())
    assert lines[-1]["done"] is True and not any(line["done"] for line in lines[:-1])
    ok(first)
    assert markers(fleet.backend) == ["first", "queued"]


@pytest.mark.parametrize(("path", "stream", "early"), [
    (NATIVE, True, False),   # early headers switched off
    (NATIVE, False, True),   # non-streaming requests never get early headers
    (OPENAI, False, True),
])
def test_headers_wait_for_dispatch(fleet: Fleet, path: str, stream: bool, early: bool) -> None:
    gw, client = fleet.queued(early_headers=early)
    first = occupy(client, fleet.backend, path)
    headers_in = threading.Event()
    queued = enqueue(client, gw, path, chat("queued", stream=stream), on_headers=headers_in)
    assert not headers_in.wait(0.3), "response headers were sent while the request was still queued"
    fleet.backend.release()
    _, response = ok(first, queued)
    assert headers_in.is_set() and "x-queue-position" not in response.headers
    assert markers(fleet.backend) == ["first", "queued"]


def test_sse_keepalive_comments_before_data(fleet: Fleet) -> None:
    gw, client = fleet.queued(sse_keepalive_s=0.2)
    first = occupy(client, fleet.backend, OPENAI)
    lines: list[str] = []
    with client.stream(OPENAI, chat("queued", stream=True)) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                fleet.backend.release()  # the first keepalive is in: now let the data come
    assert lines[0] == ": queued"
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert all(line in (": queued", "") for line in lines[:first_data])
    assert ": queued" not in lines[first_data:]
    assert sse_data(lines)[-1] == "[DONE]"
    ok(first)


class Tap(httpx2.HTTPTransport):
    """Records the raw bytes the openai client reads, to see the keepalives it skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = bytearray()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        inner, seen = response.stream, self.seen

        class Tapped(httpx2.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in inner:
                    seen.extend(chunk)
                    yield chunk

            def close(self) -> None:
                inner.close()

        response.stream = Tapped()
        return response


def test_sse_keepalive_openai_client_parses_stream(fleet: Fleet) -> None:
    gw, client = fleet.queued(sse_keepalive_s=0.2)
    first = occupy(client, fleet.backend, OPENAI)
    tap = Tap()
    with httpx2.Client(transport=tap) as http:
        oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="tok-alice", max_retries=0, timeout=10,
                            http_client=http)
        stream = oai.chat.completions.create(model="llama3", messages=chat("queued")["messages"], stream=True)
        chunks = client.background(list, stream)  # the headers came early; the chunks wait
        wait_until(lambda: b": queued" in tap.seen, "a keepalive comment")
        fleet.backend.release()
        text = "".join(c.choices[0].delta.content or "" for c in chunks.result(timeout=5) if c.choices)
    assert text == "chunk0 chunk1 chunk2 "
    assert tap.seen.index(b": queued") < tap.seen.index(b"data:")
    ok(first)


# ---------------------------------------------------------------- disconnects


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_while_waiting_leaves_queue(fleet: Fleet, stream: bool) -> None:
    gw, client = fleet.queued()
    first = occupy(client, fleet.backend)
    sock = client.raw_post(NATIVE, chat("gone", stream=stream))
    wait_until(lambda: gw.waiting() == 1, "the raw request to be queued")
    sock.close()
    wait_until(lambda: gw.waiting() == 0, "the abandoned request to leave the queue")
    fleet.backend.release()
    ok(first)
    assert client.post(NATIVE, chat("after")).status_code == 200  # the slot was not leaked
    assert markers(fleet.backend) == ["first", "after"]


def test_disconnect_mid_stream_frees_slot(fleet: Fleet) -> None:
    gw, client = fleet.queued()
    fleet.backend.hold_mid_stream()
    with client.stream(NATIVE, chat("first", stream=True)) as response:
        assert orjson.loads(next(response.iter_lines()))["done"] is False
    fleet.backend.wait_disconnects(1)  # the gateway closed its upstream request
    wait_until(lambda: gw.active() == [0], "the slot to be freed")
    with client.stream(NATIVE, chat("second", stream=True)) as response:  # dispatched at once
        lines = response.iter_lines()
        assert orjson.loads(next(lines))["done"] is False
        fleet.backend.wait_waiting(1)  # parks just after sending its first line
        assert markers(fleet.backend) == ["first", "second"]
        fleet.backend.release()
        assert ndjson(lines)[-1]["done"] is True
    assert client.post(NATIVE, chat("third")).status_code == 200
