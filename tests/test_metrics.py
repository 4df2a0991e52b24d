"""`GET /metrics` through a real gateway, parsed with prometheus-client's own parser: the
counters and histograms match the requests sent, gauges read the queue and backends at scrape
time, labels stay bounded, and only an admin (or anyone with `metrics.public`) may read it."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seadragon_gw.auth.principal import Principal
from seadragon_gw.errors import TooManyRequests
from seadragon_gw.records.record import RequestRecord
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, chat, ndjson, wait_until

BOB = {"Authorization": "Bearer tok-bob"}  # priority 1: high
CAROL = {"Authorization": "Bearer tok-carol"}  # priority 3: low
Labels = dict[str, str]


def scrape(gw: RunningGateway, headers: dict[str, str] | None = ADMIN) -> dict[str, list[tuple[Labels, float]]]:
    """Every sample by its name (`..._total`, `..._bucket`, `..._count`, gauges)."""
    response = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def values(samples: dict[str, list[tuple[Labels, float]]], name: str) -> dict[tuple[str, ...], float]:
    """A metric's samples keyed by their label values in label-name order (buckets left out)."""
    return {tuple(value for _, value in sorted(labels.items())): sample
            for labels, sample in samples.get(name, []) if "le" not in labels}


def test_requests_tokens_and_histograms_match_what_was_sent(gw: RunningGateway, backend: FakeBackend) -> None:
    with GatewayClient(gw.url, ALICE) as client:
        plain = [client.post("/api/chat", chat(f"hello {i}")).json() for i in range(2)]
        with client.stream("/api/chat", chat("stream me", stream=True), BOB) as response:
            final = ndjson(response.iter_lines())[-1]
        openai = client.post("/v1/chat/completions", chat("openai"), CAROL).json()
        assert native_error(client.post("/api/chat", chat(model="nope")), 404) == "model 'nope' not found"
    assert httpx.post(gw.url + "/api/chat", json=chat()).status_code == 401
    samples = scrape(gw)
    # labels in name order: model, priority, route, status
    assert values(samples, "seadragon_requests_total") == {
        ("llama3:latest", "normal", "/api/chat", "200"): 2,
        ("llama3:latest", "high", "/api/chat", "200"): 1,
        ("llama3:latest", "low", "/v1/chat/completions", "200"): 1,
        ("other", "normal", "/api/chat", "404"): 1,
        ("other", "none", "/api/chat", "401"): 1,
    }
    prompt = sum(p["prompt_eval_count"] for p in plain) + final["prompt_eval_count"] + \
        openai["usage"]["prompt_tokens"]
    completion = sum(p["eval_count"] for p in plain) + final["eval_count"] + openai["usage"]["completion_tokens"]
    tokens = values(samples, "seadragon_tokens_total")
    assert tokens == {("in", "llama3:latest"): prompt, ("out", "llama3:latest"): completion} and prompt > 0
    assert values(samples, "seadragon_queue_wait_seconds_count") == {
        ("llama3:latest", "normal"): 2, ("llama3:latest", "high"): 1, ("llama3:latest", "low"): 1}
    assert values(samples, "seadragon_upstream_first_byte_seconds_count") == {("llama3:latest",): 4}
    assert values(samples, "seadragon_upstream_duration_seconds_count") == {("llama3:latest",): 4}
    assert values(samples, "seadragon_rejected_total") == {("rejected", "/api/chat"): 2}
    buckets = [v for labels, v in samples["seadragon_upstream_duration_seconds_bucket"] if labels["le"] == "+Inf"]
    assert buckets == [4]


