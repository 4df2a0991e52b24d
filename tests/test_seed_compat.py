"""Issue 8, seed compatibility: seed 000's `default_model` and seed 002's endpoint names without
`/api`, through a real gateway in front of the fake backend."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from seadragon_gw.config import ConfigError, parse_config
from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error, openai_error
from tests.support.fakebackend import FakeBackend

NO_MODEL = {"messages": [{"role": "user", "content": "which model?"}], "stream": False}


@pytest.fixture
def defaulted(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    return gateways.start([backend], default_model="qwen2.5:7b")


# ------------------------------------------------------------------ seed 000: default_model


def test_a_chat_naming_no_model_uses_default_model_and_the_backend_is_told(
        defaulted: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.post(defaulted.url + "/api/chat", json=NO_MODEL, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "qwen2.5:7b"
    (sent,) = backend.inference_requests()
    assert sent.json == {**NO_MODEL, "model": "qwen2.5:7b"}


def test_default_model_on_the_openai_and_generate_routes(defaulted: RunningGateway, backend: FakeBackend) -> None:
    openai = httpx.post(defaulted.url + "/v1/chat/completions", json={"messages": NO_MODEL["messages"]},
                        headers=ALICE)
    generate = httpx.post(defaulted.url + "/api/generate", json={"prompt": "hi", "stream": False}, headers=ALICE)
    assert (openai.status_code, generate.status_code) == (200, 200), (openai.text, generate.text)
    assert [(r.json or {}).get("model") for r in backend.inference_requests()] == ["qwen2.5:7b", "qwen2.5:7b"]


def test_default_model_over_the_websocket(defaulted: RunningGateway, backend: FakeBackend) -> None:
    url = defaulted.url.replace("http://", "ws://", 1) + "/api/ws"
    with connect(url, additional_headers=ALICE, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ready"}
        ws.send(json.dumps({"id": "1", "route": "/api/chat", "body": NO_MODEL}))
        assert json.loads(ws.recv(timeout=5))["chunk"]["model"] == "qwen2.5:7b"
        assert json.loads(ws.recv(timeout=5))["done"] is True
    (sent,) = backend.inference_requests()
    assert sent.json == {**NO_MODEL, "model": "qwen2.5:7b"}


def test_a_request_naming_its_model_keeps_it(defaulted: RunningGateway, backend: FakeBackend) -> None:
    named = httpx.post(defaulted.url + "/api/chat", json={**NO_MODEL, "model": "llama3"}, headers=ALICE)
    assert named.status_code == 200 and named.json()["model"] == "llama3"
    httpx.post(defaulted.url + "/api/chat", json={**NO_MODEL, "name": "llama3"}, headers=ALICE)  # older clients
    first, second = [r for r in backend.requests if r.path == "/api/chat"]
    assert first.body == orjson.dumps({**NO_MODEL, "model": "llama3"})  # the client's bytes, untouched
    assert second.json == {**NO_MODEL, "name": "llama3"}  # `name` names the model: no default added


def test_without_default_model_a_missing_model_is_still_400(gw: RunningGateway, backend: FakeBackend) -> None:
    assert native_error(httpx.post(gw.url + "/api/chat", json=NO_MODEL, headers=ALICE), 400) == "model is required"
    assert openai_error(httpx.post(gw.url + "/v1/chat/completions", json=NO_MODEL, headers=ALICE),
                        400) == "model is required"
    assert backend.inference_requests() == []


def test_a_default_model_no_backend_serves_is_404_naming_it(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], default_model="not-there")
    response = httpx.post(gw.url + "/api/chat", json=NO_MODEL, headers=ALICE)
    assert native_error(response, 404) == "model 'not-there' not found"


def test_default_model_must_be_a_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"default_model": " "})
    assert str(caught.value) == "default_model: must be a model name (leave it out for none)"
    assert parse_config({}).default_model is None


# ------------------------------------------------------------------ seed 002: names without /api


@pytest.mark.parametrize("path", ["/chat", "/generate"])
def test_seed_002_inference_names_answer_as_api(gw: RunningGateway, backend: FakeBackend, path: str) -> None:
    body = {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "prompt": "x", "stream": False}
    response = httpx.post(gw.url + path, json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.json()["done"] is True
    (sent,) = backend.inference_requests()
    assert sent.path == "/api" + path and sent.json == body


def test_seed_002_embed(gw: RunningGateway, backend: FakeBackend) -> None:
    body = {"model": "nomic-embed-text", "input": ["a", "b"]}
    via_seed = httpx.post(gw.url + "/embed", json=body, headers=ALICE)
    via_api = httpx.post(gw.url + "/api/embed", json=body, headers=ALICE)
    assert via_seed.status_code == 200, via_seed.text
    assert via_seed.json()["embeddings"] == via_api.json()["embeddings"]
    assert [r.path for r in backend.inference_requests()] == ["/api/embed", "/api/embed"]


def test_seed_002_tags_is_api_tags(gw: RunningGateway) -> None:
    via_seed = httpx.get(gw.url + "/tags")
    assert via_seed.status_code == 200
    assert via_seed.json() == httpx.get(gw.url + "/api/tags").json()
    assert httpx.head(gw.url + "/tags").status_code == 200


def test_seed_002_names_need_the_same_credential_and_answer_errors_natively(
        gw: RunningGateway, backend: FakeBackend) -> None:
    body = {"model": "llama3", "messages": [], "stream": False}
    assert native_error(httpx.post(gw.url + "/chat", json=body), 401) == "unauthorized: missing or invalid credentials"
    assert native_error(httpx.post(gw.url + "/chat", json={**body, "model": "nope"}, headers=ALICE),
                        404) == "model 'nope' not found"
    assert native_error(httpx.put(gw.url + "/chat"), 405) == "method not allowed"
    assert backend.inference_requests() == []
