"""The native Ollama API through the gateway, driven by the real `ollama` Python client and httpx."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ollama
import pytest

from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error, poll
from tests.support.fakebackend import FakeBackend, Recorded
from tests.support.shared import SharedGateways, shared_fixtures

ANSWER = "chunk0 chunk1 chunk2 "
USER_MSG = [{"role": "user", "content": "hello there"}]


shared, backend, gw = shared_fixtures("native")


@pytest.fixture
def own_backend() -> Iterator[FakeBackend]:
    """A backend of this test's own, for tests that change its model list."""
    with FakeBackend() as fb:
        yield fb


@pytest.fixture
def own_gw(gateways: GatewayFactory, own_backend: FakeBackend) -> RunningGateway:
    return gateways.start([own_backend])


def spec(fb: FakeBackend, name: str) -> dict[str, object]:
    return {"name": name, "kind": fb.kind, "url": fb.url}


def client(gw: RunningGateway, headers: dict[str, str] | None = ALICE, prefix: str = "") -> ollama.Client:
    return ollama.Client(host=gw.url + prefix, headers=headers or {})


def last(backend: FakeBackend, path: str) -> Recorded:
    """The latest request the backend got on `path` (model refreshes may arrive after it)."""
    found = [r for r in list(backend.requests) if r.path == path]
    assert found, f"backend never got {path}"
    return found[-1]


def names(gw: RunningGateway) -> list[str]:
    return [m["name"] for m in httpx.get(gw.url + "/api/tags").json()["models"]]


# ------------------------------------------------------------------ inference


def test_chat_non_stream(gw: RunningGateway) -> None:
    resp = client(gw).chat(model="llama3", messages=USER_MSG)
    assert resp.message.role == "assistant"
    assert resp.message.content == ANSWER
    assert resp.done and resp.done_reason == "stop"
    assert resp.model == "llama3"


def test_chat_stream(gw: RunningGateway) -> None:
    parts = list(client(gw).chat(model="llama3", messages=USER_MSG, stream=True))
    assert "".join(p.message.content for p in parts) == ANSWER
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == 3
    assert {p.model for p in parts} == {"llama3"}


def test_generate_non_stream(gw: RunningGateway) -> None:
    resp = client(gw).generate(model="llama3", prompt="say something")
    assert resp.response == ANSWER
    assert resp.done and resp.context == [1, 2, 3]


def test_generate_stream(gw: RunningGateway) -> None:
    parts = list(client(gw).generate(model="llama3", prompt="say something", stream=True))
    assert "".join(p.response for p in parts) == ANSWER
    assert parts[-1].done and not any(p.done for p in parts[:-1])


def test_list_shows_backend_models_with_tags(gw: RunningGateway) -> None:
    listed = [m.model for m in client(gw).list().models]
    assert {"llama3:latest", "qwen2.5:7b", "nomic-embed-text:latest"} <= set(listed)


def test_show_parses_model_info_and_capabilities(gw: RunningGateway) -> None:
    resp = client(gw).show("llama3")
    assert resp.modelinfo is not None and resp.modelinfo["general.architecture"] == "llama"
    assert resp.capabilities is not None and "tools" in resp.capabilities
    assert resp.details is not None and resp.details.family == "llama"


def test_embed_string_and_list(gw: RunningGateway) -> None:
    c = client(gw)
    one = c.embed(model="nomic-embed-text", input="a sentence")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 4
    two = c.embed(model="nomic-embed-text", input=["first", "second"])
    assert len(two.embeddings) == 2 and two.embeddings[0] != two.embeddings[1]
    assert c.embed(model="nomic-embed-text", input=["a sentence"]).embeddings == one.embeddings


def test_embeddings_legacy(gw: RunningGateway) -> None:
    resp = client(gw).embeddings(model="nomic-embed-text", prompt="a sentence")
    assert len(resp.embedding) == 4


def test_ps_lists_loaded_models(gw: RunningGateway) -> None:
    c = client(gw)
    c.chat(model="llama3", messages=USER_MSG)
    assert [m.model for m in c.ps().models] == ["llama3:latest"]


