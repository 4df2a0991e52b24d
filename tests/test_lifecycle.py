"""The request lifecycle through a real gateway: records, request ids, queue listing and
rejection, input checks on the forwarded routes, and shutdown of open streams."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from seadragon_gw.gateway import Gateway
from seadragon_gw.queue.errors import QueueCleared
from seadragon_gw.records.record import RequestRecord
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, ndjson, sse_data, wait_until


class Collected:
    """A record observer, subscribed on the gateway's loop."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def request_finished(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def wait(self, n: int) -> list[RequestRecord]:
        wait_until(lambda: len(self.records) >= n, f"{n} finished record(s)")
        with self._lock:
            return list(self.records)


@pytest.fixture
def observed(gw: RunningGateway) -> Collected:
    collected = Collected()
    gw.on_loop(lambda g: g.recorder.subscribe(collected))
    return collected


def waiting_count(gw: RunningGateway) -> int:
    return gw.on_loop(lambda g: g.scheduler.waiting())


# -- records ----------------------------------------------------------------------------
def test_a_non_stream_chat_is_recorded_once_with_its_numbers(gw: RunningGateway, observed: Collected) -> None:
    response = httpx.post(gw.url + "/api/chat", json=chat("hi"),
                          headers={**ALICE, "X-Client-ID": "cline-7", "X-Request-ID": "req-42"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-42"
    body = response.json()
    (record,) = observed.wait(1)
    assert (record.request_id, record.method, record.route) == ("req-42", "POST", "/api/chat")
    assert (record.credential_kind, record.credential_name, record.client_id) == ("token", "alice", "cline-7")
    assert (record.model, record.priority, record.stream, record.backend) == ("llama3", 2, False, "b0")
    assert (record.status, record.outcome, record.error) == (200, "ok", None)
    assert record.bytes_out == len(response.content)
    assert (record.prompt_tokens, record.completion_tokens) == (body["prompt_eval_count"], body["eval_count"])
    assert record.received_at <= record.queued_at <= record.granted_at <= record.first_byte_at <= record.finished_at


def test_a_stream_takes_its_tokens_from_the_final_chunk(gw: RunningGateway, observed: Collected) -> None:
    with httpx.stream("POST", gw.url + "/api/chat", json=chat("hi", stream=True), headers=ALICE) as response:
        lines = list(response.iter_lines())
    final = ndjson(lines)[-1]
    (record,) = observed.wait(1)
    assert record.stream and record.outcome == "ok"
    assert (record.prompt_tokens, record.completion_tokens) == (final["prompt_eval_count"], final["eval_count"])
    assert record.bytes_out == sum(len(line) + 1 for line in lines)


def test_openai_usage_is_read_from_the_usage_chunk(gw: RunningGateway, observed: Collected) -> None:
    body = {**chat("count me", stream=True), "stream_options": {"include_usage": True}}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=ALICE) as response:
        events = sse_data(response.iter_lines())
    usage = next(orjson.loads(e)["usage"] for e in events if e != "[DONE]" and orjson.loads(e).get("usage"))
    (record,) = observed.wait(1)
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_refused_requests_are_recorded_as_rejected(gw: RunningGateway, observed: Collected) -> None:
    assert httpx.post(gw.url + "/api/chat", json=chat()).status_code == 401
    assert httpx.post(gw.url + "/api/chat", json=chat(model="nope"), headers=ALICE).status_code == 404
    first, second = observed.wait(2)
    assert (first.outcome, first.status, first.credential_kind) == ("rejected", 401, None)
    assert (second.outcome, second.status, second.model) == ("rejected", 404, "nope")
    assert second.error == "model 'nope' not found"


def test_a_client_leaving_mid_stream_is_client_gone(gw: RunningGateway, backend: FakeBackend,
                                                    observed: Collected) -> None:
    backend.hold_mid_stream()
    with httpx.stream("POST", gw.url + "/api/chat", json=chat(stream=True), headers=ALICE) as response:
        next(response.iter_lines())
    backend.wait_disconnects(1)
    (record,) = observed.wait(1)
    assert (record.outcome, record.status) == ("client_gone", 200)


def test_a_broken_backend_stream_is_upstream_error(gw: RunningGateway, backend: FakeBackend,
                                                   observed: Collected) -> None:
    backend.fail_mid_stream = True
    with httpx.stream("POST", gw.url + "/api/chat", json=chat(stream=True), headers=ALICE) as response:
        last = ndjson(response.iter_lines())[-1]
    assert "stream broke" in last["error"]
    (record,) = observed.wait(1)
    assert record.outcome == "upstream_error" and "stream broke" in (record.error or "")


def test_a_queue_timeout_is_recorded(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], queue={"timeout_s": 0.3})
    collected = Collected()
    gw.on_loop(lambda g: g.recorder.subscribe(collected))
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        first = client.submit("/api/chat", chat("first"))
        backend.wait_waiting(1)
        late = client.post("/api/chat", chat("late"))
        assert late.status_code == 504
        assert late.json() == {"error": "timed out after 0.3s waiting in the queue for model 'llama3'"}
        backend.release()
        assert first.result(5).status_code == 200
    records = collected.wait(2)
    assert [r.outcome for r in records] == ["queue_timeout", "ok"]


