"""Several backends per model (seed 003): the most free slots x weight wins, and a request whose
backend fails before answering goes to another backend of the model (lifecycle/failover.py's
rule), with two real fake backends behind a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, markers, ndjson, wait_until


@pytest.fixture
def pair() -> Iterator[tuple[FakeBackend, FakeBackend]]:
    with FakeBackend() as first, FakeBackend() as second:
        yield first, second


def spec(name: str, backend: FakeBackend, **options: Any) -> dict[str, Any]:
    # Health checks far apart: a backend stopped by a test is found by the request, not a check.
    return {"name": name, "url": backend.url, "max_concurrent": 1, "health_interval_s": 60, **options}


def state(gw: RunningGateway, name: str) -> str:
    return gw.on_loop(lambda g: g.registry.get(name).state.value)


def ask(gw: RunningGateway, marker: str, **body: Any) -> httpx.Response:
    return httpx.post(gw.url + "/api/chat", json={**chat(marker), **body}, headers=ALICE, timeout=10)


# -- failover ---------------------------------------------------------------------------------

def test_connection_refused_goes_to_the_other_backend(gateways: GatewayFactory,
                                                       pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.stop()  # b0 is up as far as the gateway knows: the request finds out
    response = ask(gw, "one")
    assert response.status_code == 200 and response.json()["done"] is True
    assert markers(second) == ["one"]
    assert state(gw, "b0") == "down"  # passive health: marked at once
    assert ask(gw, "two").status_code == 200 and markers(second) == ["one", "two"]


def test_a_503_before_the_first_byte_goes_to_the_other_backend(gateways: GatewayFactory,
                                                               pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.respond_status(503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
    response = ask(gw, "busy")
    assert response.status_code == 200 and response.json()["message"]["role"] == "assistant"
    assert (markers(first), markers(second)) == (["busy"], ["busy"])
    assert state(gw, "b0") == "up"  # it answered: busy is not down


def test_a_404_model_not_found_is_an_answer_and_is_not_retried(gateways: GatewayFactory,
                                                               pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.respond_status(404, {"error": 'model "llama3" not found, try pulling it first'})
    response = ask(gw, "where")
    assert (response.status_code, response.json()) == (404, {"error": 'model "llama3" not found, try pulling it first'})
    assert (markers(first), markers(second)) == (["where"], [])


def test_a_500_is_an_answer_and_is_not_retried(gateways: GatewayFactory,
                                               pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.respond_status(500, {"error": "llama runner process has terminated"})
    response = ask(gw, "boom")
    assert (response.status_code, response.json()) == (500, {"error": "llama runner process has terminated"})
    assert markers(second) == []


def test_retries_zero_keeps_the_error(gateways: GatewayFactory, pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first, retries=0), spec("b1", second)])
    first.respond_status(503, {"error": "server busy"})
    response = ask(gw, "once")
    assert (response.status_code, response.json()) == (503, {"error": "server busy"})
    assert markers(second) == []


def test_at_most_retries_other_backends_and_never_one_that_failed(gateways: GatewayFactory) -> None:
    with FakeBackend() as a, FakeBackend() as b, FakeBackend() as c:
        gw = gateways.start([spec("b0", a, retries=2), spec("b1", b, retries=1), spec("b2", c)])
        for backend in (a, b, c):
            backend.respond_status(503, {"error": f"busy {backend.url}"})
        response = ask(gw, "all busy")
        # b0 fails (2 retries allowed), b1 fails (its own setting: 1 other backend tried already), so
        # b1's answer stands and b2 is never asked
        assert (response.status_code, response.json()) == (503, {"error": f"busy {b.url}"})
        assert (markers(a), markers(b), markers(c)) == (["all busy"], ["all busy"], [])


def test_with_no_other_backend_the_connection_error_stands(gateways: GatewayFactory) -> None:
    backend = FakeBackend().start()
    gw = gateways.start([spec("b0", backend)])
    backend.stop()
    response = ask(gw, "alone")
    assert response.status_code == 502
    assert response.json()["error"].startswith(f"backend 'b0' at {backend.url} is unreachable (connection refused)")


def test_after_the_first_byte_the_error_is_in_band(gateways: GatewayFactory,
                                                   pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.fail_mid_stream = True
    with httpx.stream("POST", gw.url + "/api/chat", json=chat("mid", stream=True), headers=ALICE) as response:
        assert response.status_code == 200
        lines = ndjson(response.iter_lines())
    assert lines[0]["done"] is False and "stream broke" in lines[-1]["error"]
    assert markers(second) == []


def test_a_failed_over_request_waits_for_the_busy_other_backend(gateways: GatewayFactory,
                                                                pair: tuple[FakeBackend, FakeBackend]) -> None:
    """The other backend's one slot is taken: the failed-over request waits in the queue for it
    (not an error) and is served there."""
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second)])
    first.hold()
    second.hold()
    with GatewayClient(gw.url, ALICE) as client:
        on_b0 = client.submit("/api/chat", chat("on b0"))  # both free: the first configured
        first.wait_waiting(1)
        on_b1 = client.submit("/api/chat", chat("on b1"))
        second.wait_waiting(1)
        first.respond_status(503, {"error": "going away"})
        first.release()  # b0 answers 503: "on b0" fails over to b1, whose slot is taken
        wait_until(lambda: gw.waiting() == 1, "the failed-over request to wait for b1")
        second.release()
        assert [f.result(10).status_code for f in (on_b0, on_b1)] == [200, 200]
    assert (markers(first), markers(second)) == (["on b0"], ["on b1", "on b0"])


# -- load balancing ---------------------------------------------------------------------------

def test_one_at_a_time_every_request_goes_to_the_heaviest_backend(gateways: GatewayFactory,
                                                                  pair: tuple[FakeBackend, FakeBackend]) -> None:
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second, weight=3)])
    for n in range(3):
        assert ask(gw, f"r{n}").status_code == 200
        wait_until(gw.drained, "the slot to be free again")
    assert (markers(first), markers(second)) == ([], ["r0", "r1", "r2"])


def test_the_backend_with_the_most_free_slots_wins(gateways: GatewayFactory,
                                                   pair: tuple[FakeBackend, FakeBackend]) -> None:
    """b0 has 1 slot, b1 3: the first two go to b1 (3, then 2 free), the third to b0 (1 free each:
    the first configured), the fourth to b1 (b0 has none)."""
    first, second = pair
    gw = gateways.start([spec("b0", first), spec("b1", second, max_concurrent=3)])
    first.hold()
    second.hold()
    went: list[str] = []
    with GatewayClient(gw.url, ALICE) as client:
        futures = []
        for n in range(4):
            futures.append(client.submit("/api/chat", chat(f"r{n}")))
            wait_until(lambda n=n: first.waiting + second.waiting == n + 1, f"request {n} to arrive")
            went.append("b0" if len(markers(first)) > went.count("b0") else "b1")
        first.release()
        second.release()
        assert all(f.result(10).status_code == 200 for f in futures)
    assert went == ["b1", "b1", "b0", "b1"]


def test_weight_and_retries_are_checked(gateways: GatewayFactory, backend: FakeBackend) -> None:
    from seadragon_gw.config import ConfigError

    with pytest.raises(ConfigError, match=r"^backends\[0\]\.weight: must be positive$"):
        gateways.config([spec("b0", backend, weight=0)])
    with pytest.raises(ConfigError, match=r"^backends\[0\]\.retries: must be 0 \(no other backend is tried\) or more$"):
        gateways.config([spec("b0", backend, retries=-1)])
