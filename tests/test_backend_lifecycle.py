"""One backend lifecycle: explicit states, validated transitions, passive health, backends
added, drained and removed while the gateway runs, and what a user sees when a backend is
not there."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from seadragon_gw.backends.state import BackendLifecycle, BackendState, InvalidTransition, StateChange
from seadragon_gw.config import BackendConfig
from seadragon_gw.gateway import Gateway
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, ndjson, wait_until
from tests.support.server import free_port

S = BackendState


# -- the state machine ------------------------------------------------------------------
def test_transitions_follow_the_table_and_are_announced() -> None:
    seen: list[StateChange] = []
    life = BackendLifecycle("b", [seen.append], clock=lambda: 5.0)
    assert life.state is S.UNKNOWN
    assert life.move(S.UP, "answered") is True
    assert life.move(S.UP, "answered again") is False  # no change, no event
    life.move(S.DRAINING, "operator")
    life.move(S.REMOVED, "operator")
    assert [(c.old, c.new, c.reason) for c in seen] == [
        (S.UNKNOWN, S.UP, "answered"), (S.UP, S.DRAINING, "operator"), (S.DRAINING, S.REMOVED, "operator")]
    assert seen[0].at == 5.0 and seen[0].backend == "b"


@pytest.mark.parametrize("path, bad", [
    ([S.UP], S.STOPPED),             # a running backend is stopped through `stopping`
    ([S.UP, S.DRAINING, S.REMOVED], S.UP),  # removed is final
    ([S.STOPPED], S.UP),             # a stopped process must start first
    ([S.UP, S.STOPPING], S.UP),
])
def test_forbidden_transitions_raise(path: list[BackendState], bad: BackendState) -> None:
    life = BackendLifecycle("b")
    for state in path:
        life.move(state, "step")
    with pytest.raises(InvalidTransition, match=f"cannot go from {life.state.value} to {bad.value}"):
        life.move(bad, "nope")
    assert life.state is path[-1]


def test_state_changes_are_logged_at_info_and_down_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "seadragon_gw.backends")
    life = BackendLifecycle("b")
    life.move(S.UP, "answered")
    life.move(S.DOWN, "connection refused")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "backend b: unknown -> up (answered)"),
        ("WARNING", "backend b: up -> down (connection refused)")]


# -- a backend that is not there --------------------------------------------------------
def test_a_never_answering_star_backend_is_503_is_it_running(gateways: GatewayFactory,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "seadragon_gw.backends")
    port = free_port()
    gw = gateways.start([{"name": "local-ollama", "url": f"http://127.0.0.1:{port}"}])
    expected = (f"backend 'local-ollama' at http://127.0.0.1:{port} is unreachable (connection refused); "
                "is it running?")
    response = httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
    assert (response.status_code, response.json()) == (503, {"error": expected})
    assert response.headers["retry-after"] == "5"
    openai = httpx.post(gw.url + "/v1/chat/completions", json=chat(), headers=ALICE)
    assert openai.status_code == 503 and openai.json()["error"]["message"] == expected
    startup = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"backend local-ollama: unknown -> down ({expected})" in startup


def test_an_unknown_model_on_an_answering_backend_stays_404(gw: RunningGateway) -> None:
    response = httpx.post(gw.url + "/api/chat", json=chat(model="nope"), headers=ALICE)
    assert (response.status_code, response.json()) == (404, {"error": "model 'nope' not found"})


def test_health_with_a_healthy_backend(gw: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.get(gw.url + "/health", headers=ALICE)
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "healthy" and report["queue"] == {"waiting": 0, "processing": 0}
    assert report["backends"] == [{
        "name": "b0", "kind": "ollama", "url": backend.url, "state": "up", "healthy": True, "active": 0,
        "max_concurrent": 1, "models": 3, "error": None}]


# -- passive health ---------------------------------------------------------------------
def _health(gw: RunningGateway) -> dict[str, Any]:
    return {b["name"]: b for b in httpx.get(gw.url + "/health", headers=ALICE).json()["backends"]}


def test_a_failed_connect_marks_the_backend_down_at_once(gateways: GatewayFactory) -> None:
    backend = FakeBackend().start()
    port = backend.server.port
    gw = gateways.start([{"name": "b0", "url": backend.url, "health_interval_s": 3600}])
    assert _health(gw)["b0"]["state"] == "up"
    backend.stop()
    response = httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
    message = f"backend 'b0' at http://127.0.0.1:{port} is unreachable (connection refused); is it running?"
    assert (response.status_code, response.json()) == (502, {"error": message})
    health = _health(gw)["b0"]
    assert (health["state"], health["error"]) == ("down", message)


def test_an_answer_from_a_backend_marked_down_marks_it_up(gateways: GatewayFactory) -> None:
    port = free_port()
    gw = gateways.start([{"name": "b0", "url": f"http://127.0.0.1:{port}", "models": ["llama3"],
                          "health_interval_s": 3600}])
    assert _health(gw)["b0"]["state"] == "down"
    with FakeBackend(port=port) as backend:
        response = httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
        assert response.status_code == 200 and response.json()["done"] is True
        assert [r.path for r in backend.inference_requests()] == ["/api/chat"]
        assert _health(gw)["b0"]["state"] == "up"


# -- backends come and go at runtime ----------------------------------------------------
@pytest.fixture
def second() -> Any:
    with FakeBackend(models=["special:1b"]) as fake:
        yield fake


def _add(gw: RunningGateway, fake: FakeBackend, name: str = "b1") -> None:
    config = BackendConfig(name=name, url=fake.url, max_concurrent=1)

    async def add(g: Gateway) -> None:
        await g.registry.add(config)

    gw.await_on_loop(add)


def test_a_backend_added_at_runtime_serves_at_once(gw: RunningGateway, second: FakeBackend) -> None:
    special = chat(model="special:1b")
    assert httpx.post(gw.url + "/api/chat", json=special, headers=ALICE).status_code == 404
    _add(gw, second)
    response = httpx.post(gw.url + "/api/chat", json=special, headers=ALICE)
    assert response.status_code == 200 and response.json()["model"] == "special:1b"
    assert len(second.inference_requests()) == 1
    assert "special:1b" in [m["name"] for m in httpx.get(gw.url + "/api/tags").json()["models"]]
    assert _health(gw)["b1"]["state"] == "up"


def test_adding_a_backend_twice_is_a_conflict(gw: RunningGateway, second: FakeBackend) -> None:
    _add(gw, second)
    with pytest.raises(Exception, match="a backend named 'b1' exists already"):
        _add(gw, second)


def test_a_drained_backend_takes_no_new_work(gw: RunningGateway, second: FakeBackend) -> None:
    _add(gw, second)
    gw.on_loop(lambda g: g.registry.drain("b1"))
    response = httpx.post(gw.url + "/api/chat", json=chat(model="special:1b"), headers=ALICE)
    assert (response.status_code, response.json()) == (
        503, {"error": "every backend serving model 'special:1b' is draining; try again shortly"})
    assert second.inference_requests() == [] and _health(gw)["b1"]["state"] == "draining"
    gw.on_loop(lambda g: g.registry.undrain("b1"))
    wait_until(lambda: _health(gw)["b1"]["state"] == "up", "b1 to take work again")
    assert httpx.post(gw.url + "/api/chat", json=chat(model="special:1b"), headers=ALICE).status_code == 200


def test_removing_a_backend_waits_for_its_running_request(gw: RunningGateway, second: FakeBackend) -> None:
    _add(gw, second)
    second.hold()
    with GatewayClient(gw.url, ALICE) as client, ThreadPoolExecutor(1) as pool:
        running = client.submit("/api/chat", chat("running", model="special:1b"))
        second.wait_waiting(1)

        async def remove(g: Gateway) -> None:
            await g.registry.remove("b1")

        removing = pool.submit(gw.await_on_loop, remove)
        wait_until(lambda: _health(gw)["b1"]["state"] == "draining", "b1 to drain")
        assert not removing.done()
        second.release()
        assert running.result(5).status_code == 200
        removing.result(5)
    assert "b1" not in _health(gw)
    after = httpx.post(gw.url + "/api/chat", json=chat(model="special:1b"), headers=ALICE)
    assert (after.status_code, after.json()) == (404, {"error": "model 'special:1b' not found"})
    assert gw.on_loop(lambda g: [t.get_name() for t in _dispatchers(g)]) == ["dispatch:b0:0"]
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200


def _dispatchers(g: Gateway) -> list[Any]:
    return sorted((t for t in asyncio.all_tasks() if t.get_name().startswith("dispatch:")),
                  key=lambda t: t.get_name())


# -- restricted admin keys --------------------------------------------------------------
def test_a_model_restricted_admin_key_cannot_copy_or_create_outside_its_models(gw: RunningGateway,
                                                                                backend: FakeBackend) -> None:
    created = httpx.post(gw.url + "/api/admin/apikeys", headers=ADMIN,
                         json={"name": "ops", "is_admin": True, "allowed_models": ["llama3", "llama3:copy"]})
    assert created.status_code == 201
    key = {"X-API-Key": created.json()["key"]}
    copy = httpx.post(gw.url + "/api/copy", json={"source": "llama3", "destination": "other"}, headers=key)
    assert (copy.status_code, copy.json()) == (403, {"error": "this credential may not use model 'other'"})
    create = httpx.post(gw.url + "/api/create", json={"model": "llama3", "from": "qwen2.5:7b"}, headers=key)
    assert (create.status_code, create.json()) == (403, {"error": "this credential may not use model 'qwen2.5:7b'"})
    assert [r for r in backend.requests if r.path in ("/api/copy", "/api/create")] == []
    allowed = httpx.post(gw.url + "/api/copy", json={"source": "llama3", "destination": "llama3:copy"}, headers=key)
    assert allowed.status_code == 200
    assert [r.path for r in backend.requests if r.path == "/api/copy"] == ["/api/copy"]


# -- shutdown ---------------------------------------------------------------------------
def test_shutdown_past_the_grace_period_ends_open_streams_in_band(gateways: GatewayFactory,
                                                                  backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"shutdown_grace_s": 0.5})
    backend.hold_mid_stream()
    lines: list[str] = []
    with httpx.stream("POST", gw.url + "/api/chat", json=chat(stream=True), headers=ALICE,
                      timeout=15) as response:
        stream = response.iter_lines()
        lines.append(next(stream))
        stopper = threading.Thread(target=gw.server.stop)
        stopper.start()
        lines.extend(stream)
    stopper.join(15)
    backend.release()
    parsed = ndjson(lines)
    assert parsed[0]["done"] is False
    assert parsed[-1] == {"error": "the gateway is shutting down"}


# -- credentials in a backend URL -------------------------------------------------------
def test_a_password_in_a_backend_url_is_sent_as_basic_auth_and_never_shown(gateways: GatewayFactory) -> None:
    port = free_port()
    gw = gateways.start([{"name": "b0", "url": f"http://ops:s3cret%21@127.0.0.1:{port}", "models": ["llama3"],
                          "health_interval_s": 3600}])
    refused = httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE)
    assert refused.json() == {"error": f"backend 'b0' at http://127.0.0.1:{port} is unreachable "
                                       "(connection refused); is it running?"}
    with FakeBackend(port=port) as backend:
        assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200
        (sent,) = backend.inference_requests()
        assert sent.headers["authorization"] == "Basic b3BzOnMzY3JldCE="  # ops:s3cret!
    assert "s3cret" not in httpx.get(gw.url + "/health", headers=ADMIN).text