# -- request ids ------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/health", {}, 200),
    ("GET", "/api/tags", {}, 200),
    ("POST", "/api/chat", {"json": chat()}, 401),
    ("POST", "/api/ollama/api/chat", {"json": chat()}, 401),  # the same handler, through Starlette
    ("POST", "/api/chat", {"json": chat(), "headers": ALICE}, 200),
    ("GET", "/no/such/route", {}, 404),
    ("POST", "/v1/chat/completions", {"content": b"{", "headers": ALICE}, 400),
    ("GET", "/api/admin/apikeys", {"headers": ALICE}, 403),
    ("POST", "/auth/token", {"data": {"username": "x", "password": "y"}}, 401),
])
def test_every_answer_carries_the_request_id(gw: RunningGateway, method: str, path: str,
                                             kwargs: dict[str, Any], status: int) -> None:
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": "trace-1.2:3"}
    response = httpx.request(method, gw.url + path, headers=headers, **kwargs)
    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == ["trace-1.2:3"]


@pytest.mark.parametrize("sent", [None, "has space", "x" * 129, "caf\u00e9", "<script>"])
def test_an_absent_or_odd_request_id_is_replaced(gw: RunningGateway, sent: str | None) -> None:
    headers = {"X-Request-ID": sent.encode("latin-1")} if sent else {}
    response = httpx.get(gw.url + "/api/tags", headers=headers)
    made = response.headers["x-request-id"]
    assert made != sent and len(made) == 24 and all(c in "0123456789abcdef" for c in made)
    assert httpx.get(gw.url + "/api/tags").headers["x-request-id"] != made


# -- queue listing and rejection --------------------------------------------------------
@pytest.fixture
def client(gw: RunningGateway) -> Iterator[GatewayClient]:
    with GatewayClient(gw.url, ALICE) as c:
        yield c


def _queue_two(gw: RunningGateway, backend: FakeBackend, client: GatewayClient) -> tuple[Any, Any, Any]:
    backend.hold()
    running = client.submit("/api/chat", chat("running"))
    backend.wait_waiting(1)
    plain = client.submit("/api/chat", chat("plain"), {"X-Client-ID": "app-1", "X-Request-ID": "wait-1"})
    wait_until(lambda: waiting_count(gw) == 1, "the first request to queue")
    streamed = client.submit("/api/chat", chat("streamed", stream=True), {"X-Priority": "low"})
    wait_until(lambda: waiting_count(gw) == 2, "the second request to queue")
    return running, plain, streamed


def test_waiting_requests_are_listed_in_order(gw: RunningGateway, backend: FakeBackend,
                                              client: GatewayClient) -> None:
    running, plain, streamed = _queue_two(gw, backend, client)

    def listing(g: Gateway) -> list[tuple[Any, ...]]:
        return [(w.model, w.position, w.priority, w.record.request_id if w.record else None,
                 w.record.client_id if w.record else None) for w in g.scheduler.waiting_requests()]

    rows = gw.on_loop(listing)
    assert rows[0] == ("llama3:latest", 1, 2, "wait-1", "app-1")
    assert rows[1][:3] == ("llama3:latest", 2, 3)
    backend.release()
    for future in (running, plain, streamed):
        assert future.result(5).status_code == 200


def test_reject_waiting_answers_every_waiting_request_and_spares_the_running_one(
        gw: RunningGateway, backend: FakeBackend, client: GatewayClient, observed: Collected) -> None:
    running, plain, streamed = _queue_two(gw, backend, client)
    assert gw.on_loop(lambda g: g.scheduler.reject_waiting(None, QueueCleared())) == 2
    cleared = plain.result(5)
    assert cleared.status_code == 503 and cleared.json() == {"error": "queue cleared by an administrator"}
    in_band = streamed.result(5)
    assert in_band.status_code == 200 and ndjson(in_band.text.splitlines()) == [
        {"error": "queue cleared by an administrator"}]
    assert waiting_count(gw) == 0 and not running.done()
    backend.release()
    assert running.result(5).status_code == 200
    outcomes = sorted(r.outcome or "" for r in observed.wait(3))
    assert outcomes == ["cleared", "cleared", "ok"]


