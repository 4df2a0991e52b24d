"""Issue 8, graceful shutdown: the real entry point (`python -m seadragon_gw serve`) in a
subprocess, sent SIGTERM/SIGINT while the fake backend holds requests."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ALICE, TOKENS
from tests.support.checks import native_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat

SHUTTING_DOWN = "the gateway is shutting down"
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Served:
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def log(self) -> str:
        return "".join(self.output)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def exit_code(self) -> int:
        return self.process.wait(timeout=30)


def _write_config(tmp_path: Path, backend: FakeBackend, server: dict[str, Any], **extra: Any) -> Path:
    config = {"server": {"host": "127.0.0.1", "port": 0, "log_level": "info", **server},
              "backends": [{"name": "b0", "url": backend.url, "max_concurrent": 1}],
              "auth": {"tokens_file": "tokens.json"}, "database": "gw.db", **extra}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    return path


@contextmanager
def serve(tmp_path: Path, backend: FakeBackend, server: dict[str, Any] | None = None,
          **sections: Any) -> Iterator[Served]:
    """The gateway as `python -m seadragon_gw serve` runs it; its URL read from what it prints."""
    config = _write_config(tmp_path, backend, server or {}, **sections)
    process = subprocess.Popen([sys.executable, "-m", "seadragon_gw", "serve", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    served = Served(process)
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: served.output.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        def listening() -> str | None:
            assert process.poll() is None, served.log
            found = _LISTENING.search(served.log)
            return found.group(1) if found else None

        served.url = poll(listening, 30, "the gateway to listen")
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=5)


def post_chat(url: str, marker: str, headers: dict[str, str] = ALICE) -> httpx.Response:
    return httpx.post(url + "/api/chat", json=chat(marker, stream=False), headers=headers, timeout=60)


def my_waiting(url: str) -> int:
    response = httpx.get(url + "/api/queue/status", headers=ALICE, timeout=10)
    return len(response.json()["waiting"])


def refused_or_503(url: str) -> bool:
    """A request after the stop signal: no connection at all, or 503 with the reason."""
    try:
        response = post_chat(url, "too late")
    except httpx.TransportError:
        return True
    return native_error(response, 503) == SHUTTING_DOWN


def test_sigterm_answers_waiting_requests_lets_the_running_one_finish_and_exits_0(
        tmp_path: Path, backend: FakeBackend) -> None:
    backend.hold()
    with serve(tmp_path, backend, {"shutdown_grace_s": 30}) as gw, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post_chat, gw.url, "running")
        backend.wait_waiting(1, timeout=15)
        waiting = pool.submit(post_chat, gw.url, "waiting")
        poll(lambda: my_waiting(gw.url) == 1, 10, "the second request waiting in the queue")
        with httpx.stream("POST", gw.url + "/api/chat", json=chat("streams", stream=True), headers=ALICE,
                          timeout=30) as streamed:
            assert streamed.headers["x-queue-position"] == "2"  # queued: its 200 headers came early
            gw.stop(signal.SIGTERM)
            answer = waiting.result(timeout=15)
            assert native_error(answer, 503) == SHUTTING_DOWN
            assert answer.headers["retry-after"] == "5"
            assert [json.loads(line) for line in streamed.iter_lines() if line] == [{"error": SHUTTING_DOWN}]
        assert refused_or_503(gw.url)
        assert not running.done()  # the backend still holds it: the grace is not over
        backend.release()
        finished = running.result(timeout=15)
        assert finished.status_code == 200 and finished.json()["done"] is True
        assert gw.exit_code() == 0, gw.log
    assert "Cancel" not in gw.log and "Traceback" not in gw.log
    assert [r.path for r in backend.inference_requests()] == ["/api/chat"]  # "waiting" never went upstream


def test_a_request_still_running_after_the_grace_gets_503_and_the_exit_is_still_0(
        tmp_path: Path, backend: FakeBackend) -> None:
    backend.hold()
    with serve(tmp_path, backend, {"shutdown_grace_s": 0.5}) as gw, ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_chat, gw.url, "too slow")
        backend.wait_waiting(1, timeout=15)
        gw.stop(signal.SIGTERM)
        assert native_error(running.result(timeout=15), 503) == SHUTTING_DOWN
        assert gw.exit_code() == 0, gw.log
        backend.release()
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in gw.log


def test_a_request_cut_off_by_the_grace_logs_no_traceback(tmp_path: Path, backend: FakeBackend) -> None:
    backend.hold()
    with serve(tmp_path, backend, {"shutdown_grace_s": 0.5}) as gw, ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_chat, gw.url, "too slow")
        backend.wait_waiting(1, timeout=15)
        gw.stop(signal.SIGTERM)
        running.result(timeout=15)
        assert gw.exit_code() == 0, gw.log
        backend.release()
    assert "Traceback" not in gw.log, gw.log


def test_a_websocket_stream_is_closed_1012_and_its_slot_freed(tmp_path: Path, backend: FakeBackend) -> None:
    """uvicorn closes WebSockets at once when it stops (1012, service restart); the request
    on it is cancelled, so its upstream is closed too."""
    backend.hold_mid_stream()
    with serve(tmp_path, backend) as gw:
        url = gw.url.replace("http://", "ws://", 1) + "/api/ws"
        with connect(url, additional_headers=ALICE, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
            ws.send(json.dumps({"id": "1", "route": "/api/chat", "body": chat("ws", stream=True)}))
            assert "chunk" in json.loads(ws.recv(timeout=10))
            backend.wait_waiting(1)
            gw.stop(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as caught:
                while True:
                    ws.recv(timeout=10)
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 1012
        backend.wait_disconnects(1)
        assert gw.exit_code() == 0, gw.log
        backend.release()
    assert "Traceback" not in gw.log, gw.log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_flushes_batched_writes_and_exits_0(tmp_path: Path, backend: FakeBackend, sig: int) -> None:
    """API keys' last-used times are batched (auth.last_used_flush_s, an hour here): the stop
    writes them."""
    auth = {"tokens_file": "tokens.json", "last_used_flush_s": 3600}
    config = _write_config(tmp_path, backend, {}, auth=auth)
    created = subprocess.run([sys.executable, "-m", "seadragon_gw", "keys", "create", "flush-me", "--config",
                              str(config)], capture_output=True, text=True, check=False, timeout=60)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]  # printed last, once
    with serve(tmp_path, backend, auth=auth) as gw:
        assert post_chat(gw.url, "with a key", {"X-API-Key": key}).status_code == 200
        gw.stop(sig)
        assert gw.exit_code() == 0, gw.log
    with sqlite3.connect(tmp_path / "gw.db") as db:
        (last_used,) = db.execute("SELECT last_used FROM api_keys WHERE name = 'flush-me'").fetchone()
    assert last_used is not None
