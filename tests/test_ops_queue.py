"""Queue control and statistics through a real gateway: `/api/queue/status`, `/api/queue/clear`,
`/api/admin/queue/{model}` (and seed 004's `/admin/queue/{model}`), `/api/admin/stats`.

The queue is filled deterministically (the fake backend holds the one running request) and
waits are measured on injected clocks: the wall clock stamps records, the monotonic one ages
the queue, and the test moves both.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import httpx
import pytest

from seadragon_gw.gateway import Clocks
from tests.conftest import ADMIN, ALICE, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, ndjson, wait_until

BOB = {"Authorization": "Bearer tok-bob"}  # priority 1: high
CAROL = {"Authorization": "Bearer tok-carol"}  # priority 3: low
CLEARED = "queue cleared by an administrator"
FORBIDDEN = "forbidden: this route needs an admin credential"
EMPTY = {"count": 0, "p50": None, "p95": None, "mean": None}


@dataclass
class Setup:
    gw: RunningGateway
    backend: FakeBackend
    client: GatewayClient
    wall: FakeClock
    mono: FakeClock

    def advance(self, seconds: float) -> None:
        """Both clocks move on; read only on the loop, so a plain assignment is safe here."""
        self.wall.advance(seconds)
        self.mono.advance(seconds)

    def waiting(self) -> int:
        return self.gw.waiting()

    def queue(self, marker: str, headers: dict[str, str], n: int, *, model: str = "llama3",
              stream: bool = False) -> Future[httpx.Response]:
        """Send a request and wait until it is the `n`th waiting one."""
        future = self.client.submit("/api/chat", chat(marker, model=model, stream=stream), headers)
        wait_until(lambda: self.waiting() == n, f"{marker} to queue")
        return future

    def run_held(self, marker: str = "running", headers: dict[str, str] | None = None) -> Future[httpx.Response]:
        """Hold the backend and start one request that takes its only slot."""
        self.backend.hold()
        future = self.client.submit("/api/chat", chat(marker), headers)
        self.backend.wait_waiting(1)
        return future


@pytest.fixture
def setup(gateways: GatewayFactory, backend: FakeBackend) -> Iterator[Setup]:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(1000.0)
    gw = gateways.start([backend], clocks=Clocks(monotonic=mono, wall=wall))
    with GatewayClient(gw.url, ALICE) as client:
        yield Setup(gw, backend, client, wall, mono)


def get(gw: RunningGateway, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(gw.url + path, headers=headers, timeout=10)


def idle(model: str) -> dict[str, object]:
    return {"model": model, "waiting": 0, "processing": 0, "max_concurrent": 1}


# -- /api/queue/status ------------------------------------------------------------------
def test_queue_status_shows_each_model_and_only_the_callers_own_waiting_requests(setup: Setup) -> None:
    running = setup.run_held()
    mine = setup.queue("mine", {"X-Request-ID": "alice-1"}, 1)
    theirs = setup.queue("theirs", {**CAROL, "X-Request-ID": "carol-1"}, 2)
    setup.advance(30)
    response = get(setup.gw, "/api/queue/status", ALICE)
    assert response.status_code == 200
    assert response.json() == {
        "models": [{"model": "llama3:latest", "waiting": 2, "processing": 1, "max_concurrent": 1},
                   idle("nomic-embed-text:latest"), idle("qwen2.5:7b")],
        "waiting": [{"request_id": "alice-1", "model": "llama3:latest", "position": 1, "waited_s": 30.0}],
    }
    carol = get(setup.gw, "/api/queue/status", CAROL).json()["waiting"]
    assert carol == [{"request_id": "carol-1", "model": "llama3:latest", "position": 2, "waited_s": 30.0}]
    setup.backend.release()
    for future in (running, mine, theirs):
        assert future.result(5).status_code == 200


def test_an_admin_sees_every_waiting_request_with_who_and_priorities(setup: Setup) -> None:
    running = setup.run_held()
    first = setup.queue("first", {"X-Request-ID": "alice-1", "X-Client-ID": "cline-7"}, 1)
    second = setup.queue("second", {**CAROL, "X-Request-ID": "carol-1"}, 2)
    setup.advance(60)
    waiting = get(setup.gw, "/api/queue/status", ADMIN).json()["waiting"]
    assert waiting == [
        {"request_id": "alice-1", "model": "llama3:latest", "position": 1, "waited_s": 60.0,
         "credential": {"kind": "token", "name": "alice"}, "client_id": "cline-7", "priority": 2,
         "effective_priority": 1.9},
        {"request_id": "carol-1", "model": "llama3:latest", "position": 2, "waited_s": 60.0,
         "credential": {"kind": "token", "name": "carol"}, "client_id": None, "priority": 3,
         "effective_priority": 2.9},
    ]
    setup.backend.release()
    for future in (running, first, second):
        assert future.result(5).status_code == 200


def test_queue_status_needs_a_credential(setup: Setup) -> None:
    assert native_error(get(setup.gw, "/api/queue/status"), 401) == "unauthorized: missing or invalid credentials"


# -- /api/queue/clear -------------------------------------------------------------------
def test_clear_answers_every_waiting_request_at_once_and_spares_the_running_one(setup: Setup) -> None:
    running = setup.run_held()
    plain = setup.queue("plain", {}, 1)
    streamed = setup.queue("streamed", {}, 2, stream=True)
    response = httpx.post(setup.gw.url + "/api/queue/clear", headers=ADMIN)
    assert (response.status_code, response.json()) == (200, {"cleared": 2, "model": None})
    cleared = plain.result(5)
    assert (cleared.status_code, cleared.json()) == (503, {"error": CLEARED})
    in_band = streamed.result(5)
    assert in_band.status_code == 200 and ndjson(in_band.text.splitlines()) == [{"error": CLEARED}]
    assert setup.waiting() == 0 and not running.done()
    setup.backend.release()
    assert running.result(5).status_code == 200


@pytest.mark.parametrize("how", ["body", "query"])
def test_clear_one_model_by_body_or_query_leaves_the_others(setup: Setup, how: str) -> None:
    running = setup.run_held()
    llama = setup.queue("llama", {}, 1)
    qwen = setup.queue("qwen", {}, 2, model="qwen2.5:7b")
    if how == "body":
        response = httpx.post(setup.gw.url + "/api/queue/clear", headers=ADMIN, json={"model": "qwen2.5:7b"})
    else:
        response = httpx.post(setup.gw.url + "/api/queue/clear?model=qwen2.5:7b", headers=ADMIN)
    assert (response.status_code, response.json()) == (200, {"cleared": 1, "model": "qwen2.5:7b"})
    assert (qwen.result(5).status_code, qwen.result().json()) == (503, {"error": CLEARED})
    assert setup.waiting() == 1
    setup.backend.release()
    assert running.result(5).status_code == 200 and llama.result(5).status_code == 200


def test_clear_with_nothing_waiting_clears_nothing(setup: Setup) -> None:
    response = httpx.post(setup.gw.url + "/api/queue/clear", headers=ADMIN, json={})
    assert (response.status_code, response.json()) == (200, {"cleared": 0, "model": None})


@pytest.mark.parametrize("headers, body, status, message", [
    (None, {}, 401, "unauthorized: missing or invalid credentials"),
    (ALICE, {}, 403, FORBIDDEN),
    (ADMIN, {"model": "nope"}, 404, "model 'nope' not found"),
    (ADMIN, {"model": 7}, 400, "model must be a non-empty string (leave it out to clear every queue)"),
    (ADMIN, {"model": " "}, 400, "model must be a non-empty string (leave it out to clear every queue)"),
])
def test_clear_refusals(setup: Setup, headers: dict[str, str] | None, body: object, status: int,
                        message: str) -> None:
    response = httpx.post(setup.gw.url + "/api/queue/clear", headers=headers, json=body)
    assert native_error(response, status) == message


def test_clear_refuses_a_body_that_is_not_an_object(setup: Setup) -> None:
    response = httpx.post(setup.gw.url + "/api/queue/clear", headers=ADMIN, content=b"[1]")
    assert native_error(response, 400) == "request body must be a JSON object"


# -- /api/admin/queue/{model} and /api/admin/stats --------------------------------------
def _fill_two_rounds(setup: Setup) -> None:
    """Waits: normal 0 (granted at once), high 4 and low 4 (after 4 s), normal 0 and 10."""
    first = setup.run_held("a1")
    high = setup.queue("b1", BOB, 1)
    low = setup.queue("c1", CAROL, 2)
    setup.advance(4)
    setup.backend.release()
    for future in (first, high, low):
        assert future.result(5).status_code == 200
    second = setup.run_held("a2")
    late = setup.queue("a3", {}, 1)
    setup.advance(10)
    setup.backend.release()
    for future in (second, late):
        assert future.result(5).status_code == 200


def test_queue_detail_while_busy(setup: Setup) -> None:
    running = setup.run_held()
    waiting = setup.queue("waiting", {}, 1)
    expected = {"model": "llama3", "processing": 1, "waiting": 1, "max_concurrent": 1, "max_waiting": 512,
                "total_processed": 0, "total_failed": 0, "total_timeout": 0, "utilization": 1.0,
                "wait_seconds": {"window_s": 900.0, "high": EMPTY, "normal": EMPTY, "low": EMPTY}}
    for path in ("/api/admin/queue/llama3", "/admin/queue/llama3"):
        response = get(setup.gw, path, ADMIN)
        assert (response.status_code, response.json()) == (200, expected)
    setup.backend.release()
    assert running.result(5).status_code == 200 and waiting.result(5).status_code == 200


def test_queue_detail_totals_and_wait_percentiles_per_priority_class(setup: Setup) -> None:
    _fill_two_rounds(setup)
    setup.backend.respond_status(500, {"error": "boom"})
    assert setup.client.post("/api/chat", chat("fails")).status_code == 500
    setup.backend.respond_status(None)
    response = get(setup.gw, "/admin/queue/llama3:latest", ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "model": "llama3:latest", "processing": 0, "waiting": 0, "max_concurrent": 1, "max_waiting": 512,
        "total_processed": 5, "total_failed": 1, "total_timeout": 0, "utilization": 0.0,
        "wait_seconds": {"window_s": 900.0,
                         "high": {"count": 1, "p50": 4.0, "p95": 4.0, "mean": 4.0},
                         "normal": {"count": 4, "p50": 0.0, "p95": 10.0, "mean": 2.5},
                         "low": {"count": 1, "p50": 4.0, "p95": 4.0, "mean": 4.0}},
    }
    other = get(setup.gw, "/api/admin/queue/qwen2.5:7b", ADMIN).json()
    assert (other["total_processed"], other["wait_seconds"]["normal"]) == (0, EMPTY)


def test_waits_leave_the_window_and_totals_stay(setup: Setup) -> None:
    _fill_two_rounds(setup)
    setup.advance(901)
    detail = get(setup.gw, "/api/admin/queue/llama3", ADMIN).json()
    assert detail["total_processed"] == 5
    assert detail["wait_seconds"] == {"window_s": 900.0, "high": EMPTY, "normal": EMPTY, "low": EMPTY}


def test_a_queue_timeout_is_counted(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], queue={"timeout_s": 0.3})
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        running = client.submit("/api/chat", chat("running"))
        backend.wait_waiting(1)
        assert client.post("/api/chat", chat("late")).status_code == 504
        backend.release()
        assert running.result(5).status_code == 200
    detail = get(gw, "/api/admin/queue/llama3", ADMIN).json()
    assert (detail["total_processed"], detail["total_timeout"]) == (1, 1)


@pytest.mark.parametrize("path", ["/api/admin/queue/nope", "/admin/queue/nope"])
def test_queue_detail_of_an_unknown_model_is_404(setup: Setup, path: str) -> None:
    assert native_error(get(setup.gw, path, ADMIN), 404) == "model 'nope' not found"


@pytest.mark.parametrize("path", ["/api/admin/queue/llama3", "/admin/queue/llama3", "/api/admin/stats"])
def test_admin_views_need_an_admin(setup: Setup, path: str) -> None:
    assert native_error(get(setup.gw, path, ALICE), 403) == FORBIDDEN
    assert native_error(get(setup.gw, path), 401) == "unauthorized: missing or invalid credentials"


def test_stats_while_busy(setup: Setup) -> None:
    running = setup.run_held()
    first = setup.queue("first", {}, 1)
    second = setup.queue("second", BOB, 2)
    stats = get(setup.gw, "/api/admin/stats", ADMIN).json()
    assert (stats["queue_length"], stats["active_requests"], stats["requests_per_minute"]) == (2, 1, 0.0)
    setup.backend.release()
    for future in (running, first, second):
        assert future.result(5).status_code == 200


def test_stats_from_measurements_over_the_windows(setup: Setup) -> None:
    _fill_two_rounds(setup)
    assert native_error(setup.client.post("/api/chat", chat(model="nope")), 404) == "model 'nope' not found"
    response = get(setup.gw, "/api/admin/stats", ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "queue_length": 0, "active_requests": 0, "requests_per_minute": 6.0, "average_wait_time": 3.6,
        "wait_seconds": {"window_s": 900.0,
                         "high": {"count": 1, "p50": 4.0, "p95": 4.0, "mean": 4.0},
                         "normal": {"count": 3, "p50": 0.0, "p95": 10.0, "mean": 10 / 3},
                         "low": {"count": 1, "p50": 4.0, "p95": 4.0, "mean": 4.0}},
    }
    setup.advance(61)
    later = get(setup.gw, "/api/admin/stats", ADMIN).json()
    assert (later["requests_per_minute"], later["average_wait_time"]) == (0.0, 3.6)
    setup.advance(900)
    assert get(setup.gw, "/api/admin/stats", ADMIN).json()["average_wait_time"] == 0.0