def test_reject_waiting_for_one_model_leaves_the_others(gw: RunningGateway, backend: FakeBackend,
                                                        client: GatewayClient) -> None:
    backend.hold()
    running = client.submit("/api/chat", chat("running"))
    backend.wait_waiting(1)
    llama = client.submit("/api/chat", chat("llama"))
    wait_until(lambda: waiting_count(gw) == 1, "llama to queue")
    qwen = client.submit("/api/chat", chat("qwen", model="qwen2.5:7b"))
    wait_until(lambda: waiting_count(gw) == 2, "qwen to queue")
    assert gw.on_loop(lambda g: g.scheduler.reject_waiting("qwen2.5:7b", QueueCleared())) == 1
    assert qwen.result(5).status_code == 503 and waiting_count(gw) == 1
    backend.release()
    assert running.result(5).status_code == 200 and llama.result(5).status_code == 200


# -- input on forwarded routes ----------------------------------------------------------
@pytest.mark.parametrize("path, body, status, message", [
    ("/api/chat", {"model": 5, "messages": []}, 400, "model must be a string"),
    ("/api/chat", {"model": "llama3", "messages": [], "stream": "no"}, 400, "stream must be a boolean"),
    ("/api/generate", {"model": "llama3", "prompt": "x", "stream": 0}, 400, "stream must be a boolean"),
    ("/api/chat", {"messages": []}, 400, "model is required"),
    ("/api/chat", {"model": "  ", "messages": []}, 400, "model is required"),
])
def test_bad_fields_are_named(gw: RunningGateway, backend: FakeBackend, path: str, body: dict[str, Any],
                              status: int, message: str) -> None:
    response = httpx.post(gw.url + path, json=body, headers=ALICE)
    assert (response.status_code, response.json()) == (status, {"error": message})
    assert backend.inference_requests() == []


def test_openai_routes_name_bad_fields_in_their_shape(gw: RunningGateway) -> None:
    response = httpx.post(gw.url + "/v1/chat/completions", json={**chat(), "stream": "yes"}, headers=ALICE)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "stream must be a boolean"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw_digest, status", [
    ("sha256%3Fx=1", 400), ("sha256%23frag", 400), ("..", 400), ("sha256:" + "A" * 64, 400),
    ("sha256:" + "0" * 63, 400), ("md5:abc", 400), ("..%2F..%2Fapi%2Fdelete", 404),
])
def test_blob_digests_must_be_sha256_hex(gw: RunningGateway, backend: FakeBackend, raw_digest: str,
                                         status: int) -> None:
    with socket.create_connection((gw.server.host, gw.server.port), timeout=5) as sock:
        sock.sendall(f"POST /api/blobs/{raw_digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                     f"Authorization: Bearer tok-admin\r\nConnection: close\r\n\r\n".encode())
        reply = b"".join(iter(lambda: sock.recv(65536), b"")).decode("latin-1")
    assert reply.startswith(f"HTTP/1.1 {status} ")
    expected = "blob digest must be sha256:<64 lowercase hex digits>" if status == 400 else "not found"
    assert orjson.loads(reply.split("\r\n\r\n", 1)[1]) == {"error": expected}
    assert [r for r in backend.requests if r.path.startswith("/api/blobs")] == []


def test_a_well_formed_blob_digest_reaches_the_backend(gw: RunningGateway, backend: FakeBackend) -> None:
    digest = "sha256:" + "ab" * 32
    response = httpx.head(gw.url + f"/api/blobs/{digest}", headers=ADMIN)
    assert response.status_code == 404  # the fake has no such blob
    assert [r.path for r in backend.requests if r.path.startswith("/api/blobs")] == [f"/api/blobs/{digest}"]


def test_an_admission_step_refusing_after_admitting_gives_the_slot_back(gw: RunningGateway,
                                                                        observed: Collected) -> None:
    """A route's own admission step (proxy.forward's `admit=`) that refuses once the request
    holds a slot: the client gets the refusal and the slot is free again, never held for ever."""
    from seadragon_gw.api.proxy import Call, _admit, forward
    from seadragon_gw.errors import InvalidInput
    from seadragon_gw.lifecycle.route import INFERENCE

    async def admit_then_refuse(gateway: Gateway, call: Call, receive: Any) -> None:
        await _admit(gateway, call, receive)
        assert call.exchange is not None and call.exchange.leased  # it holds the free slot now
        raise InvalidInput("refused after admission")

    body = orjson.dumps({**chat(), "stream": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run(gateway: Gateway) -> None:
        headers = [(b"authorization", ALICE["Authorization"].encode()), (b"content-type", b"application/json")]
        scope = {"type": "http", "method": "POST", "path": "/api/chat", "query_string": b"",
                 "client": ("127.0.0.1", 1), "headers": headers, "seadragon.request_id": "adm-1"}
        await forward(gateway, INFERENCE["/api/chat"], scope, receive, send, admit=admit_then_refuse)

    gw.await_on_loop(run)
    assert sent[0]["status"] == 400 and orjson.loads(sent[1]["body"]) == {"error": "refused after admission"}
    assert gw.drained()
    assert [(r.outcome, r.status) for r in observed.wait(1)] == [("rejected", 400)]
