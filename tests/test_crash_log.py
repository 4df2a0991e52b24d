"""The crash log and the missing-models log through a real gateway.

Backend failures (a stopped backend, a stream broken mid-answer, a 5xx) and backends going
down are entries without a stack trace; an exception inside the gateway is an entry with its
traceback, while its client gets a plain 500. Requests for a model no backend serves are
counted per model and client. Seed 004's paths (`/admin/crashes`, `/admin/missing-models`)
answer the same as the `/api/admin/...` ones.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from seadragon_gw.gateway import Clocks
from tests.conftest import ADMIN, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error, no_trace, openai_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import ndjson
from tests.support.identity import bearer

NOON = 1_800_014_400.0  # 2027-01-15T12:00:00Z
ALICE = bearer("tok-alice")


def chat(model: str = "llama3", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def iso(offset: float) -> str:
    return f"2027-01-15T12:00:{offset:02.0f}+00:00"


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
def gw(gateways: GatewayFactory, backend: FakeBackend, wall: FakeClock) -> RunningGateway:
    return gateways.start([backend], clocks=Clocks(wall=wall), usage={"flush_s": 0.05})


def crashes(gw: RunningGateway, path: str = "/api/admin/crashes", **params: str) -> list[dict[str, Any]]:
    response = httpx.get(gw.url + path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["crashes"]
    return entries


def crashes_when(gw: RunningGateway, n: int) -> list[dict[str, Any]]:
    """The crash log once it has `n` entries: a record is finished just after its last byte."""
    found: list[dict[str, Any]] = poll(lambda: (lambda e: e if len(e) >= n else None)(crashes(gw)),
                                       what=f"{n} crash entries")
    return found


def missing(gw: RunningGateway, path: str = "/api/admin/missing-models", **params: str) -> list[dict[str, Any]]:
    response = httpx.get(gw.url + path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["missing_models"]
    return entries


# ------------------------------------------------------------------ backend failures


def test_a_stopped_backend_is_a_crash_entry_and_a_backend_down_entry(gw: RunningGateway,
                                                                      backend: FakeBackend) -> None:
    backend.stop()
    response = httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
    message = native_error(response, 502)
    assert message.startswith("backend 'b0' at ") and "unreachable" in message, message
    entries = crashes_when(gw, 2)
    by_kind = {e["kind"]: e for e in entries}
    assert by_kind["upstream_error"] == {
        "timestamp": iso(0), "error": message, "model": "llama3", "request_id": response.headers["x-request-id"],
        "stack_trace": None, "kind": "upstream_error", "backend": "b0", "route": "/api/chat", "status": 502}
    down = by_kind["backend_down"]
    assert down["error"].startswith("backend b0: up -> down (") and down["stack_trace"] is None
    assert (down["backend"], down["model"], down["request_id"]) == ("b0", None, None)
    assert crashes(gw, "/admin/crashes") == entries


def test_a_stream_broken_mid_answer_is_a_crash_entry(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.fail_mid_stream = True
    with httpx.stream("POST", gw.url + "/api/chat", json=chat(stream=True), headers=ALICE) as response:
        assert response.status_code == 200
        lines = ndjson(response.iter_lines())
    error = lines[-1]["error"]
    (entry,) = crashes_when(gw, 1)
    assert entry == {"timestamp": iso(0), "error": error, "model": "llama3",
                     "request_id": response.headers["x-request-id"], "stack_trace": None,
                     "kind": "upstream_error", "backend": "b0", "route": "/api/chat", "status": 200}
    assert "stream broke" in error, error


def test_a_backend_5xx_is_a_crash_entry(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.respond_status(503, {"error": "model is loading"})
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(), headers=ALICE)
    assert response.status_code == 503
    (entry,) = crashes_when(gw, 1)
    assert (entry["kind"], entry["error"], entry["status"], entry["route"]) == (
        "upstream_error", "backend 'b0' answered HTTP 503", 503, "/v1/chat/completions")


def test_answers_that_did_not_fail_upstream_are_not_crashes(gw: RunningGateway) -> None:
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200
    assert httpx.post(gw.url + "/api/chat", json=chat("nope"), headers=ALICE).status_code == 404
    poll(lambda: missing(gw), what="the 404 in the missing-models log")  # both records are in
    assert crashes(gw) == []


# ------------------------------------------------------------------ internal errors


def test_an_internal_error_keeps_its_traceback_for_the_operator_only(gw: RunningGateway,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(params: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr("seadragon_gw.api.usage_routes.parse_usage_query", broken)
    response = httpx.get(gw.url + "/api/admin/usage", headers=ADMIN)
    assert native_error(response, 500) == "internal error"
    no_trace(response)
    (entry,) = crashes(gw)
    trace = entry.pop("stack_trace")
    assert entry == {"timestamp": iso(0), "error": "RuntimeError: injected fault", "model": None,
                     "request_id": response.headers["x-request-id"], "kind": "internal_error", "backend": None,
                     "route": "/api/admin/usage", "status": 500}
    assert trace.startswith("Traceback (most recent call last):")
    assert 'usage_routes.py", line' in trace and trace.rstrip().endswith("RuntimeError: injected fault")


def injected_fault(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("injected fault")


@pytest.mark.parametrize(("path", "target", "headers", "parse"), [
    ("/api/chat", "seadragon_gw.api.proxy.parse_json_object", {}, native_error),
    ("/v1/chat/completions", "seadragon_gw.api.proxy.parse_json_object", {}, openai_error),
    ("/api/chat", "seadragon_gw.api.jobs_routes._submit_async", {"Prefer": "respond-async"}, native_error),
], ids=["native", "openai", "async-job"])
def test_an_internal_error_on_a_forwarded_route_is_answered_and_kept(
        gw: RunningGateway, monkeypatch: pytest.MonkeyPatch, path: str, target: str, headers: dict[str, str],
        parse: Any) -> None:
    """The forwarded routes answer their own bugs (the fast path has no Starlette handler
    above them): a 500 "internal error" in the route's shape with the request id, the
    traceback in the crash log only."""
    monkeypatch.setattr(target, injected_fault)
    response = httpx.post(gw.url + path, json=chat(), headers={**ALICE, **headers, "X-Request-Id": "bug-1"})
    assert parse(response, 500) == "internal error"
    assert response.headers["x-request-id"] == "bug-1"
    (entry,) = crashes(gw)
    assert (entry["kind"], entry["error"], entry["request_id"], entry["route"], entry["status"]) == (
        "internal_error", "RuntimeError: injected fault", "bug-1", path, 500)
    assert entry["stack_trace"].rstrip().endswith("RuntimeError: injected fault")


def test_an_internal_error_after_admission_gives_the_slot_back_and_ends_the_record(
        gateways: GatewayFactory, backend: FakeBackend, wall: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault after the request took the backend's only slot, before the relay's own
    clean-up runs: the slot is free for the next request, and the request is not left
    "processing" in the in-flight gauge."""
    gw = gateways.start([backend], clocks=Clocks(wall=wall), queue={"timeout_s": 3})
    monkeypatch.setattr("seadragon_gw.api.proxy.DisconnectWatch", injected_fault)
    assert native_error(httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE), 500) == "internal error"
    monkeypatch.undo()
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE, timeout=10).status_code == 200

    def none_processing() -> bool:
        text = httpx.get(gw.url + "/metrics", headers=ADMIN).text
        assert "# TYPE seadragon_queue_processing gauge" in text
        counts = [line for line in text.splitlines() if line.startswith("seadragon_queue_processing{")]
        return all(line.endswith(" 0.0") for line in counts)  # a model with none processing is left out

    poll(none_processing, what="no request left processing")


