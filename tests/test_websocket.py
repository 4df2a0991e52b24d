"""Issue 8, seed 003's WebSocket streaming: `GET /api/ws` on a real gateway, driven with the
`websockets` client package; the same queue and slots as HTTP (the fake backend holds, sees
disconnects; `RunningGateway.active()` shows the slots)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from seadragon_gw.api.ws_frames import ROUTES
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat

TIMEOUT = 5


def ws_url(gw: RunningGateway, query: str = "") -> str:
    return gw.url.replace("http://", "ws://", 1) + "/api/ws" + query


@contextmanager
def open_ws(gw: RunningGateway, headers: dict[str, str] | None = None, query: str = "",
            ready: bool = True) -> Iterator[ClientConnection]:
    """A socket; with `ready`, authenticated (by header or address) and its `ready` read."""
    with connect(ws_url(gw, query), additional_headers=headers or {}, open_timeout=TIMEOUT, close_timeout=2) as ws:
        if ready:
            assert recv(ws) == {"type": "ready"}
        yield ws


@pytest.fixture
def alice_ws(gw: RunningGateway) -> Iterator[ClientConnection]:
    with open_ws(gw, ALICE) as ws:
        yield ws


def send(ws: ClientConnection, value: Any) -> None:
    ws.send(value if isinstance(value, str) else json.dumps(value))


def recv(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=TIMEOUT))


def start(ws: ClientConnection, request_id: str, body: dict[str, Any], route: str = "/api/chat") -> None:
    send(ws, {"id": request_id, "route": route, "body": body})


def until_end(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """Messages for `request_id` up to and including its last (done, error or cancelled)."""
    got: list[dict[str, Any]] = []
    while True:
        message = recv(ws)
        assert message.get("id") == request_id, message
        got.append(message)
        if {"done", "error", "cancelled"} & message.keys():
            return got


def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            ws.recv(timeout=TIMEOUT)
    received = caught.value.rcvd
    return (received.code, received.reason) if received is not None else (None, None)


def refused(gw: RunningGateway, headers: dict[str, str] | None = None, query: str = "") -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(gw, query), additional_headers=headers or {}, open_timeout=TIMEOUT)
    response = caught.value.response
    return response.status_code, json.loads(response.body)


# ------------------------------------------------------------------ streaming


def test_a_streamed_chat_sends_each_line_as_a_chunk_then_done_with_usage(
        alice_ws: ClientConnection, backend: FakeBackend) -> None:
    start(alice_ws, "1", chat("hello ws", stream=True))
    messages = until_end(alice_ws, "1")
    chunks = [m["chunk"] for m in messages[:-1]]
    assert all(set(m) == {"id", "chunk"} for m in messages[:-1])
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert "".join(c["message"]["content"] for c in chunks[:-1]) != ""
    usage = {"prompt_tokens": chunks[-1]["prompt_eval_count"], "completion_tokens": chunks[-1]["eval_count"]}
    assert messages[-1] == {"id": "1", "done": True, "usage": usage}
    assert backend.inference_requests()[0].json == chat("hello ws", stream=True)


def test_an_openai_stream_sends_each_sse_event_and_no_done_marker(
        alice_ws: ClientConnection) -> None:
    body = {**chat("sse", stream=True), "stream_options": {"include_usage": True}}
    start(alice_ws, "s", body, route="/v1/chat/completions")
    messages = until_end(alice_ws, "s")
    chunks = [m["chunk"] for m in messages[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]["usage"]
    assert messages[-1] == {"id": "s", "done": True,
                            "usage": {"prompt_tokens": usage["prompt_tokens"],
                                      "completion_tokens": usage["completion_tokens"]}}


def test_a_non_stream_request_sends_one_chunk_then_done(alice_ws: ClientConnection) -> None:
    start(alice_ws, "n", chat("whole", stream=False))
    messages = until_end(alice_ws, "n")
    assert len(messages) == 2
    answer = messages[0]["chunk"]
    assert answer["done"] is True and answer["message"]["role"] == "assistant"
    assert messages[1] == {"id": "n", "done": True, "usage": {"prompt_tokens": answer["prompt_eval_count"],
                                                              "completion_tokens": answer["eval_count"]}}


def test_two_requests_run_at_once_on_one_socket(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([{"name": "b0", "url": backend.url, "max_concurrent": 2}])
    backend.hold_mid_stream()
    with open_ws(gw, ALICE) as ws:
        start(ws, "a", chat("first", stream=True))
        start(ws, "b", chat("second", stream=True))
        firsts = {m["id"]: m for m in (recv(ws), recv(ws))}
        assert set(firsts) == {"a", "b"} and all("chunk" in m for m in firsts.values())
        backend.wait_waiting(2)
        assert gw.active() == [2]
        backend.release()
        ends: dict[str, Any] = {}
        while len(ends) < 2:
            message = recv(ws)
            if "done" in message:
                ends[message["id"]] = message
        assert set(ends) == {"a", "b"}
    poll(lambda: gw.active() == [0], what="both slots freed")


def test_a_request_waiting_for_the_only_slot_is_told_its_position(
        alice_ws: ClientConnection, gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    start(alice_ws, "held", chat("holds the slot", stream=True))
    backend.wait_waiting(1)
    start(alice_ws, "next", chat("waits", stream=True))
    assert recv(alice_ws) == {"id": "next", "queued": 1}
    assert gw.waiting() == 1
    backend.release()
    ends: set[str] = set()
    while len(ends) < 2:
        message = recv(alice_ws)
        if "done" in message:
            ends.add(message["id"])
    assert ends == {"held", "next"}


def test_a_waiting_request_is_told_again_every_queued_every_s(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], websocket={"queued_every_s": 0.05})
    backend.hold()
    with open_ws(gw, ALICE) as ws:
        start(ws, "held", chat("holds", stream=False))
        backend.wait_waiting(1)
        start(ws, "next", chat("waits", stream=False))
        assert [recv(ws) for _ in range(3)] == [{"id": "next", "queued": 1}] * 3
        backend.release()


# ------------------------------------------------------------------ cancel and close


def test_cancel_mid_stream_closes_the_upstream_and_frees_the_slot_at_once(
        alice_ws: ClientConnection, gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold_mid_stream()
    start(alice_ws, "1", chat("cancel me", stream=True))
    assert "chunk" in recv(alice_ws)
    backend.wait_waiting(1)
    send(alice_ws, {"type": "cancel", "id": "1"})
    assert recv(alice_ws) == {"id": "1", "cancelled": True}
    assert gw.active() == [0]
    backend.wait_disconnects(1)
    backend.release()
    start(alice_ws, "1", chat("the id is free again", stream=False))  # the socket goes on
    assert until_end(alice_ws, "1")[-1]["done"] is True


def test_cancel_of_a_waiting_request_takes_it_out_of_the_queue(
        alice_ws: ClientConnection, gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    start(alice_ws, "held", chat("holds", stream=True))
    backend.wait_waiting(1)
    start(alice_ws, "w", chat("waits", stream=True))
    assert recv(alice_ws) == {"id": "w", "queued": 1}
    send(alice_ws, {"type": "cancel", "id": "w"})
    assert recv(alice_ws) == {"id": "w", "cancelled": True}
    assert gw.waiting() == 0
    backend.release()
    assert until_end(alice_ws, "held")[-1]["done"] is True


def test_closing_the_socket_mid_stream_frees_the_slot(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold_mid_stream()
    with open_ws(gw, ALICE) as ws:
        start(ws, "1", chat("left", stream=True))
        assert "chunk" in recv(ws)
        backend.wait_waiting(1)
        assert gw.active() == [1]
    backend.wait_disconnects(1)
    poll(lambda: gw.active() == [0], what="the slot freed")
    backend.release()


def test_closing_the_socket_cancels_every_request_on_it(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([{"name": "b0", "url": backend.url, "max_concurrent": 1}])
    backend.hold_mid_stream()
    with open_ws(gw, ALICE) as ws:
        start(ws, "running", chat("running", stream=True))
        assert "chunk" in recv(ws)
        start(ws, "waiting", chat("waiting", stream=True))
        assert recv(ws) == {"id": "waiting", "queued": 1}
        assert gw.waiting() == 1
    backend.wait_disconnects(1)
    poll(lambda: gw.drained(), what="queue empty and slot free")
    backend.release()


# ------------------------------------------------------------------ authentication


def test_auth_by_first_message(gw: RunningGateway, backend: FakeBackend) -> None:
    with open_ws(gw, ready=False) as ws:
        send(ws, {"type": "auth", "token": "tok-alice"})
        assert recv(ws) == {"type": "ready"}
        start(ws, "1", chat("by message", stream=False))
        assert until_end(ws, "1")[-1]["done"] is True
        send(ws, {"type": "auth", "token": "tok-alice"})
        assert recv(ws) == {"error": "already authenticated"}
    assert "authorization" not in backend.inference_requests()[0].headers


def test_auth_message_with_a_wrong_token_closes_the_socket(gw: RunningGateway) -> None:
    with open_ws(gw, ready=False) as ws:
        send(ws, {"type": "auth", "token": "not-a-token"})
        assert recv(ws) == {"error": "unauthorized: missing or invalid credentials"}
        assert closed_with(ws) == (1008, "unauthorized: missing or invalid credentials")


def test_a_request_before_auth_closes_the_socket(gw: RunningGateway) -> None:
    with open_ws(gw, ready=False) as ws:
        start(ws, "1", chat("no auth"))
        message = 'authenticate first: {"type": "auth", "token": "..."}'
        assert recv(ws) == {"error": message}
        assert closed_with(ws) == (1008, message)


def test_no_auth_message_within_the_timeout_closes_the_socket(gateways: GatewayFactory,
                                                              backend: FakeBackend) -> None:
    gw = gateways.start([backend], websocket={"auth_timeout_s": 0.2})
    with open_ws(gw, ready=False) as ws:
        message = 'authentication timed out: send {"type": "auth", "token": ...} within 0.2 s'
        assert recv(ws) == {"error": message}
        assert closed_with(ws) == (1008, message)


def test_a_wrong_header_credential_refuses_the_upgrade(gw: RunningGateway) -> None:
    assert refused(gw, {"Authorization": "Bearer nope"}) == (
        401, {"error": "unauthorized: missing or invalid credentials"})


def test_a_token_in_the_url_is_refused_even_with_a_good_header(gw: RunningGateway) -> None:
    status, body = refused(gw, ALICE, query="?token=tok-alice")
    assert status == 400
    assert body == {"error": 'a credential in the URL is refused (URLs are logged): send it in the Authorization '
                             'header or as the first message {"type": "auth", "token": "..."}'}


def test_a_whitelisted_address_needs_no_credential_but_a_browser_there_does(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], websocket={"auth_timeout_s": 0.2})
    added = httpx.post(gw.url + "/api/admin/whitelist", json={"ip": "127.0.0.1"}, headers=ADMIN)
    assert added.status_code in (200, 201), added.text
    with open_ws(gw) as ws:  # from the whitelisted address: ready at once
        start(ws, "1", chat("whitelisted", stream=False))
        assert until_end(ws, "1")[-1]["done"] is True
    with open_ws(gw, {"Origin": "http://evil.example"}, ready=False) as ws:
        assert recv(ws)["error"].startswith("authentication timed out")


# ------------------------------------------------------------------ bad messages and limits


def test_bad_messages_get_an_error_and_the_socket_stays_open(
        alice_ws: ClientConnection, backend: FakeBackend) -> None:
    cases: list[tuple[Any, dict[str, Any]]] = [
        ("not json", {"error": "message is not JSON"}),
        ([1, 2], {"error": "message must be a JSON object"}),
        ({"route": "/api/chat", "body": {}}, {"error": "id is required (1 to 64 characters)"}),
        ({"id": 7, "route": "/api/chat", "body": {}}, {"error": "id must be a string (1 to 64 characters)"}),
        ({"id": "1", "route": "/api/nope", "body": {}},
         {"id": "1", "error": f"unknown route '/api/nope' (expected one of: {ROUTES})"}),
        ({"id": "1", "route": "/api/chat"}, {"id": "1", "error": "body must be a JSON object"}),
        ({"id": "1", "body": {}}, {"id": "1", "error": "route is required"}),
        ({"type": "shout", "id": "1"},
         {"id": "1", "error": "unknown message type 'shout' (expected 'request', 'cancel' or 'auth')"}),
        ({"type": "cancel", "id": "9"}, {"id": "9", "error": "no running request with id '9'"}),
        ({"id": "m", "route": "/api/chat", "body": chat(model="no-such-model")},
         {"id": "m", "error": "model 'no-such-model' not found"}),
        ({"id": "r", "route": "/api/chat", "body": {"messages": []}}, {"id": "r", "error": "model is required"}),
        ({"id": "s", "route": "/api/chat", "body": {**chat(), "stream": "yes"}},
         {"id": "s", "error": "stream must be a boolean"}),
    ]
    for message, answer in cases:
        send(alice_ws, message)
        assert recv(alice_ws) == answer, message
    start(alice_ws, "ok", chat("still open", stream=False))
    assert until_end(alice_ws, "ok")[-1]["done"] is True
    assert len(backend.inference_requests()) == 1


def test_a_duplicate_id_while_running_is_refused(alice_ws: ClientConnection, backend: FakeBackend) -> None:
    backend.hold_mid_stream()
    start(alice_ws, "1", chat("one", stream=True))
    assert "chunk" in recv(alice_ws)
    start(alice_ws, "1", chat("again", stream=True))
    assert recv(alice_ws) == {"id": "1", "error": "a request with id '1' is already running"}
    backend.release()
    assert until_end(alice_ws, "1")[-1]["done"] is True


def test_a_backend_error_is_the_request_s_error(alice_ws: ClientConnection, backend: FakeBackend) -> None:
    backend.respond_status(500, {"error": "model exploded"})
    start(alice_ws, "1", chat("boom", stream=True))
    assert until_end(alice_ws, "1") == [{"id": "1", "error": "model exploded"}]
    start(alice_ws, "2", chat("boom", stream=False))
    assert until_end(alice_ws, "2") == [{"id": "2", "error": "model exploded"}]


def test_a_stream_broken_mid_way_ends_with_an_error(alice_ws: ClientConnection, backend: FakeBackend) -> None:
    backend.fail_mid_stream = True
    start(alice_ws, "1", chat("breaks", stream=True))
    messages = until_end(alice_ws, "1")
    assert "chunk" in messages[0] and set(messages[-1]) == {"id", "error"}
    assert "Traceback" not in messages[-1]["error"]


def test_requests_per_socket_are_limited(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], websocket={"max_requests": 1})
    backend.hold()
    with open_ws(gw, ALICE) as ws:
        start(ws, "1", chat("one", stream=True))
        backend.wait_waiting(1)
        start(ws, "2", chat("two", stream=True))
        assert recv(ws) == {"id": "2", "error": "too many requests on this socket (limit 1): wait for one to end"}
        backend.release()
        assert until_end(ws, "1")[-1]["done"] is True


def test_a_message_over_max_body_bytes_closes_the_socket(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"max_body_bytes": 2048})
    with open_ws(gw, ALICE) as ws:
        start(ws, "1", chat("x" * 4096))
        assert closed_with(ws)[0] == 1009


def test_an_idle_socket_is_closed(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], websocket={"idle_timeout_s": 0.2})
    with open_ws(gw, ALICE) as ws:
        assert closed_with(ws) == (1000, "idle for longer than websocket.idle_timeout_s")

