"""The managed-model admin API (issue 9, seed 004) through a real gateway: list, start with a
profile, graceful and immediate stop, profile switch while a request is active, the process's
log, every backend's health and totals. Real processes (tests/support/fake_model_server.py)."""

from __future__ import annotations

import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, wait_until

FAKE = str(Path(__file__).parent / "support" / "fake_model_server.py")


def _ocr(tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {"name": "ocr", "kind": "openai", "models": ["fake-model"], "max_concurrent": 1, "managed": {
        "command": [sys.executable, FAKE, "--port", "{port}"], "health": {"interval_s": 0.02},
        "start_timeout_s": 10, "log_dir": str(tmp_path / "logs"), "default_profile": "small",
        "profiles": {"small": {"args": ["--tag", "small"]}, "large": {"args": ["--tag", "large"]}}, **options}}


def _model(gw: RunningGateway, path: str = "/api/admin/models") -> dict[str, Any]:
    answer = httpx.get(gw.url + path, headers=ADMIN)
    assert answer.status_code == 200
    (model,) = answer.json()["models"]
    return dict(model)


def _ask(gw: RunningGateway, **extra: Any) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json={**chat("hi", model="fake-model"), **extra},
                      headers=ALICE, timeout=20)


def _text(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    text: str = answer.json()["choices"][0]["message"]["content"]
    return text


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def test_models_lists_a_stopped_managed_backend_with_seed_fields(gateways: GatewayFactory, tmp_path: Path) -> None:
    with FakeBackend() as plain:
        gw = gateways.start([_ocr(tmp_path), {"name": "plain", "kind": "ollama", "url": plain.url}])
        model = _model(gw)
        port = model.pop("port")
        assert isinstance(port, int) and port > 0
        assert model == {"name": "ocr", "status": "stopped", "state": "stopped", "pid": None,
                         "models": ["fake-model:latest"], "started_at": None, "uptime_seconds": None,
                         "profile": "small", "resolution": "small", "profiles": ["small", "large"],
                         "is_healthy": False, "active_requests": 0, "waiting": 0, "restarts": 0,
                         "last_error": None}
        assert _model(gw, "/admin/models")["name"] == "ocr"  # seed 004's path


def test_the_admin_endpoints_need_an_admin_credential(gateways: GatewayFactory, tmp_path: Path) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    assert httpx.get(gw.url + "/api/admin/models").status_code == 401
    refused = httpx.post(gw.url + "/api/admin/models/ocr/start", headers=ALICE)
    assert refused.status_code == 403
    assert httpx.get(gw.url + "/api/admin/backends", headers=ALICE).status_code == 403


def test_start_with_a_profile_then_stop(gateways: GatewayFactory, tmp_path: Path) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    started = httpx.post(gw.url + "/api/admin/models/ocr/start?profile=large", headers=ADMIN, timeout=20)
    assert (started.status_code, started.json()) == (200, {"status": "started", "model": "ocr", "profile": "large"})
    model = _model(gw)
    assert (model["status"], model["is_healthy"], model["profile"]) == ("running", True, "large")
    assert model["started_at"].endswith("Z") and model["uptime_seconds"] >= 0 and model["pid"] > 0
    argv = httpx.get(f"http://127.0.0.1:{model['port']}/argv").json()["argv"]
    assert argv[-2:] == ["--tag", "large"]
    assert _text(_ask(gw)).endswith(" tag large")
    stopped = httpx.post(gw.url + "/admin/models/ocr/stop?graceful=true", headers=ADMIN, timeout=20)
    assert (stopped.status_code, stopped.json()) == (200, {"status": "stopped", "model": "ocr", "graceful": True})
    assert _model(gw)["status"] == "stopped"


def test_a_graceful_profile_switch_waits_for_the_active_request(gateways: GatewayFactory, tmp_path: Path,
                                                                pool: ThreadPoolExecutor) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    hold = tmp_path / "release"
    active: Future[httpx.Response] = pool.submit(_ask, gw, hold_until=str(hold))
    wait_until(lambda: _model(gw)["active_requests"] == 1, "the request in flight", timeout=15)
    switch = pool.submit(httpx.post, gw.url + "/api/admin/models/ocr/profile?profile=large&graceful=true",
                         headers=ADMIN, timeout=20)
    wait_until(lambda: _model(gw)["status"] == "stopping", "the drain")
    late: Future[httpx.Response] = pool.submit(_ask, gw)
    wait_until(lambda: _model(gw)["waiting"] == 1, "the late request waiting")
    assert not switch.done()
    hold.touch()
    assert _text(active.result(20)).endswith(" tag small")
    answer = switch.result(20)
    assert (answer.status_code, answer.json()) == (200, {
        "status": "switched", "model": "ocr", "profile": "large", "resolution": "large",
        "message": "ocr runs profile large"})
    assert _text(late.result(20)).endswith(" tag large")
    assert _model(gw)["profile"] == "large"


def test_stop_not_graceful_ends_the_active_request_with_an_error(gateways: GatewayFactory, tmp_path: Path,
                                                                 pool: ThreadPoolExecutor) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    active: Future[httpx.Response] = pool.submit(_ask, gw, hold_until=str(tmp_path / "never"))
    wait_until(lambda: _model(gw)["active_requests"] == 1, "the request in flight", timeout=15)
    stopped = httpx.post(gw.url + "/api/admin/models/ocr/stop?graceful=false", headers=ADMIN, timeout=20)
    assert stopped.json() == {"status": "stopped", "model": "ocr", "graceful": False}
    answer = active.result(20)
    url = gw.on_loop(lambda g: g.registry.backends[0].config.url)
    assert (answer.status_code, answer.json()["error"]["message"]) == (
        502, f"backend 'ocr' at {url} failed (the backend closed the connection): stopped at once by an operator")
    assert _model(gw)["status"] == "stopped"


def test_stop_not_graceful_ends_an_active_stream_in_band_saying_why(gateways: GatewayFactory, tmp_path: Path,
                                                                    pool: ThreadPoolExecutor) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    body = {**chat("hi", model="fake-model"), "stream": True, "hold_until": str(tmp_path / "never")}
    active: Future[httpx.Response] = pool.submit(httpx.post, gw.url + "/v1/chat/completions", json=body,
                                                 headers=ALICE, timeout=20)
    wait_until(lambda: _model(gw)["active_requests"] == 1, "the stream in flight", timeout=15)
    stopped = httpx.post(gw.url + "/api/admin/models/ocr/stop?graceful=false", headers=ADMIN, timeout=20)
    assert stopped.status_code == 200
    answer = active.result(20)
    url = gw.on_loop(lambda g: g.registry.backends[0].config.url)
    events = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    assert answer.status_code == 200
    assert json.loads(events[-1][6:])["error"]["message"] == (
        f"backend 'ocr' at {url}: stream broke (the backend closed the connection): stopped at once by an operator")


def test_logs_show_the_process_output(gateways: GatewayFactory, tmp_path: Path) -> None:
    gw = gateways.start([_ocr(tmp_path)])
    assert _text(_ask(gw))
    answer = httpx.get(gw.url + "/api/admin/models/ocr/logs?lines=50", headers=ADMIN)
    assert answer.status_code == 200
    found = answer.json()
    assert (found["model"], found["path"]) == ("ocr", str(tmp_path / "logs" / "ocr.log"))
    assert "GET /health" in found["lines"] and "POST /v1/chat/completions" in found["lines"]
    last = httpx.get(gw.url + "/api/admin/models/ocr/logs?lines=1", headers=ADMIN).json()["lines"]
    assert len(last) == 1 and last[0] in found["lines"]  # (a health check may have come since)
    bad = httpx.get(gw.url + "/api/admin/models/ocr/logs?lines=many", headers=ADMIN)
    assert (bad.status_code, bad.json()["error"]) == (400, "lines must be a whole number, got 'many'")


def test_backends_lists_every_backend_with_totals(gateways: GatewayFactory, tmp_path: Path) -> None:
    with FakeBackend(models=["llama3:latest"]) as plain:
        gw = gateways.start([_ocr(tmp_path), {"name": "plain", "kind": "ollama", "url": plain.url}])
        assert _text(_ask(gw))
        assert httpx.post(gw.url + "/api/chat", json=chat("x"), headers=ALICE, timeout=20).status_code == 200
        wait_until(lambda: all(b["totals"]["requests"] == 1 for b in
                               httpx.get(gw.url + "/api/admin/backends", headers=ADMIN).json()["backends"]),
                   "both requests counted")
        backends = {b["name"]: b for b in httpx.get(gw.url + "/api/admin/backends", headers=ADMIN).json()["backends"]}
        assert (backends["ocr"]["managed"], backends["plain"]["managed"]) == (True, False)
        assert (backends["ocr"]["state"], backends["plain"]["state"]) == ("up", "up")
        assert backends["plain"]["in_flight"] == 0 and backends["plain"]["last_error"] is None
        assert backends["plain"]["totals"]["failed"] == 0


def test_bad_requests_get_clear_errors(gateways: GatewayFactory, tmp_path: Path) -> None:
    with FakeBackend() as plain:
        gw = gateways.start([_ocr(tmp_path), {"name": "plain", "kind": "ollama", "url": plain.url}])
        cases = {
            "/api/admin/models/nope/start": (404, "no backend named 'nope'"),
            "/api/admin/models/plain/start": (400, "backend plain is not managed (it has no process to start or stop)"),
            "/api/admin/models/ocr/stop?graceful=maybe": (400, "graceful must be true or false, got 'maybe'"),
            "/api/admin/models/ocr/profile": (400, "profile is required (?profile=NAME)"),
            "/api/admin/models/ocr/profile?profile=gundam": (
                400, "backend ocr has no profile 'gundam' (known: small, large)"),
        }
        for path, (status, message) in cases.items():
            answer = httpx.post(gw.url + path, headers=ADMIN)
            assert (path, answer.status_code, answer.json()["error"]) == (path, status, message)


def test_a_start_that_fails_answers_502_with_the_reason(gateways: GatewayFactory, tmp_path: Path) -> None:
    config = _ocr(tmp_path)
    config["managed"]["command"] += ["--exit-now", "4", "--stderr", "bad weights"]
    gw = gateways.start([config])
    answer = httpx.post(gw.url + "/api/admin/models/ocr/start", headers=ADMIN, timeout=20)
    assert answer.status_code == 502
    assert answer.json()["error"] == ("managed backend ocr: the process exited during start-up "
                                                 "(exit code 4); stderr: bad weights")
    model = _model(gw)
    assert (model["status"], model["last_error"]) == ("crashed", answer.json()["error"])