def test_an_internal_error_mid_stream_ends_the_stream_in_band(gw: RunningGateway, backend: FakeBackend,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("seadragon_gw.api.relay.relay_stream", injected_fault)
    with httpx.stream("POST", gw.url + "/api/chat", json=chat(stream=True), headers=ALICE) as response:
        assert response.status_code == 200  # the stream's head had gone out
        lines = ndjson(response.iter_lines())
    assert lines[-1] == {"error": "internal error"}
    (entry,) = crashes(gw)
    assert entry["error"] == "RuntimeError: injected fault" and entry["route"] == "/api/chat"
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200  # its slot is back


def test_crashes_are_newest_first_and_limited(gw: RunningGateway, backend: FakeBackend, wall: FakeClock) -> None:
    for n, status in enumerate((500, 502, 503), start=1):
        backend.respond_status(status, {"error": "x"})
        httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
        crashes_when(gw, n)
        wall.advance(1)
    assert [e["status"] for e in crashes(gw)] == [503, 502, 500]
    assert [e["status"] for e in crashes(gw, limit="2")] == [503, 502]
    for bad in ("0", "1001", "ten"):
        response = httpx.get(gw.url + "/api/admin/crashes", params={"limit": bad}, headers=ADMIN)
        assert native_error(response, 400) == f"limit: must be a whole number from 1 to 1000, got '{bad}'"
    assert native_error(httpx.get(gw.url + "/admin/crashes", headers=ALICE), 403) == (
        "forbidden: this route needs an admin credential")


# ------------------------------------------------------------------ missing models


def test_missing_models_are_counted_per_model_and_client(gw: RunningGateway, wall: FakeClock) -> None:
    response = httpx.post(gw.url + "/api/chat", json=chat("nope"), headers=ALICE)
    assert native_error(response, 404) == "model 'nope' not found"
    poll(lambda: [e["count"] for e in missing(gw)] == [1], what="the first one written")  # the next adds to it
    wall.advance(1)
    httpx.post(gw.url + "/api/generate", json={"model": "nope:latest", "prompt": "hi"}, headers=ALICE)
    poll(lambda: [e["count"] for e in missing(gw)] == [2], what="the second one counted")
    wall.advance(1)
    httpx.post(gw.url + "/api/chat", json=chat("Nope"), headers={**bearer("tok-bob"), "X-Client-ID": "ide"})
    poll(lambda: len(missing(gw)) == 2, what="bob's entry")
    wall.advance(1)
    openai = httpx.post(gw.url + "/v1/chat/completions", json=chat("gpt-9"), headers=bearer("tok-carol"))
    assert openai_error(openai, 404) == "model 'gpt-9' not found"
    assert httpx.post(gw.url + "/api/chat", json=chat("llama3"), headers=ALICE).status_code == 200  # not missing
    poll(lambda: len(missing(gw)) == 3, what="carol's entry")
    assert missing(gw) == [
        {"model_name": "gpt-9", "client_id": "token:carol", "timestamp": iso(3), "count": 1,
         "first_seen": iso(3), "last_seen": iso(3)},
        {"model_name": "Nope", "client_id": "ide", "timestamp": iso(2), "count": 1,
         "first_seen": iso(2), "last_seen": iso(2)},
        {"model_name": "nope:latest", "client_id": "token:alice", "timestamp": iso(1), "count": 2,
         "first_seen": iso(0), "last_seen": iso(1)},
    ]
    assert missing(gw, "/admin/missing-models", limit="1") == missing(gw)[:1]
