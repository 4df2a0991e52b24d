"""The OpenAI-compatible API through the gateway, driven by the real `openai` Python client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import ALICE, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.shared import SharedGateways, shared_fixtures

ANSWER = "chunk0 chunk1 chunk2 "
MESSAGES = [{"role": "user", "content": "hello there friend"}]


def oai(gw: RunningGateway, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + base, api_key="tok-alice", max_retries=0, timeout=10)


def upstream_paths(backend: FakeBackend) -> list[str]:
    return [r.path for r in backend.inference_requests()]


def spec(fb: FakeBackend, name: str) -> dict[str, object]:
    return {"name": name, "kind": fb.kind, "url": fb.url}


shared, backend, gw = shared_fixtures("openai")


@pytest.fixture(scope="module")
def _llamacpp() -> Iterator[FakeBackend]:
    with FakeBackend(models=["qwen-coder:7b"], kind="openai") as fb:
        yield fb


@pytest.fixture
def llamacpp(_llamacpp: FakeBackend) -> FakeBackend:
    """A llama.cpp-like server: OpenAI API only."""
    _llamacpp.reset()
    return _llamacpp


# ------------------------------------------------------------------ /v1 on an Ollama backend


def test_chat_non_stream(gw: RunningGateway, backend: FakeBackend) -> None:
    resp = oai(gw).chat.completions.create(model="llama3", messages=MESSAGES)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == ANSWER
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert resp.model == "llama3"
    sent = backend.inference_requests()[-1]
    assert sent.path == "/v1/chat/completions" and "authorization" not in sent.headers


def test_chat_stream_with_usage(gw: RunningGateway) -> None:
    stream = oai(gw).chat.completions.create(
        model="llama3", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.completion_tokens == 3


def test_completions(gw: RunningGateway, backend: FakeBackend) -> None:
    resp = oai(gw).completions.create(model="llama3", prompt="once upon a time")
    assert resp.choices[0].text == ANSWER
    assert upstream_paths(backend) == ["/v1/completions"]


def test_completions_stream(gw: RunningGateway) -> None:
    chunks = list(oai(gw).completions.create(model="llama3", prompt="once upon", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ANSWER


def test_embeddings(gw: RunningGateway) -> None:
    resp = oai(gw).embeddings.create(model="nomic-embed-text", input=["alpha", "beta"])
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in resp.data)
    assert resp.data[0].embedding != resp.data[1].embedding


def test_models_list(gw: RunningGateway) -> None:
    ids = [m.id for m in oai(gw).models.list()]
    assert {"llama3:latest", "qwen2.5:7b", "nomic-embed-text:latest"} <= set(ids)


def test_models_retrieve(gw: RunningGateway) -> None:
    model = oai(gw).models.retrieve("llama3")
    assert model.id == "llama3" and model.object == "model" and model.owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        oai(gw).models.retrieve("no-such-model")


# ------------------------------------------------------------------ seadragon /api aliases


def test_api_chat_completions_alias(gw: RunningGateway, backend: FakeBackend) -> None:
    resp = oai(gw, "/api").chat.completions.create(model="llama3", messages=MESSAGES)
    assert resp.choices[0].message.content == ANSWER
    chunks = list(oai(gw, "/api").chat.completions.create(model="llama3", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert upstream_paths(backend) == ["/v1/chat/completions"] * 2


def test_api_completions_alias(gw: RunningGateway, backend: FakeBackend) -> None:
    resp = oai(gw, "/api").completions.create(model="llama3", prompt="once upon a time")
    assert resp.choices[0].text == ANSWER
    assert upstream_paths(backend) == ["/v1/completions"]


def test_api_models_alias(gw: RunningGateway) -> None:
    resp = httpx.get(gw.url + "/api/models", headers=ALICE)
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    assert "llama3:latest" in [m["id"] for m in body["data"]]
    assert [m.id for m in oai(gw, "/api").models.list()] == [m["id"] for m in body["data"]]


# ------------------------------------------------------------------ OpenAI-only backends


def test_openai_kind_backend_serves_v1(shared: SharedGateways, llamacpp: FakeBackend) -> None:
    gw = shared.get([spec(llamacpp, "llamacpp")])
    client = oai(gw)
    assert [m.id for m in client.models.list()] == ["qwen-coder:7b"]
    resp = client.chat.completions.create(model="qwen-coder:7b", messages=MESSAGES)
    assert resp.choices[0].message.content == ANSWER and resp.model == "qwen-coder:7b"
    chunks = list(client.chat.completions.create(model="qwen-coder:7b", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert upstream_paths(llamacpp) == ["/v1/chat/completions"] * 2


def test_v1_models_merges_backends(shared: SharedGateways, backend: FakeBackend, llamacpp: FakeBackend) -> None:
    gw = shared.get([spec(backend, "ollama"), spec(llamacpp, "llamacpp")])
    ids = [m.id for m in oai(gw).models.list()]
    assert {"llama3:latest", "qwen2.5:7b", "qwen-coder:7b"} <= set(ids)
    assert len(ids) == len(set(ids))
    # each model goes to the backend that has it
    oai(gw).chat.completions.create(model="qwen-coder:7b", messages=MESSAGES)
    oai(gw).chat.completions.create(model="llama3", messages=MESSAGES)
    assert upstream_paths(llamacpp) == ["/v1/chat/completions"]
    assert upstream_paths(backend) == ["/v1/chat/completions"]


def test_reply_echoes_client_name_when_backend_names_model_differently(gateways) -> None:
    """An OpenAI backend listing `qwen:latest` is reached as `qwen`; the reply says `qwen`."""
    with FakeBackend(models=("qwen:latest",), kind="openai") as fb:
        gw = gateways.start([fb])
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="tok-alice", max_retries=0)
        reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "x"}])
        assert reply.model == "qwen"
        assert fb.inference_requests()[-1].json["model"] == "qwen:latest"
        chunks = list(client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "x"}], stream=True))
        assert {c.model for c in chunks} == {"qwen"}
