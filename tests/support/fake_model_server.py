"""A tiny model server process for the managed-backend tests: a real process on a real port.

    python fake_model_server.py --port P [--warmup-s S] [--crash-after N] [--exit-now CODE]
                                [--stderr TEXT] [--model NAME] [--ignore-sigterm] [--tag TEXT]

/health answers 503 for the first `--warmup-s` seconds, then 200; /v1/models lists `--model`;
/v1/chat/completions answers one completion; a body field `hold_until` (a path) keeps the
answer back until that file exists (a test's way to hold a request in flight), and a field
`exit` (a code) then ends the process without answering; with `"stream": true` the answer is
SSE, its first chunk ("pid P") sent before the hold, the rest after. With
`--crash-after N` the process exits (code 3) right after its Nth completion; `--exit-now`
exits at once with that code, after writing `--stderr` to stderr. /argv answers the process's
argv and its FAKE_* environment (what a managed profile added); `--tag` is appended to the
completion's text ("pid P tag T"), so a test sees which process variant answered. While the
file `--fail-file` exists, /v1/models answers 503 (a health check that fails).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.completions = 0
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            sys.stdout.write(f"{self.command} {self.path}\n")
            sys.stdout.flush()

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def do_GET(self) -> None:
            if self.path == "/health":
                warm = time.monotonic() - state.started >= state.args.warmup_s
                self._send(200 if warm else 503, {"status": "ok" if warm else "loading"})
            elif self.path == "/argv":
                self._send(200, {"argv": sys.argv[1:], "pid": os.getpid(),
                                 "env": {k: v for k, v in os.environ.items() if k.startswith("FAKE_")}})
            elif self.path == "/v1/models" and state.args.fail_file and Path(state.args.fail_file).exists():
                self._send(503, {"error": "failing as told"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": state.args.model, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": "not found"})
                return
            if body.get("stream"):
                self._stream(body.get("hold_until"))
                return
            hold = body.get("hold_until")
            while hold and not Path(hold).exists():
                time.sleep(0.01)
            if body.get("exit") is not None:  # die mid-request, without an answer
                sys.stderr.write("fake model server: exiting mid-request\n")
                sys.stderr.flush()
                os._exit(int(body["exit"]))
            self._send(200, {"id": "c1", "object": "chat.completion", "model": state.args.model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": _text(state)}}]})
            with state.lock:
                state.completions += 1
                crash = state.args.crash_after and state.completions >= state.args.crash_after
            if crash:
                sys.stderr.write("fake model server: crashing as told\n")
                sys.stderr.flush()
                os._exit(3)

        def _stream(self, hold: str | None) -> None:
            """A chunked SSE answer: "pid P", (the hold), the rest (cut before its end if the
            process dies: a broken stream, not a short one)."""
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self._event({"content": f"pid {os.getpid()}"})
            while hold and not Path(hold).exists():
                time.sleep(0.01)
            self._event({"content": _text(state)[len(f"pid {os.getpid()}"):]}, "stop")
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _event(self, delta: dict[str, str], finish: str | None = None) -> None:
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": state.args.model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self._chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    return Handler


def _text(state: _State) -> str:
    tag = state.args.tag
    return f"pid {os.getpid()}" + (f" tag {tag}" if tag else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--warmup-s", type=float, default=0.0)
    parser.add_argument("--crash-after", type=int, default=0)
    parser.add_argument("--exit-now", type=int, default=None)
    parser.add_argument("--stderr", default="")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--tag", default="")
    parser.add_argument("--fail-file", default="")
    args = parser.parse_args()
    if args.stderr:
        sys.stderr.write(args.stderr + "\n")
        sys.stderr.flush()
    if args.exit_now is not None:
        sys.exit(args.exit_now)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = ThreadingHTTPServer((args.host, args.port), _handler(_State(args)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
