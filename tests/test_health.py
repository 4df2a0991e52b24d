"""`GET /health`, `/api/health`, `/api/v1/health` through a real gateway: healthy with every
backend up, degraded with some, unhealthy (503) with none or an unusable database; the status
for anyone, the detail only with a credential unless `health.detail: public`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from seadragon_gw.config import ConfigError, parse_config
from seadragon_gw.gateway import Clocks, Gateway
from tests.conftest import ALICE, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, wait_until
from tests.support.server import free_port

PATHS = ("/health", "/api/health", "/api/v1/health")
NOW, NOW_TEXT = 1_700_000_000.0, "2023-11-14T22:13:20Z"
DB_OK = {"ok": True, "writable": True, "error": None}


def health(gw: RunningGateway, path: str = "/health", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(gw.url + path, headers=headers, timeout=10)


def start(gateways: GatewayFactory, backends: list[Any], **sections: Any) -> RunningGateway:
    return gateways.start(backends, clocks=Clocks(wall=FakeClock(NOW)), **sections)


def dead(name: str) -> tuple[dict[str, Any], str]:
    """A backend nobody listens for, and the error its health check reports."""
    url = f"http://127.0.0.1:{free_port()}"
    spec = {"name": name, "url": url, "health_interval_s": 3600, "connect_timeout_s": 1}
    return spec, f"backend '{name}' at {url} is unreachable (connection refused); is it running?"


def up(name: str, backend: FakeBackend) -> dict[str, Any]:
    return {"name": name, "kind": "ollama", "url": backend.url, "state": "up", "healthy": True, "active": 0,
            "max_concurrent": 1, "models": 3, "error": None}


@pytest.mark.parametrize("path", PATHS)
def test_healthy_with_every_backend_up(gateways: GatewayFactory, backend: FakeBackend, path: str) -> None:
    gw = start(gateways, [backend])
    anonymous = health(gw, path)
    assert (anonymous.status_code, anonymous.json()) == (200, {"status": "healthy", "timestamp": NOW_TEXT})
    detailed = health(gw, path, ALICE)
    assert detailed.status_code == 200
    report = detailed.json()
    assert report.pop("version")
    assert report == {"status": "healthy", "timestamp": NOW_TEXT, "backends": [up("b0", backend)],
                      "queue": {"waiting": 0, "processing": 0}, "database": DB_OK}


def test_degraded_with_one_backend_down(gateways: GatewayFactory, backend: FakeBackend) -> None:
    spec, error = dead("b1")
    gw = start(gateways, [{"name": "b0", "url": backend.url}, spec])
    assert (health(gw).status_code, health(gw).json()) == (200, {"status": "degraded", "timestamp": NOW_TEXT})
    report = health(gw, headers=ALICE).json()
    assert report["status"] == "degraded"
    assert report["backends"] == [
        up("b0", backend),
        {"name": "b1", "kind": "ollama", "url": spec["url"], "state": "down", "healthy": False, "active": 0,
         "max_concurrent": 1, "models": 0, "error": error},
    ]


def test_degraded_while_a_backend_is_drained_and_unhealthy_once_every_one_is(gateways: GatewayFactory,
                                                                               backend: FakeBackend) -> None:
    with FakeBackend() as other:
        gw = start(gateways, [backend, other])
        gw.on_loop(lambda g: g.registry.drain("b1"))
        assert (health(gw).status_code, health(gw).json()["status"]) == (200, "degraded")
        assert [b["state"] for b in health(gw, headers=ALICE).json()["backends"]] == ["up", "draining"]
        gw.on_loop(lambda g: g.registry.drain("b0"))
        assert (health(gw).status_code, health(gw).json()["status"]) == (503, "unhealthy")


@pytest.mark.parametrize("path", PATHS)
def test_unhealthy_when_no_backend_is_up(gateways: GatewayFactory, path: str) -> None:
    spec, error = dead("gone")
    gw = start(gateways, [spec])
    response = health(gw, path)
    assert (response.status_code, response.json()) == (503, {"status": "unhealthy", "timestamp": NOW_TEXT})
    (gone,) = health(gw, path, ALICE).json()["backends"]
    assert (gone["state"], gone["error"]) == ("down", error)


def test_unhealthy_with_no_backends_configured(gateways: GatewayFactory) -> None:
    gw = start(gateways, [])
    response = health(gw, headers=ALICE)
    assert (response.status_code, response.json()["status"], response.json()["backends"]) == (503, "unhealthy", [])


def test_degraded_when_the_database_file_is_deleted(gateways: GatewayFactory, backend: FakeBackend,
                                                    tmp_path: Path) -> None:
    gw = start(gateways, [backend])
    (tmp_path / "gw.db").unlink()
    response = health(gw, headers=ALICE)
    assert (response.status_code, response.json()["status"]) == (200, "degraded")
    assert response.json()["database"] == {
        "ok": True, "writable": False, "error": "database file was deleted or replaced; restart the gateway"}


def test_unhealthy_when_the_database_does_not_answer(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend])

    async def close_db(g: Gateway) -> None:
        await g.store.db.close()

    gw.await_on_loop(close_db)
    response = health(gw, headers=ALICE)
    assert (response.status_code, response.json()["status"]) == (503, "unhealthy")
    assert response.json()["database"] == {
        "ok": False, "writable": False, "error": "the database cannot be read (ValueError)"}


def test_the_queue_totals_are_real(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend])
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        running = client.submit("/api/chat", chat("running"))
        backend.wait_waiting(1)
        waiting = client.submit("/api/chat", chat("waiting"))
        wait_until(lambda: gw.waiting() == 1, "the second request to queue")
        report = health(gw, headers=ALICE).json()
        assert report["queue"] == {"waiting": 1, "processing": 1}
        assert report["backends"][0]["active"] == 1
        backend.release()
        assert running.result(5).status_code == 200 and waiting.result(5).status_code == 200


def test_public_detail_shows_backends_to_anyone(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend], health={"detail": "public"})
    report = health(gw).json()
    assert report["backends"] == [up("b0", backend)] and report["database"] == DB_OK


def test_an_invalid_credential_is_refused_not_treated_as_anonymous(gateways: GatewayFactory,
                                                                    backend: FakeBackend) -> None:
    gw = start(gateways, [backend])
    response = health(gw, headers={"Authorization": "Bearer wrong"})
    assert native_error(response, 401) == "unauthorized: missing or invalid credentials"


def test_a_backend_url_with_a_password_is_shown_without_it(gateways: GatewayFactory, backend: FakeBackend) -> None:
    port, dead_port = backend.server.port, free_port()
    gw = start(gateways, [
        {"name": "b0", "url": f"http://user:secret@127.0.0.1:{port}"},
        {"name": "b1", "url": f"http://user:secret@127.0.0.1:{dead_port}", "health_interval_s": 3600}])
    shown = health(gw, headers=ALICE).json()["backends"]
    assert [b["url"] for b in shown] == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dead_port}"]
    assert shown[1]["error"] == (f"backend 'b1' at http://127.0.0.1:{dead_port} is unreachable "
                                 "(connection refused); is it running?")


@pytest.mark.parametrize("raw, message", [
    ({"health": {"detail": "everyone"}}, "health.detail: must be one of 'authenticated', 'public', got 'everyone'"),
    ({"health": {"database_timeout_s": 0}}, "health.database_timeout_s: must be positive"),
    ({"stats": {"window_s": 0}}, "stats.window_s: must be positive"),
    ({"stats": {"max_models": -1}}, "stats.max_models: must be positive"),
    ({"metrics": {"public": "yes"}}, "metrics.public: expected bool, got str 'yes'"),
])
def test_operations_config_is_checked(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message