def test_gauges_show_the_queue_and_backends_at_scrape_time(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    with GatewayClient(gw.url, ALICE) as client:
        running = client.submit("/api/chat", chat("running"))
        backend.wait_waiting(1)
        waiting = client.submit("/api/chat", chat("waiting"))
        wait_until(lambda: gw.waiting() == 1, "the second request to queue")
        busy = scrape(gw)
        backend.release()
        assert running.result(5).status_code == 200 and waiting.result(5).status_code == 200
    assert values(busy, "seadragon_queue_waiting") == {("llama3:latest",): 1}
    assert values(busy, "seadragon_queue_processing") == {("llama3:latest",): 1}
    assert values(busy, "seadragon_backend_in_flight") == {("b0",): 1}
    assert values(busy, "seadragon_backend_up") == {("b0",): 1}
    assert values(busy, "seadragon_backend_max_concurrent") == {("b0",): 1}
    wait_until(gw.drained, "the slot to be free")
    idle = scrape(gw)
    assert values(idle, "seadragon_queue_waiting") == {} and values(idle, "seadragon_backend_in_flight") == {("b0",): 0}


def test_a_down_backend_reads_zero(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([{"name": "b0", "url": backend.url, "health_interval_s": 3600}])
    backend.stop()
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 502
    samples = scrape(gw)
    assert values(samples, "seadragon_backend_up") == {("b0",): 0}
    assert values(samples, "seadragon_requests_total") == {("llama3:latest", "normal", "/api/chat", "502"): 1}


class RefuseFlood:
    """An admission check standing in for a rate limit: the client "flood" is refused."""

    def check(self, record: RequestRecord, principal: Principal) -> None:
        if principal.client == "flood":
            raise TooManyRequests("rate limit: 60 requests per minute", retry_after_s=7)


def test_rate_limited_and_cleared_requests_are_counted(gw: RunningGateway, backend: FakeBackend) -> None:
    gw.on_loop(lambda g: g.requests.checks.append(RefuseFlood()))
    with GatewayClient(gw.url, ALICE) as client:
        for _ in range(3):
            assert native_error(client.post("/api/chat", chat(), {"X-Client-ID": "flood"}), 429) == \
                "rate limit: 60 requests per minute"
        backend.hold()
        running = client.submit("/api/chat", chat("running"))
        backend.wait_waiting(1)
        cleared = client.submit("/api/chat", chat("cleared"))
        wait_until(lambda: gw.waiting() == 1, "a request to queue")
        assert httpx.post(gw.url + "/api/queue/clear", headers=ADMIN).json()["cleared"] == 1
        assert cleared.result(5).status_code == 503
        backend.release()
        assert running.result(5).status_code == 200
    samples = scrape(gw)
    assert values(samples, "seadragon_rate_limited_total") == {("/api/chat",): 3}
    assert values(samples, "seadragon_rejected_total") == {("rejected", "/api/chat"): 3, ("cleared", "/api/chat"): 1}


def test_labels_stay_bounded(gw: RunningGateway, backend: FakeBackend) -> None:
    for i in range(5):
        response = httpx.post(gw.url + "/api/chat", json=chat(model=f"garbage-{i}"), headers=ALICE)
        assert response.status_code == 404
    digest = "sha256:" + hashlib.sha256(b"blob").hexdigest()
    assert httpx.head(gw.url + f"/api/blobs/{digest}", headers=ADMIN).status_code in (200, 404)
    requests = values(scrape(gw), "seadragon_requests_total")
    assert requests[("other", "normal", "/api/chat", "404")] == 5
    (blob,) = [k for k in requests if k[2] == "/api/blobs/{digest}"]
    assert blob[:2] == ("other", "normal") and len(requests) == 2


def test_each_gateway_counts_its_own_requests(gateways: GatewayFactory, backend: FakeBackend) -> None:
    first, second = gateways.start([backend]), gateways.start([backend])
    assert httpx.post(first.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200
    assert sum(values(scrape(first), "seadragon_requests_total").values()) == 1
    assert values(scrape(second), "seadragon_requests_total") == {}


@pytest.mark.parametrize("headers, status, message", [
    (None, 401, "unauthorized: missing or invalid credentials"),
    (ALICE, 403, "forbidden: this route needs an admin credential"),
])
def test_metrics_need_an_admin(gw: RunningGateway, headers: dict[str, str] | None, status: int,
                               message: str) -> None:
    assert native_error(httpx.get(gw.url + "/metrics", headers=headers), status) == message


def test_public_metrics_need_no_credential(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], metrics={"public": True})
    assert values(scrape(gw, headers=None), "seadragon_backend_up") == {("b0",): 1}


def test_metrics_can_be_turned_off(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], metrics={"enabled": False})
    assert httpx.post(gw.url + "/api/chat", json=chat(), headers=ALICE).status_code == 200
    response = httpx.get(gw.url + "/metrics", headers=ADMIN)
    assert native_error(response, 404) == "metrics are off (metrics.enabled: false)"
    assert gw.on_loop(lambda g: [f.samples for f in g.ops.metrics.families() if f.name == "seadragon_requests"]) == [[]]
