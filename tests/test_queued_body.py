"""A request waiting in the queue keeps its body's bytes, not their parse, and is forwarded
exactly as if it had not waited: the body parsed again when its slot comes.

Parsed, a chat prompt of many messages takes several times the memory of its JSON text; with
thousands waiting that is most of the gateway's memory. Measured here with tracemalloc in the
test process, which runs the gateway's server thread."""

from __future__ import annotations

import gc
import socket
import tracemalloc
from typing import Any

import httpx
import orjson

from tests.conftest import ALICE, GatewayFactory
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, wait_until

WAITING = 20


def big_chat(marker: str, messages: int = 2000) -> dict[str, Any]:
    """~100 KB of JSON text: many short messages (each one a dict once parsed)."""
    history = [{"role": "user" if i % 2 else "assistant", "content": f"{marker} message number {i}"}
               for i in range(messages)]
    return {"model": "llama3", "messages": history, "stream": False}


def send_raw(port: int, body: bytes) -> socket.socket:
    """The request from a bare socket (no client-side buffers in the measured process but
    the socket's), left open and unread while it waits."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: " + ALICE["Authorization"].encode() +
                 b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def test_a_waiting_request_holds_about_its_body_not_its_parse(gateways: GatewayFactory,
                                                               backend: FakeBackend) -> None:
    gw = gateways.start([backend])
    port = int(gw.url.rsplit(":", 1)[1])
    body = orjson.dumps(big_chat("waiting"))
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        running = client.submit("/api/chat", big_chat("running"), {})
        backend.wait_waiting(1)
        sockets: list[socket.socket] = []
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            sockets = [send_raw(port, body) for _ in range(WAITING)]
            wait_until(lambda: gw.waiting() == WAITING, f"{WAITING} requests to queue")
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        per_request = sum(s.size_diff for s in after.compare_to(before, "filename")) / WAITING
        parsed = len(orjson.dumps(orjson.loads(body)))  # the same text
        assert parsed == len(body)
        # The bytes once, plus the request's own objects: 128 KB for this 116 KB body, where
        # keeping the parse took 774 KB (the parse alone is several times the text: next test).
        assert per_request < 1.5 * len(body), (per_request, len(body))
        backend.release()
        assert running.result(timeout=10).status_code == 200
        for sock in sockets:
            sock.settimeout(10)
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:80]
            sock.close()


def test_the_parse_the_queue_does_not_keep_is_several_times_the_text() -> None:
    """What the first test saves: the parsed form of that body, measured the same way."""
    body = orjson.dumps(big_chat("waiting"))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        parsed = orjson.loads(body)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(parsed["messages"]) == 2000
    assert size > 3 * len(body), (size, len(body))


def test_a_body_that_waited_reaches_the_backend_exactly_as_sent(gateways: GatewayFactory,
                                                                backend: FakeBackend) -> None:
    gw = gateways.start([backend])
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        running = client.submit("/api/chat", big_chat("running", 3), {})
        backend.wait_waiting(1)
        sent = big_chat("queued", 5) | {"options": {"temperature": 0.25}, "keep_alive": "5m"}
        queued = client.submit("/api/chat", sent, {})
        wait_until(lambda: gw.waiting() == 1, "the request to queue")
        backend.release()
        assert running.result(timeout=10).status_code == 200
        assert queued.result(timeout=10).status_code == 200
    bodies = [r.json for r in backend.inference_requests()]
    assert all(body is not None for body in bodies)
    assert [b for b in bodies if b is not None and b["messages"][0]["content"].startswith("queued")] == [sent]


def test_a_request_that_waited_for_an_openai_backend_still_gets_the_backends_model_name(
        gateways: GatewayFactory) -> None:
    """The rename needs the parsed body: it is parsed again when the slot comes."""
    with FakeBackend(models=("qwen:latest",), kind="openai") as fb:
        gw = gateways.start([fb])
        fb.hold()
        with GatewayClient(gw.url, ALICE) as client:
            body = {"model": "qwen", "messages": [{"role": "user", "content": "first"}]}
            running = client.submit("/v1/chat/completions", body, {})
            fb.wait_waiting(1)
            queued = client.submit("/v1/chat/completions", {**body, "messages": [{"role": "user", "content": "next"}]},
                                   {})
            wait_until(lambda: gw.waiting() == 1, "the request to queue")
            fb.release()
            assert running.result(timeout=10).status_code == 200
            reply = queued.result(timeout=10)
        assert reply.status_code == 200 and reply.json()["model"] == "qwen"
        last = fb.inference_requests()[-1].json
        assert last is not None
        assert last["model"] == "qwen:latest" and last["messages"] == [{"role": "user", "content": "next"}]
        assert httpx.get(gw.url + "/api/tags", headers=ALICE, timeout=10).status_code == 200
