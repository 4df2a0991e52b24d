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


def _model(gw: RunningGateway) -> dict[str, Any]:
    (model,) = httpx.get(gw.url + "/api/admin/models", headers=ADMIN).json()["models"]
    return dict(model)


def _generations(gw: RunningGateway) -> int:
    """Completions the process was asked for, from its own log (it logs each request)."""
    lines = httpx.get(gw.url + "/api/admin/models/local/logs?lines=1000", headers=ADMIN).json()["lines"]
    return sum("POST /v1/chat/completions" in line for line in lines)


def _without_time(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body = dict(answer.json())
    assert body.pop("created_at").endswith("Z")
    return body


def test_ollama_stop_is_answered_as_ollama_does_and_stops_the_process_without_a_generation(
        gateways: GatewayFactory, tmp_path: Path) -> None:
    """`ollama stop M` sends `{"model": M, "keep_alive": 0}` to /api/generate, no prompt."""
    gw = gateways.start([_managed(tmp_path)])
    unload = {"model": "fake-model", "keep_alive": 0}
    idle = httpx.post(gw.url + "/api/generate", json=unload, headers=ALICE, timeout=20)
    assert _without_time(idle) == {"model": "fake-model", "response": "", "done": True, "done_reason": "unload"}
    assert (_model(gw)["status"], _model(gw)["pid"]) == ("stopped", None)  # not started to be stopped
    assert _native_chat(gw).status_code == 200
    answer = httpx.post(gw.url + "/api/generate", json=unload, headers=ALICE, timeout=20)
    assert _without_time(answer) == {"model": "fake-model", "response": "", "done": True, "done_reason": "unload"}
    wait_until(lambda: _status(gw) == ("stopped", "keep_alive 0: unloaded"), "the unload", timeout=10)
    assert _generations(gw) == 1  # the chat's: the unload generated nothing


def test_a_generate_without_prompt_loads_the_model_and_answers_load(gateways: GatewayFactory,
                                                                    tmp_path: Path) -> None:
    gw = gateways.start([_managed(tmp_path)])
    loaded = httpx.post(gw.url + "/api/generate", json={"model": "fake-model"}, headers=ALICE, timeout=20)
    assert _without_time(loaded) == {"model": "fake-model", "response": "", "done": True, "done_reason": "load"}
    assert _status(gw)[0] == "up"
    chat_load = httpx.post(gw.url + "/api/chat", json={"model": "fake-model", "stream": False}, headers=ALICE,
                           timeout=20)
    assert _without_time(chat_load) == {"model": "fake-model", "message": {"role": "assistant", "content": ""},
                                        "done": True, "done_reason": "load"}
    assert _native_chat(gw).status_code == 200
    wait_until(lambda: _generations(gw) >= 1, "the chat in the process's log")
    assert _generations(gw) == 1  # the chat's only: the loads generated nothing


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


def test_ps_reports_the_model_files_size_where_it_is_known(gateways: GatewayFactory, tmp_path: Path) -> None:
    """`managed.model_path`'s file, and the built-in local model's GGUF in the cache its launcher
    reads (SEADRAGON_CACHE of the process's environment); 0 otherwise; size_vram is always 0."""
    weights = tmp_path / "weights.gguf"
    weights.write_bytes(b"g" * 1234)
    gguf = tmp_path / "cache" / "llama.cpp" / "model" / "gemma-3-270m-q4_k_m.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"g" * 4321)
    pathed = {**_managed(tmp_path, model_path=str(weights)), "name": "pathed"}
    # a command that names the local model's launcher (as the shipped `local` backend's does)
    local = _managed(tmp_path, env={"SEADRAGON_CACHE": str(tmp_path / "cache")})
    local["managed"]["command"] += ["--model", "local-model", "--tag", "seadragon_gw.localmodel"]
    local.update(name="local", models=["local-model"])
    unknown = {**_managed(tmp_path), "name": "unknown", "models": ["other-model"]}
    unknown["managed"] = {**unknown["managed"], "command": [*unknown["managed"]["command"], "--model", "other-model"]}
    gw = gateways.start([pathed, local, unknown])
    for model in ("fake-model", "local-model", "other-model"):
        assert httpx.post(gw.url + "/api/chat", json=chat("hi", model=model), headers=ALICE,
                          timeout=20).status_code == 200
    listed = httpx.get(gw.url + "/api/ps", headers=ALICE).json()["models"]
    assert sorted((m["name"], m["size"], m["size_vram"]) for m in listed) == [
        ("fake-model:latest", 1234, 0), ("local-model:latest", 4321, 0), ("other-model:latest", 0, 0)]
