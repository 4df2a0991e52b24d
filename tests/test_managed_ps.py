"""Ollama's unload and process list over managed backends (issue 9), through a real gateway:
`keep_alive: 0` on a native request stops the managed process after it (Ollama: unload now),
and `/api/ps` lists the running managed processes' models beside what Ollama backends report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import ollama

from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, wait_until

FAKE = str(Path(__file__).parent / "support" / "fake_model_server.py")


def _managed(tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {"name": "local", "kind": "openai", "models": ["fake-model"], "managed": {
        "command": [sys.executable, FAKE, "--port", "{port}"], "health": {"interval_s": 0.02},
        "start_timeout_s": 10, "log_dir": str(tmp_path / "logs"), **options}}


def _status(gw: RunningGateway) -> tuple[str, str]:
    return gw.on_loop(lambda g: (g.registry.backends[0].state.value, g.registry.backends[0].lifecycle.reason))


def _native_chat(gw: RunningGateway, **extra: Any) -> httpx.Response:
    return httpx.post(gw.url + "/api/chat", json={**chat("hi", model="fake-model"), **extra}, headers=ALICE,
                      timeout=20)


def test_keep_alive_zero_stops_the_managed_process_after_the_request(gateways: GatewayFactory,
                                                                     tmp_path: Path) -> None:
    gw = gateways.start([_managed(tmp_path)])
    answer = _native_chat(gw, keep_alive=0)
    assert answer.status_code == 200 and answer.json()["done"] is True
    wait_until(lambda: _status(gw) == ("stopped", "keep_alive 0: unloaded"), "the unload", timeout=10)
    again = _native_chat(gw, keep_alive="0s")  # started again on demand, unloaded again
    assert again.status_code == 200
    wait_until(lambda: _status(gw)[0] == "stopped", "the second unload", timeout=10)


def test_other_keep_alive_values_leave_the_process_running(gateways: GatewayFactory, tmp_path: Path) -> None:
    gw = gateways.start([_managed(tmp_path)])
    for keep_alive in ("5m", -1, 30):
        assert _native_chat(gw, keep_alive=keep_alive).status_code == 200
    assert httpx.post(gw.url + "/v1/chat/completions", json={**chat("x", model="fake-model"), "keep_alive": 0},
                      headers=ALICE, timeout=20).status_code == 200  # not the native API: no unload
    assert _status(gw)[0] == "up"


def test_ps_lists_running_managed_models_and_ollama_ones(gateways: GatewayFactory, tmp_path: Path) -> None:
    with FakeBackend(models=["llama3:latest"]) as plain:
        gw = gateways.start([_managed(tmp_path, idle_ttl_s=300), {"name": "ollama", "url": plain.url}])
        client = ollama.Client(host=gw.url, headers=ALICE)
        assert client.ps().models == []  # stopped: nothing loaded
        assert _native_chat(gw).status_code == 200
        assert httpx.post(gw.url + "/api/chat", json=chat("x"), headers=ALICE, timeout=20).status_code == 200
        raw = httpx.get(gw.url + "/api/ps", headers=ALICE).json()["models"]
        assert [m["name"] for m in raw] == ["llama3:latest", "fake-model:latest"]
        managed = raw[1]
        assert {k: managed[k] for k in ("model", "size", "size_vram", "digest")} == {
            "model": "fake-model:latest", "size": 0, "size_vram": 0, "digest": ""}
        assert managed["details"]["family"] == "" and managed["expires_at"].endswith("Z")
        listed = client.ps().models  # the ollama client parses it
        assert [m.model for m in listed] == ["llama3:latest", "fake-model:latest"]
        stopped = httpx.post(gw.url + "/api/admin/models/local/stop", headers=ADMIN, timeout=20)
        assert stopped.status_code == 200
        assert [m["name"] for m in httpx.get(gw.url + "/api/ps", headers=ALICE).json()["models"]] == ["llama3:latest"]
