"""One real completion from a freshly installed server, so a binary that starts but crashes on
its first request (built for another CPU) fails the install, not the first user."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .layout import Layout
from .server import build_argv

READY_TIMEOUT_S = 120.0


class SmokeFailed(Exception):
    """The server did not serve one completion; the message says how it ended."""


def smoke_test(binary: Path, layout: Layout, log_path: Path) -> None:
    port = _free_port()
    argv = build_argv(binary, layout, port, parallel=1, ctx=512, embeddings=False)
    base = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        log.write(f"\n=== smoke test: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, base)
        _complete_one(process, base)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _check_alive(process, "while loading the model")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SmokeFailed(f"not ready within {READY_TIMEOUT_S:.0f} s")


def _complete_one(process: subprocess.Popen[bytes], base: str) -> None:
    body = json.dumps({"prompt": "Hello", "max_tokens": 2}).encode()
    request = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _check_alive(process, "on its first completion", grace_s=2.0)
        raise SmokeFailed(f"the first completion failed: {exc}") from None
    if not answer.get("choices"):
        raise SmokeFailed(f"the first completion had no choices: {str(answer)[:200]}")


def _check_alive(process: subprocess.Popen[bytes], when: str, grace_s: float = 0.0) -> None:
    try:
        code = process.wait(grace_s)
    except subprocess.TimeoutExpired:
        return
    how = f"signal {-code}" + (" (illegal instruction: built for another CPU?)" if code == -4 else "") \
        if code < 0 else f"exit code {code}"
    raise SmokeFailed(f"llama-server died {when} ({how})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
