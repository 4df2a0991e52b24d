"""A new user's first hour, checked the way they live it: a clone's files, `seadragon-gw serve` as a
real process, the console lines it prints, and the one line they copy.

The gateway process runs from a copy of the repository's tracked (and not ignored) files, i.e.
what a fresh clone has, with the package importable from this checkout's virtual environment.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.fakebackend import FakeBackend
from tests.support.server import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0


def clone_files(target: Path) -> Path:
    """Copy what `git clone` would bring (tracked and unignored files of this working tree)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def clone(tmp_path: Path, backend: FakeBackend) -> Path:
    """A fresh clone whose config.yaml points its one backend at a fake Ollama."""
    root = clone_files(tmp_path / "clone")
    config = root / "config.yaml"
    text = config.read_text()
    assert "url: http://127.0.0.1:11434" in text
    config.write_text(text.replace("url: http://127.0.0.1:11434", f"url: {backend.url}"))
    return root


@dataclass
class Console:
    """A running `seadragon-gw serve`: its stdout (the console) and stderr (the log), line by line."""

    process: subprocess.Popen[str]
    stdout: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)

    def line_starting(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.stdout.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.stdout_lines.append(line)
            if line.strip().startswith(prefix):
                return line.strip()
        raise AssertionError(f"no console line starting {prefix!r}; console: {self.stdout_lines}, "
                             f"log: {self.stderr_lines[-20:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seadragon_gw", "serve", "--config", "config.yaml", *args]


StartGateway = Callable[[int], Console]


@pytest.fixture
def start(clone: Path) -> Iterator[StartGateway]:
    """Start `seadragon-gw serve --port N` in the clone; every one started is stopped after."""
    consoles: list[Console] = []

    def run(port: int) -> Console:
        process = subprocess.Popen(gateway_command("--port", str(port)), cwd=clone, text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        console = Console(process)
        threading.Thread(target=_pump_stdout, args=(console,), daemon=True).start()
        threading.Thread(target=_pump_stderr, args=(console,), daemon=True).start()
        consoles.append(console)
        return console

    yield run
    for console in consoles:
        console.stop()


def _pump_stdout(console: Console) -> None:
    assert console.process.stdout is not None
    for line in console.process.stdout:
        console.stdout.put(line)
    console.stdout.put(None)


def _pump_stderr(console: Console) -> None:
    assert console.process.stderr is not None
    for line in console.process.stderr:
        console.stderr_lines.append(line)


def test_tokens_json_is_not_tracked_and_is_ignored() -> None:
    tracked = subprocess.run(["git", "ls-files", "tokens.json"], cwd=REPO, capture_output=True, text=True,
                             check=False)
    assert tracked.stdout == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "tokens.json"], cwd=REPO, check=False)
    assert ignored.returncode == 0


def test_first_start_creates_a_token_and_prints_a_curl_line_that_works_as_copied(
        clone: Path, start: StartGateway) -> None:
    assert not (clone / "tokens.json").exists()
    port = free_port()
    console = start(port)
    assert console.line_starting("seadragon_gw is listening on") == \
        f"seadragon_gw is listening on http://127.0.0.1:{port}"
    curl = console.line_starting("curl ")

    tokens_file = clone / "tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    ((user, token),) = json.loads(tokens_file.read_text()).items()
    assert len(token) >= 40 and f"Bearer {token}" in curl
    assert f"http://127.0.0.1:{port}/api/chat" in curl

    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30,
                            check=False)
    assert answer.returncode == 0, answer.stderr
    reply = json.loads(answer.stdout)
    assert reply["model"] == "llama3:latest" and reply["done"] is True
    assert reply["message"]["role"] == "assistant" and reply["message"]["content"]

    console.stop()
    log = "".join(console.stderr_lines)
    assert token not in log, "the new token reached the log"
    assert user


def test_a_later_start_keeps_the_tokens_file_and_prints_no_token(
        clone: Path, start: StartGateway) -> None:
    tokens_file = clone / "tokens.json"
    tokens_file.write_text('{"alice": "tok-alice-kept"}')
    console = start(free_port())
    console.line_starting("seadragon_gw is listening on")
    console.stop()
    assert tokens_file.read_text() == '{"alice": "tok-alice-kept"}'
    assert not any("Authorization: Bearer" in line for line in console.stdout_lines)
    assert not any("tok-alice-kept" in line for line in console.stdout_lines + console.stderr_lines)


def test_busy_port_is_one_line_and_exit_code_2(clone: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(gateway_command("--port", str(port)), cwd=clone, capture_output=True,
                                text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"seadragon-gw: port {port} on 127.0.0.1 is already in use: pick another "
                             f"with server.port in config.yaml or --port\n")
    assert not (clone / "tokens.json").exists(), "nothing starts before the port is known to be free"


def test_first_run_sh_says_what_it_does_while_it_installs(tmp_path: Path) -> None:
    """run.sh with a stand-in Python that records what it is asked to do (no network, no pip)."""
    for name in ("run.sh", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    calls = tmp_path / "calls.log"
    shim = f'#!/bin/sh\necho "$@" >> {calls}\n'
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(shim + 'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
                           f'printf %s \'{shim}\' > "$3/bin/python"; chmod +x "$3/bin/python"; fi\n')
    fake_python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake_python)}
    result = subprocess.run(["bash", str(tmp_path / "run.sh")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "[run.sh] creating .venv (the gateway's own Python environment)",
        "[run.sh] installing seadragon_gw and its dependencies (about 30 s the first time)",
        "[run.sh] installed",
        "[run.sh] starting the gateway with config.yaml",
    ]
    assert calls.read_text().splitlines()[-1] == "-m seadragon_gw serve --config config.yaml"
