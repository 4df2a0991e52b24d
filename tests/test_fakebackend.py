"""The fake backend must satisfy the real ollama/openai clients, or gateway tests built on it prove nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import httpx
import ollama
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.fakebackend import FakeBackend
from tests.support.server import ThreadedServer, free_port

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeBackend]:
    with FakeBackend() as fb:
        yield fb


@pytest.fixture
def fb(shared: FakeBackend) -> Iterator[FakeBackend]:
    shared.reset()
    yield shared
    shared.reset()
    shared.wait_idle()


@pytest.fixture
def oc(fb: FakeBackend) -> Iterator[ollama.Client]:
    with ollama.Client(host=fb.url) as client:
        yield client


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


# ---------------------------------------------------------------- real ollama client


def test_ollama_chat_stream_and_not(fb: FakeBackend, oc: ollama.Client) -> None:
    parts = list(oc.chat(model="llama3", messages=CHAT["messages"], stream=True))
    assert [p.message.content for p in parts] == ["chunk0 ", "chunk1 ", "chunk2 ", ""]
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 3
    assert all(p.model == "llama3" for p in parts)  # echoed exactly as sent
    full = oc.chat(model="llama3:latest", messages=CHAT["messages"])
    assert full.message.content == "chunk0 chunk1 chunk2 " and full.model == "llama3:latest"
    assert [r.json["stream"] for r in fb.inference_requests()] == [True, False]


def test_ollama_generate(fb: FakeBackend, oc: ollama.Client) -> None:
    parts = list(oc.generate(model="qwen2.5:7b", prompt="hi", stream=True))
    assert "".join(p.response for p in parts) == "chunk0 chunk1 chunk2 "
    assert parts[-1].context == [1, 2, 3]
    assert oc.generate(model="qwen2.5:7b", prompt="hi").response == "chunk0 chunk1 chunk2 "
    assert oc.generate(model="qwen2.5:7b", prompt="").done_reason == "load"


def test_ollama_list_show_ps(fb: FakeBackend, oc: ollama.Client) -> None:
    names = [m.model for m in oc.list().models]
    assert names == ["llama3:latest", "qwen2.5:7b", "nomic-embed-text:latest"]
    assert oc.list().models[0].details.family == "llama"
    shown = oc.show("llama3")
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.capabilities == ["completion", "tools"]
    with pytest.raises(ollama.ResponseError) as err:
        oc.show("missing")
    assert err.value.status_code == 404 and "not found" in err.value.error
    oc.chat(model="llama3", messages=CHAT["messages"])
    assert [m.model for m in oc.ps().models] == ["llama3:latest"]


def test_ollama_embed(fb: FakeBackend, oc: ollama.Client) -> None:
    out = oc.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(out.embeddings) == 2 and len(out.embeddings[0]) == 4
    assert oc.embed(model="nomic-embed-text", input="a").embeddings[0] == out.embeddings[0]
    assert len(oc.embeddings(model="nomic-embed-text", prompt="a").embedding) == 4
    assert len(fb.inference_requests()) == 3


def test_ollama_unknown_model(oc: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="nope", messages=CHAT["messages"])
    assert err.value.status_code == 404
    assert err.value.error == 'model "nope" not found, try pulling it first'


def test_native_defaults_and_plain_routes(fb: FakeBackend) -> None:
    r = httpx.post(f"{fb.url}/api/chat", json=CHAT)  # no "stream": Ollama streams
    assert r.headers["content-type"] == "application/x-ndjson" and len(r.text.splitlines()) == 4
    r = httpx.post(f"{fb.url}/api/chat", json={**CHAT, "stream": False})
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert httpx.get(fb.url).text == "Ollama is running"
    assert httpx.head(fb.url).status_code == 200
    assert httpx.get(f"{fb.url}/api/version").json() == {"version": "0.12.6"}
    assert httpx.get(f"{fb.url}/api/chat").status_code == 405
    rec = fb.requests[0]
    assert rec.method == "POST" and rec.path == "/api/chat" and rec.json == CHAT
    assert rec.headers["content-type"] == "application/json"


def test_model_management(fb: FakeBackend, oc: ollama.Client) -> None:
    statuses = [p.status for p in oc.pull("tinyllama", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert oc.pull("tinyllama").status == "success"
    assert oc.copy("tinyllama", "tiny2").status == "success"
    assert oc.delete("tiny2").status == "success"
    with pytest.raises(ollama.ResponseError):
        oc.delete("tiny2")
    assert [p.status for p in oc.create(model="mine", from_="llama3", stream=True)][-1] == "success"
    assert httpx.head(f"{fb.url}/api/blobs/sha256:abc").status_code == 404
    assert httpx.post(f"{fb.url}/api/blobs/sha256:abc", content=b"x").status_code == 201
    assert "tinyllama:latest" in fb.models and "mine:latest" in fb.models
    assert [r.path for r in fb.requests if r.method == "DELETE"] == ["/api/delete", "/api/delete"]
    fb.models.remove("tinyllama:latest")
    fb.models.remove("mine:latest")


# ---------------------------------------------------------------- real openai client


def test_openai_client(fb: FakeBackend) -> None:
    with openai.OpenAI(base_url=f"{fb.url}/v1", api_key="x", max_retries=0) as client:
        _exercise_openai(client)


def _exercise_openai(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()][0] == "llama3:latest"
    assert client.models.retrieve("qwen2.5:7b").owned_by == "library"
    done = client.chat.completions.create(model="llama3", messages=CHAT["messages"])
    assert done.choices[0].message.content == "chunk0 chunk1 chunk2 " and done.usage.completion_tokens == 3
    stream = client.chat.completions.create(
        model="llama3", messages=CHAT["messages"], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "chunk0 chunk1 chunk2 "
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    emb = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 4
    text = "".join(c.choices[0].text for c in client.completions.create(model="llama3", prompt="x", stream=True))
    assert text == "chunk0 chunk1 chunk2 "
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=CHAT["messages"])
    assert err.value.body["type"] == "not_found_error"


def test_kind_openai_serves_only_v1() -> None:
    with FakeBackend(kind="openai") as fb:
        assert httpx.post(f"{fb.url}/api/chat", json=CHAT).status_code == 404
        assert httpx.get(f"{fb.url}/api/tags").status_code == 404
        assert httpx.get(f"{fb.url}/health").json() == {"status": "ok"}
        r = httpx.post(f"{fb.url}/v1/chat/completions", json=CHAT)
        assert r.json()["object"] == "chat.completion"
        assert [r.path for r in fb.inference_requests()] == ["/v1/chat/completions"]


# ---------------------------------------------------------------- controls


def test_hold_and_release(fb: FakeBackend, pool: ThreadPoolExecutor) -> None:
    fb.hold()
    futures = [pool.submit(httpx.post, f"{fb.url}/api/chat", json=CHAT, timeout=10) for _ in range(2)]
    fb.wait_waiting(2)
    assert fb.active == 2 and not any(f.done() for f in futures)
    assert len(fb.wait_for_inference(2)) == 2  # recorded on arrival, before the hold
    fb.release()
    assert all(f.result(timeout=5).text.count("\n") == 4 for f in futures)
    fb.wait_idle()
    assert httpx.post(f"{fb.url}/api/chat", json=CHAT).status_code == 200  # release turned holding off


def test_hold_mid_stream(fb: FakeBackend) -> None:
    fb.hold_mid_stream()
    with httpx.stream("POST", f"{fb.url}/api/chat", json=CHAT, timeout=10) as r:
        lines = r.iter_lines()
        assert '"chunk0 "' in next(lines)
        fb.wait_waiting(1)
        fb.release()
        assert sum(1 for _ in lines) == 3
    assert fb.disconnects == 0


def test_client_disconnect_mid_stream_is_counted(fb: FakeBackend) -> None:
    fb.hold_mid_stream()
    with httpx.Client(timeout=10) as client, client.stream("POST", f"{fb.url}/api/chat", json=CHAT) as r:
        lines = r.iter_lines()  # keep a reference: a collected iterator closes the connection early
        next(lines)
        fb.wait_waiting(1)
    fb.wait_disconnects(1)
    fb.wait_waiting(0)
    fb.wait_idle()


def test_client_disconnect_while_held_is_counted(fb: FakeBackend, pool: ThreadPoolExecutor) -> None:
    fb.hold()
    future = pool.submit(httpx.post, f"{fb.url}/v1/chat/completions", json=CHAT, timeout=0.3)
    fb.wait_waiting(1)
    with pytest.raises(httpx.ReadTimeout):
        future.result(timeout=5)
    fb.wait_disconnects(1)
    fb.wait_idle()


def test_fail_mid_stream(fb: FakeBackend) -> None:
    fb.fail_mid_stream = True
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{fb.url}/api/chat", json=CHAT, timeout=5) as r:
            for _ in r.iter_lines():
                pass
    fb.wait_idle()


def test_respond_status_and_delay(fb: FakeBackend) -> None:
    fb.respond_status(503, {"error": "busy"}, headers={"retry-after": "1"})
    r = httpx.post(f"{fb.url}/api/chat", json=CHAT)
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"error": "busy"}, "1")
    assert httpx.get(f"{fb.url}/api/tags").status_code == 200  # only inference is scripted
    fb.respond_status(None)
    fb.delay_s = 0.5
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fb.url}/api/chat", json=CHAT, timeout=0.1)
    fb.delay_s = 0
    assert httpx.post(f"{fb.url}/api/chat", json=CHAT).status_code == 200


def test_wait_helpers_time_out(fb: FakeBackend) -> None:
    with pytest.raises(TimeoutError):
        fb.wait_for_inference(1, timeout=0.05)
    with pytest.raises(TimeoutError):
        fb.wait_disconnects(1, timeout=0.05)


# ---------------------------------------------------------------- ThreadedServer


def _lifespan_app(events: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        events.append("startup")
        yield
        events.append("shutdown")

    async def ok(request: Request) -> PlainTextResponse:  # async: a sync view would add an AnyIO worker thread
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)], lifespan=lifespan)


def test_threaded_server_restarts_and_runs_lifespan() -> None:
    before = threading.active_count()
    events: list[str] = []
    server = ThreadedServer(_lifespan_app(events))
    ports = set()
    for _ in range(3):
        with server, FakeBackend() as fb:
            assert httpx.get(server.url).text == "ok"
            assert httpx.get(f"{fb.url}/api/version").status_code == 200
            assert server.call(_echo, 41, timeout=2) == 42
            ports.add(server.port)
    assert events == ["startup", "shutdown"] * 3
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]
    for port in ports:  # nothing left listening
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/")


def test_threaded_server_fixed_port() -> None:
    port = free_port()
    with ThreadedServer(_lifespan_app([]), port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}" and httpx.get(server.url).text == "ok"


async def _echo(value: int) -> int:
    return value + 1