# ------------------------------------------------------------------ gateway-answered routes


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_root_says_ollama_is_running(gw: RunningGateway, method: str) -> None:
    resp = httpx.request(method, gw.url + "/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    if method == "GET":
        assert resp.text == "Ollama is running"


def test_version(gw: RunningGateway) -> None:
    resp = httpx.get(gw.url + "/api/version")
    assert resp.status_code == 200 and resp.json() == {"version": "0.12.6"}


def test_tags_names_carry_tags(gw: RunningGateway) -> None:
    listed = names(gw)
    assert listed and all(":" in n for n in listed)


# ------------------------------------------------------------------ /api/ollama prefix


def test_prefix_with_ollama_client(gw: RunningGateway) -> None:
    c = client(gw, prefix="/api/ollama")
    assert c.chat(model="llama3", messages=USER_MSG).message.content == ANSWER
    assert "llama3:latest" in [m.model for m in c.list().models]


def test_prefix_short_path_form(gw: RunningGateway, backend: FakeBackend) -> None:
    body = {"model": "llama3", "messages": USER_MSG, "stream": False}
    resp = httpx.post(gw.url + "/api/ollama/chat", json=body, headers=ALICE)
    assert resp.status_code == 200 and resp.json()["message"]["content"] == ANSWER
    assert last(backend, "/api/chat").json["model"] == "llama3"


# ------------------------------------------------------------------ what reaches the backend


def test_upstream_headers_drop_auth_and_use_backend_host(gw: RunningGateway, backend: FakeBackend) -> None:
    client(gw).chat(model="llama3", messages=USER_MSG)
    sent = last(backend, "/api/chat")
    assert "authorization" not in sent.headers
    assert sent.headers["host"] == urlsplit(backend.url).netloc
    assert sent.headers["host"] != urlsplit(gw.url).netloc


def test_other_client_headers_reach_the_backend_byte_for_byte(gw: RunningGateway, backend: FakeBackend) -> None:
    """Headers go from the client's parsed head into the upstream's without a decode: a
    latin-1 value (allowed by HTTP, if rare) arrives as it was sent; credentials still do not."""
    headers = [(k.encode(), v.encode()) for k, v in ALICE.items()]
    headers += [(b"X-Trace", b"caf\xe9; 1"), (b"Cookie", b"session=1")]
    body = {"model": "llama3", "messages": USER_MSG, "stream": False}
    assert httpx.post(gw.url + "/api/chat", json=body, headers=headers).status_code == 200
    sent = last(backend, "/api/chat")
    assert sent.headers["x-trace"] == "caf\xe9; 1"  # the fake decodes as latin-1
    assert sent.headers["accept-encoding"] == "identity"
    assert "cookie" not in sent.headers and "authorization" not in sent.headers


@pytest.mark.parametrize("name", ["llama3", "llama3:latest"])
def test_tag_forms_route_and_echo_client_name(gw: RunningGateway, name: str) -> None:
    resp = client(gw).chat(model=name, messages=USER_MSG)
    assert resp.model == name and resp.message.content == ANSWER


def test_body_bytes_forwarded_unchanged(gw: RunningGateway, backend: FakeBackend) -> None:
    raw = ('{ "model" : "llama3",\n  "messages": [{"role":"user","content":"h\\u00e9llo  caf\u00e9"}],'
           ' "stream":false, "options": {"num_ctx": 32768, "temperature": 0.50}, "zz_extra": [1, 2.0]}').encode()
    resp = httpx.post(gw.url + "/api/chat", content=raw, headers={**ALICE, "content-type": "application/json"})
    assert resp.status_code == 200
    assert backend.inference_requests()[-1].body == raw


def raw_request(gw: RunningGateway, head: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as curl would (HTTP/1.1, Connection: close) and de-chunk the answer by hand."""
    netloc = urlsplit(gw.url).netloc
    host, port = netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") != "chunked":
        return int(status_line.split()[1]), headers, rest
    out = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return int(status_line.split()[1]), headers, out


def test_curl_style_raw_request_streams_ndjson(gw: RunningGateway, backend: FakeBackend) -> None:
    """`curl -d '{...}'`: form content type, no `stream` field, a Host header naming another site."""
    body = b'{"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}'
    head = ("POST /api/chat HTTP/1.1\r\nHost: gateway.example.com\r\nUser-Agent: curl/8.5.0\r\n"
            "Accept: */*\r\nAuthorization: Bearer tok-alice\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n")
    status, headers, payload = raw_request(gw, head, body)
    assert status == 200
    assert headers["content-type"].startswith("application/x-ndjson")
    assert headers["x-accel-buffering"] == "no"
    assert payload.endswith(b"}\n") and b"\n\n" not in payload
    lines = [json.loads(line) for line in payload.split(b"\n")[:-1]]
    assert "".join(line["message"]["content"] for line in lines) == ANSWER and lines[-1]["done"] is True
    sent = last(backend, "/api/chat")
    assert sent.body == body
    assert sent.headers["host"] == urlsplit(backend.url).netloc
    assert "authorization" not in sent.headers


# ------------------------------------------------------------------ OpenAI-kind backends on the native API


@pytest.fixture(scope="module")
def openai_backend() -> Iterator[FakeBackend]:
    with FakeBackend(models=["gpt-oss:20b"], kind="openai") as fb:
        yield fb


def test_openai_backend_model_listed_in_tags(shared: SharedGateways, openai_backend: FakeBackend) -> None:
    gw = shared.get([spec(shared.backend, "ollama"), spec(openai_backend, "llamacpp")])
    entries = {m["name"]: m for m in httpx.get(gw.url + "/api/tags").json()["models"]}
    assert "llama3:latest" in entries
    synth = entries["gpt-oss:20b"]
    assert isinstance(synth["details"]["family"], str)
    assert isinstance(synth["details"]["parameter_size"], str)
    assert [m.model for m in client(gw).list().models].count("gpt-oss:20b") == 1


def test_native_chat_for_openai_backend_model_is_translated(shared: SharedGateways,
                                                            openai_backend: FakeBackend) -> None:
    """Only the OpenAI-kind backend has the model: served through translation (tests/test_translate.py)."""
    gw = shared.get([spec(shared.backend, "ollama"), spec(openai_backend, "llamacpp")])
    before = len(openai_backend.inference_requests())
    reply = client(gw).chat(model="gpt-oss:20b", messages=USER_MSG, stream=False)
    assert reply.model == "gpt-oss:20b" and reply.done is True and reply.message.content
    assert [r.path for r in openai_backend.inference_requests()[before:]] == ["/v1/chat/completions"]


# ------------------------------------------------------------------ admin-only model management


def test_admin_pull_then_tags_shows_model(own_gw: RunningGateway, own_backend: FakeBackend) -> None:
    gw = own_gw
    assert "phi3:mini" not in names(gw)
    resp = client(gw, ADMIN).pull("phi3:mini")
    assert resp.status == "success"
    assert last(own_backend, "/api/pull").json == {"model": "phi3:mini", "insecure": False, "stream": False}
    poll(lambda: "phi3:mini" in names(gw), what="pulled model in /api/tags")
    statuses = [p.status for p in client(gw, ADMIN).pull("gemma3", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    poll(lambda: "gemma3:latest" in names(gw), what="stream-pulled model in /api/tags")


def test_admin_create_copy_delete(own_gw: RunningGateway, own_backend: FakeBackend) -> None:
    gw, backend = own_gw, own_backend
    c = client(gw, ADMIN)
    assert c.create(model="mine", from_="llama3").status == "success"
    assert last(backend, "/api/create").json["from"] == "llama3"
    poll(lambda: "mine:latest" in names(gw), what="created model in /api/tags")
    c.copy("llama3", "llama3-copy")
    assert last(backend, "/api/copy").json == {"source": "llama3", "destination": "llama3-copy"}
    poll(lambda: "llama3-copy:latest" in names(gw), what="copied model in /api/tags")
    c.delete("qwen2.5:7b")
    assert last(backend, "/api/delete").method == "DELETE"
    assert last(backend, "/api/delete").json == {"model": "qwen2.5:7b"}
    poll(lambda: "qwen2.5:7b" not in names(gw), what="deleted model gone from /api/tags")


def test_admin_push_forwarded(gw: RunningGateway, backend: FakeBackend) -> None:
    body = {"model": "llama3", "stream": False}
    resp = httpx.post(gw.url + "/api/push", json=body, headers=ADMIN)
    # the fake, like a gin server without the route, answers a plain-text 404: passed on as is
    assert (resp.status_code, resp.text) == (404, "404 page not found")
    sent = last(backend, "/api/push")
    assert sent.json == body
    assert "authorization" not in sent.headers


def test_admin_blobs_head_and_upload(gw: RunningGateway, backend: FakeBackend, tmp_path: Path) -> None:
    blob = tmp_path / "adapter.bin"
    blob.write_bytes(b"\x00\x01binary blob bytes\xff" * 100)
    c = client(gw, ADMIN)
    digest = c.create_blob(blob)
    assert digest.startswith("sha256:")
    sent = last(backend, f"/api/blobs/{digest}")
    assert sent.method == "POST"
    assert sent.body == blob.read_bytes()
    head = httpx.head(f"{gw.url}/api/blobs/{digest}", headers=ADMIN)
    assert head.status_code == 200
    missing = httpx.head(f"{gw.url}/api/blobs/sha256:{'0' * 64}", headers=ADMIN)
    assert missing.status_code == 404


MANAGEMENT = [
    ("POST", "/api/pull", {"model": "phi3"}),
    ("POST", "/api/push", {"model": "llama3"}),
    ("POST", "/api/create", {"model": "mine", "from": "llama3"}),
    ("POST", "/api/copy", {"source": "llama3", "destination": "x"}),
    ("DELETE", "/api/delete", {"model": "llama3"}),
    ("HEAD", f"/api/blobs/sha256:{'0' * 64}", None),
    ("POST", f"/api/blobs/sha256:{'0' * 64}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MANAGEMENT, ids=lambda v: v if isinstance(v, str) else "")
def test_management_routes_refused_for_non_admin(gw: RunningGateway, backend: FakeBackend,
                                                 method: str, path: str, body: dict | None) -> None:
    content = None if body is not None else b"raw blob bytes"
    resp = httpx.request(method, gw.url + path, json=body, content=content, headers=ALICE)
    if method == "HEAD":
        assert resp.status_code == 403  # no body on HEAD
    else:
        assert "admin" in native_error(resp, 403)
    assert [r.path for r in backend.requests if r.path == path.split("?")[0]] == []


@pytest.mark.parametrize(("path", "body"), [
    ("/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]}),
    ("/api/embeddings", {"model": "nomic-embed-text", "prompt": "a"}),
])
def test_embed_without_stream_field_is_not_a_stream(gw: RunningGateway, backend: FakeBackend,
                                                    path: str, body: dict) -> None:
    """Embeddings are never streamed (Roo's embedder sends no `stream`), so even after waiting in the
    queue the reply is plain JSON with the backend's real status, not early 200 stream headers."""
    backend.hold()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, gw.url + "/api/chat", json={"model": "llama3", "messages": USER_MSG,
                                                                     "stream": False}, headers=ALICE, timeout=10)
        backend.wait_waiting(1)
        queued = pool.submit(httpx.post, gw.url + path, json=body, headers=ALICE, timeout=10)
        poll(lambda: gw.waiting() == 1, what="the embed request queued")
        backend.respond_status(400, {"error": "input too long"})
        backend.release()
        assert first.result(10).status_code == 400
        assert native_error(queued.result(10), 400) == "input too long"
        assert "x-queue-position" not in queued.result().headers
