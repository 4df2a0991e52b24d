"""Every error status of the core issue, in the body shape of its route family, never a trace."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ADMIN, ALICE, RunningGateway
from tests.support.checks import native_error, openai_error
from tests.support.fakebackend import FakeBackend
from tests.support.server import free_port
from tests.support.shared import SharedGateways, shared_fixtures

NATIVE_CHAT = "/api/chat"
OPENAI_CHAT = "/v1/chat/completions"
CHAT_BODY = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
Check = Callable[[httpx.Response, int], str]

# (path, checker) for each route family; the alias /api/chat/completions is OpenAI-shaped too
FAMILIES = [
    pytest.param(NATIVE_CHAT, native_error, id="native"),
    pytest.param(OPENAI_CHAT, openai_error, id="openai"),
    pytest.param("/api/chat/completions", openai_error, id="openai-alias"),
]


def post(gw: RunningGateway, path: str, body: object = CHAT_BODY, headers: dict | None = ALICE,
         content: bytes | None = None) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(gw.url + path, content=content, headers=headers, timeout=10)


shared, backend, gw = shared_fixtures("errors")


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def occupy_slot(gw: RunningGateway, backend: FakeBackend, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """Hold the backend and park one request in its only slot."""
    backend.hold()
    first = pool.submit(post, gw, NATIVE_CHAT)
    backend.wait_waiting(1)
    return first


# ------------------------------------------------------------------ 400


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_400_malformed_json(gw: RunningGateway, path: str, check: Check) -> None:
    assert "JSON" in check(post(gw, path, content=b'{"model": "llama3", '), 400)


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_400_missing_model(gw: RunningGateway, backend: FakeBackend, path: str, check: Check) -> None:
    assert "model" in check(post(gw, path, {"messages": [{"role": "user", "content": "hi"}]}), 400)
    assert backend.inference_requests() == []


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_400_body_not_an_object(gw: RunningGateway, path: str, check: Check) -> None:
    assert "object" in check(post(gw, path, ["llama3"]), 400)


# ------------------------------------------------------------------ 401 / 403


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer tok-wrong"}], ids=["none", "wrong"])
@pytest.mark.parametrize(("path", "check"), [*FAMILIES, pytest.param("/api/show", native_error, id="show")])
def test_401(gw: RunningGateway, backend: FakeBackend, path: str, check: Check, headers: dict | None) -> None:
    resp = post(gw, path, headers=headers)
    check(resp, 401)
    assert resp.headers["www-authenticate"].lower().startswith("bearer")
    assert backend.inference_requests() == []


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer tok-wrong"}], ids=["none", "wrong"])
def test_401_on_v1_models(gw: RunningGateway, headers: dict | None) -> None:
    resp = httpx.get(gw.url + "/v1/models", headers=headers)
    openai_error(resp, 401)
    assert "www-authenticate" in resp.headers


def test_403_non_admin_on_management_route(gw: RunningGateway, backend: FakeBackend) -> None:
    assert "admin" in native_error(post(gw, "/api/pull", {"model": "phi3"}), 403)
    assert all(r.path != "/api/pull" for r in backend.requests)


# ------------------------------------------------------------------ 404 / 405


def test_404_unknown_model_native(gw: RunningGateway) -> None:
    assert native_error(post(gw, NATIVE_CHAT, {**CHAT_BODY, "model": "x"}), 404) == "model 'x' not found"
    assert native_error(post(gw, "/api/show", {"model": "x"}), 404) == "model 'x' not found"


def test_404_unknown_model_openai(gw: RunningGateway) -> None:
    assert "model 'x' not found" in openai_error(post(gw, OPENAI_CHAT, {**CHAT_BODY, "model": "x"}), 404)


def test_404_unknown_route_is_json(gw: RunningGateway) -> None:
    native_error(httpx.get(gw.url + "/api/nope", headers=ALICE), 404)
    native_error(httpx.post(gw.url + "/nothing/here", headers=ALICE), 404)
    openai_error(httpx.get(gw.url + "/v1/nope", headers=ALICE), 404)


def test_405_wrong_method(gw: RunningGateway) -> None:
    native_error(httpx.get(gw.url + NATIVE_CHAT, headers=ALICE), 405)
    native_error(httpx.post(gw.url + "/api/tags", headers=ALICE), 405)
    openai_error(httpx.get(gw.url + OPENAI_CHAT, headers=ALICE), 405)


# ------------------------------------------------------------------ 413


@pytest.fixture
def small_gw(shared: SharedGateways, backend: FakeBackend) -> RunningGateway:
    return shared.get(server={"max_body_bytes": 2048})


def big_body() -> bytes:
    return json.dumps({**CHAT_BODY, "messages": [{"role": "user", "content": "x" * 4000}]}).encode()


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_413_with_content_length(small_gw: RunningGateway, backend: FakeBackend, path: str, check: Check) -> None:
    assert "too large" in check(post(small_gw, path, content=big_body()), 413)
    assert backend.inference_requests() == []


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_413_chunked_without_content_length(small_gw: RunningGateway, backend: FakeBackend,
                                            path: str, check: Check) -> None:
    data = big_body()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    request = httpx.Request("POST", small_gw.url + path, content=pieces(),
                            headers={**ALICE, "content-type": "application/json"})
    assert "content-length" not in request.headers
    with httpx.Client(timeout=10) as client:
        resp = client.send(request)
    assert "too large" in check(resp, 413)
    assert backend.inference_requests() == []


def test_body_under_limit_passes(small_gw: RunningGateway) -> None:
    assert post(small_gw, NATIVE_CHAT).status_code == 200


# ------------------------------------------------------------------ 502 / 503 / 504


@pytest.mark.parametrize(("path", "check"), [*FAMILIES, pytest.param("/api/show", native_error, id="show")])
@pytest.mark.parametrize("stream", [False, True])
def test_502_backend_unreachable(shared: SharedGateways, dead_url: str, path: str, check: Check,
                                 stream: bool) -> None:
    gw = shared.get([{"name": "dead", "kind": "ollama", "url": dead_url, "models": ["llama3"]}])
    assert "unreachable" in check(post(gw, path, {**CHAT_BODY, "stream": stream}), 502)


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_503_queue_full(shared: SharedGateways, backend: FakeBackend, pool: ThreadPoolExecutor,
                        path: str, check: Check) -> None:
    gw = shared.get(queue={"max_waiting": 0, "retry_after_s": 7})
    first = occupy_slot(gw, backend, pool)
    resp = post(gw, path, {**CHAT_BODY, "stream": True})
    check(resp, 503)
    assert resp.headers["retry-after"] == "7"
    backend.release()
    assert first.result(10).status_code == 200


def test_504_queue_wait_timeout(shared: SharedGateways, backend: FakeBackend, pool: ThreadPoolExecutor) -> None:
    gw = shared.get(queue={"timeout_s": 0.3})
    first = occupy_slot(gw, backend, pool)
    assert "timed out" in native_error(post(gw, NATIVE_CHAT), 504)
    assert "timed out" in openai_error(post(gw, OPENAI_CHAT), 504)
    backend.release()
    assert first.result(10).status_code == 200


@pytest.mark.parametrize(("path", "check"), FAMILIES)
def test_504_upstream_timeout(shared: SharedGateways, backend: FakeBackend, path: str, check: Check) -> None:
    gw = shared.get([{"name": "slow", "kind": "ollama", "url": backend.url, "read_timeout_s": 0.3}])
    backend.delay_s = 2
    assert "timed out" in check(post(gw, path), 504)


def test_admin_management_errors_are_native(shared: SharedGateways, dead_url: str) -> None:
    gw = shared.get([{"name": "dead", "kind": "ollama", "url": dead_url, "models": ["llama3"]}])
    native_error(post(gw, "/api/pull", {"model": "phi3"}, headers=ADMIN), 502)
