"""Managed backends through a real gateway: a request for a model whose process is stopped
starts it, waits in the queue and is served, with the native API translated; `/api/show`
answers for a model only an OpenAI-kind server knows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import ollama

from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat

FAKE = str(Path(__file__).parent / "support" / "fake_model_server.py")


def _managed(tmp_path: Path, *args: str, **options: Any) -> dict[str, Any]:
    return {"name": "local", "kind": "openai", "models": ["fake-model"], "max_concurrent": 1, "managed": {
        "command": [sys.executable, FAKE, "--port", "{port}", "--host", "{host}", *args],
        "health": {"interval_s": 0.02}, "start_timeout_s": 10, "log_dir": str(tmp_path / "logs"), **options}}


def _state(gw: RunningGateway) -> str:
    return gw.on_loop(lambda g: g.registry.backends[0].state.value)


def test_a_request_starts_the_stopped_process_and_is_served(gateways: GatewayFactory, tmp_path: Path) -> None:
    gw = gateways.start([_managed(tmp_path)])
    assert _state(gw) == "stopped"
    health = httpx.get(gw.url + "/health")
    assert health.status_code == 200  # an on-demand backend that is stopped can still serve
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat("wake up", model="fake-model"),
                          headers=ALICE, timeout=20)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert _state(gw) == "up"
    native = ollama.Client(host=gw.url, headers=ALICE).chat(
        model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert native.done is True and native.message.role == "assistant"


def test_a_process_that_never_gets_healthy_fails_the_waiting_request(gateways: GatewayFactory,
                                                                    tmp_path: Path) -> None:
    gw = gateways.start([_managed(tmp_path, "--warmup-s", "60", "--stderr", "out of memory",
                                  start_timeout_s=0.5)])
    response = httpx.post(gw.url + "/v1/chat/completions", json=chat(model="fake-model"), headers=ALICE,
                          timeout=20)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("managed backend local: not healthy within 0.5s") and "out of memory" in message
    assert _state(gw) == "crashed"

    def crash_entry() -> dict[str, Any] | None:  # the crash log is written in batches
        crashes = httpx.get(gw.url + "/api/admin/crashes", headers=ADMIN).json()["crashes"]
        return next((c for c in crashes if c["backend"] == "local" and "not healthy" in c["error"]), None)

    entry = poll(crash_entry, timeout=10, what="the failed start in the crash log")
    assert entry["kind"] == "backend_down" and "starting -> crashed" in entry["error"]
    assert "out of memory" in entry["error"]  # the last lines of the process's stderr


def test_show_answers_for_a_model_only_an_openai_server_has(gateways: GatewayFactory) -> None:
    with FakeBackend(kind="openai", models=["llama3:latest"]) as backend:
        gw = gateways.start([backend])
        card = ollama.Client(host=gw.url, headers=ALICE).show("llama3")
        assert card.details is not None and card.details.family == "openai-compatible"
        assert card.details.parameter_size == "" and card.capabilities is not None
        assert "tools" in card.capabilities and card.modelinfo == {"general.architecture": "openai-compatible"}
        assert [r for r in backend.requests if r.path == "/api/show"] == []
        missing = httpx.post(gw.url + "/api/show", json={"model": "nope"}, headers=ALICE)
        assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
        assert httpx.post(gw.url + "/api/show", json={"model": "llama3"}).status_code == 401


def test_show_is_still_forwarded_to_an_ollama_backend(gw: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.post(gw.url + "/api/show", json={"model": "llama3"}, headers=ALICE)
    assert response.status_code == 200
    assert [r.path for r in backend.requests if r.path == "/api/show"] == ["/api/show"]
