"""A minimal, fast fake Ollama backend for the benchmark (not a test fixture).

Raw asyncio protocol on uvloop with httptools' request parser: no framework, keep-alive,
pre-rendered bodies. It serves just what the benchmark needs:

  GET  /api/version, /api/tags, /v1/models, /
  POST /api/chat             non-stream (`"stream": false`) or stream (default, as Ollama):
                             N NDJSON chunks + a final `"done":true` line, chunked encoding
  POST /v1/chat/completions  non-stream (default) or `"stream": true`: N SSE events + final
                             chunk + `data: [DONE]`

N (chunks per stream) comes from, in order: the request header `x-bench-chunks`, the body's
`options.bench_chunks`, else `--chunks` (default 20). Between two chunks the writer sleeps
`x-bench-interval-ms` (header), `options.bench_interval_ms` or `--interval-ms` (default 0 = yield
one loop turn; the headers reach the backend through a gateway that translates the body), so every chunk
leaves in its own `send()` the way a token stream does, instead of one coalesced burst. (A
reader slower than the backend may still find several chunks waiting in its socket at once;
a pause of a few ms, like a real model's time per token, rules that out.)

Two more per-request options, for the realistic and the queue-scale benchmarks:
- `options.bench_ttft_ms`: a model's time to first token. The status line, headers and first
  token go out together after that long (as Ollama's Go server sends its headers on the first
  flush), then one token per `bench_interval_ms` and the done line one interval after the
  last token, all on a fixed schedule from the request's arrival (a late timer does not push
  the rest of the stream back, so every run of a stream takes the same time).
- `options.bench_hold: true`: never answer. The request holds its connection (and the
  gateway's backend slot) until the client goes away: with `max_concurrent: 1`, everything
  sent after it waits in the gateway's queue.

    python bench/fast_backend.py --port 18000 [--chunks 20] [--interval-ms 0]
    python bench/fast_backend.py --selftest       # measures its own req/s (see RESULTS.md)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import httptools
import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "bench:latest"
CREATED = "2025-01-01T00:00:00.000000000Z"
_TAGS = orjson.dumps({"models": [{
    "name": MODEL, "model": MODEL, "modified_at": CREATED, "size": 1234, "digest": "0" * 64,
    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "1B", "quantization_level": "Q4_0"}}]})
_VERSION = b'{"version":"0.12.6"}'
_MODELS = orjson.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 1735689600, "owned_by": "library"}]})


def _head(status: bytes, ctype: bytes, length: int | None) -> bytes:
    framing = b"content-length: %d\r\n" % length if length is not None else b"transfer-encoding: chunked\r\n"
    return b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\n" + framing + b"\r\n"


def _whole(body: bytes, ctype: bytes = b"application/json; charset=utf-8", status: bytes = b"200 OK") -> bytes:
    return _head(status, ctype, len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Renderer:
    """Pre-rendered response bytes, cached per (model name, kind)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], object] = {}

    def native_whole(self, model: str) -> bytes:
        key = (model, "nw")
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = _whole(orjson.dumps({
                "model": model, "created_at": CREATED,
                "message": {"role": "assistant", "content": "Hello! This is a benchmark reply of a few words."},
                "done_reason": "stop", "done": True, "total_duration": 123456789, "load_duration": 1234567,
                "prompt_eval_count": 12, "prompt_eval_duration": 1234567, "eval_count": 20,
                "eval_duration": 12345678}))
        return hit  # type: ignore[return-value]

    def native_stream(self, model: str) -> tuple[bytes, bytes, bytes]:
        """(headers, one token chunk, final done chunk + terminator)."""
        key = (model, "ns")
        hit = self._cache.get(key)
        if hit is None:
            token = orjson.dumps({"model": model, "created_at": CREATED,
                                  "message": {"role": "assistant", "content": "tok "}, "done": False}) + b"\n"
            done = orjson.dumps({"model": model, "created_at": CREATED,
                                 "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                                 "done": True, "total_duration": 123456789, "eval_count": 20}) + b"\n"
            hit = self._cache[key] = (_head(b"200 OK", b"application/x-ndjson", None), _chunk(token),
                                      _chunk(done) + b"0\r\n\r\n")
        return hit  # type: ignore[return-value]

    def openai_whole(self, model: str) -> bytes:
        key = (model, "ow")
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = _whole(orjson.dumps({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 1735689600, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": "Hello! This is a benchmark reply of a few words."}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}}))
        return hit  # type: ignore[return-value]

    def openai_stream(self, model: str) -> tuple[bytes, bytes, bytes]:
        key = (model, "os")
        hit = self._cache.get(key)
        if hit is None:
            def event(delta: dict, finish: str | None) -> bytes:
                return b"data: " + orjson.dumps({
                    "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1735689600,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
            hit = self._cache[key] = (_head(b"200 OK", b"text/event-stream", None),
                                      _chunk(event({"content": "tok "}, None)),
                                      _chunk(event({}, "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return hit  # type: ignore[return-value]


class BackendProtocol(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered in order."""

    __slots__ = ("srv", "transport", "parser", "url", "body", "headers_chunks", "headers_interval", "busy", "queued")

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.headers_chunks: bytes | None = None
        self.headers_interval: bytes | None = None
        self.busy = False          # a stream is being written; later requests wait their turn
        self.queued: list[tuple[bytes, bytes, bytes, bytes | None, bytes | None]] = []

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_whole(b'{"error":"bad request"}', status=b"400 Bad Request"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.headers_chunks = None
        self.headers_interval = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"x-bench-chunks":
            self.headers_chunks = value
        elif len(name) == 19 and name.lower() == b"x-bench-interval-ms":
            self.headers_interval = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = (self.parser.get_method(), self.url, b"".join(self.body), self.headers_chunks, self.headers_interval)
        if self.busy:
            self.queued.append(request)
        else:
            self.handle(*request)

    # -- answering
    def handle(self, method: bytes, url: bytes, body: bytes, hchunks: bytes | None, hinterval: bytes | None) -> None:
        transport = self.transport
        if transport is None:
            return
        srv = self.srv
        srv.requests += 1
        path = url.split(b"?", 1)[0]
        if method == b"POST" and (path == b"/api/chat" or path == b"/v1/chat/completions"):
            try:
                payload = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                payload = None
            if not isinstance(payload, dict):
                transport.write(_whole(b'{"error":"invalid JSON"}', status=b"400 Bad Request"))
                return
            model = payload.get("model") or MODEL
            native = path == b"/api/chat"
            stream = payload.get("stream") is not False if native else payload.get("stream") is True
            if not stream:
                transport.write(srv.render.native_whole(model) if native else srv.render.openai_whole(model))
                return
            n, interval, ttft = srv.chunks, srv.interval, None
            opts = payload.get("options")
            if isinstance(opts, dict):
                if opts.get("bench_hold") is True:
                    self.busy = True  # never answered: the connection stays taken until it closes
                    return
                if isinstance(opts.get("bench_chunks"), int):
                    n = opts["bench_chunks"]
                if isinstance(opts.get("bench_interval_ms"), (int, float)):
                    interval = opts["bench_interval_ms"] / 1000.0
                if isinstance(opts.get("bench_ttft_ms"), (int, float)):
                    ttft = opts["bench_ttft_ms"] / 1000.0
            if hchunks is not None:
                n = int(hchunks)
            if hinterval is not None:
                interval = float(hinterval) / 1000.0
            parts = srv.render.native_stream(model) if native else srv.render.openai_stream(model)
            self.busy = True
            loop = asyncio.get_running_loop()
            if ttft is None:
                loop.create_task(self.stream(parts, n, interval))
            else:
                loop.create_task(self.timed_stream(parts, n, interval, ttft))
            return
        if method in (b"GET", b"HEAD"):
            if path == b"/api/tags":
                out = _whole(_TAGS)
            elif path == b"/api/version":
                out = _whole(_VERSION)
            elif path == b"/v1/models":
                out = _whole(_MODELS)
            elif path == b"/":
                out = _whole(b"Ollama is running", b"text/plain; charset=utf-8")
            else:
                out = _whole(b'{"error":"not found"}', status=b"404 Not Found")
            if method == b"HEAD":
                out = out[:out.index(b"\r\n\r\n") + 4]
            transport.write(out)
            return
        transport.write(_whole(b'{"error":"not found"}', status=b"404 Not Found"))

    async def stream(self, parts: tuple[bytes, bytes, bytes], n: int, interval: float) -> None:
        head, token, final = parts
        transport = self.transport
        try:
            if transport is None:
                return
            transport.write(head)
            for _ in range(n):
                await asyncio.sleep(interval)
                if self.transport is None:
                    return
                transport.write(token)
            await asyncio.sleep(interval)
            if self.transport is not None:
                transport.write(final)
        finally:
            self.busy = False
            while self.queued and not self.busy:
                self.handle(*self.queued.pop(0))


    async def timed_stream(self, parts: tuple[bytes, bytes, bytes], n: int, interval: float, ttft: float) -> None:
        """A model-like stream: headers with the first token after `ttft`, then a token every
        `interval`, each due at a fixed time from the start (timer lateness does not add up)."""
        head, token, final = parts
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for k in range(n + 1):
                await asyncio.sleep(max(0.0, start + ttft + k * interval - loop.time()))
                transport = self.transport
                if transport is None:
                    return
                data = token if k < n else final
                transport.write(head + data if k == 0 else data)
        finally:
            self.busy = False
            while self.queued and not self.busy:
                self.handle(*self.queued.pop(0))


class Server:
    def __init__(self, chunks: int, interval_ms: float) -> None:
        self.chunks = chunks
        self.interval = interval_ms / 1000.0
        self.render = Renderer()
        self.requests = 0

    async def serve(self, host: str, port: int) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: BackendProtocol(self), host, port, backlog=1024, reuse_address=True)


def _install_uvloop() -> None:
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - the bench venv has uvloop
        print("fast_backend: uvloop not installed, using asyncio's loop", file=sys.stderr)


async def _main(args: argparse.Namespace) -> None:
    server = Server(args.chunks, args.interval_ms)
    srv = await server.serve(args.host, args.port)
    print(f"fast_backend listening on http://{args.host}:{args.port}", flush=True)
    async with srv:
        await srv.serve_forever()


async def _selftest(args: argparse.Namespace) -> None:
    """Serve in this process and load it from a child process running bench/loadgen.py."""
    server = Server(args.chunks, args.interval_ms)
    srv = await server.serve("127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    for scenario in ("chat", "stream"):
        t0, c0 = time.perf_counter(), time.process_time()
        proc = await asyncio.create_subprocess_exec(
            "taskset", "-c", args.client_core, sys.executable, os.path.join(HERE, "loadgen.py"),
            "--url", f"http://127.0.0.1:{port}", "--scenario", scenario, "--concurrency", "64",
            "--duration", str(args.duration), "--chunks", str(args.chunks))
        await proc.wait()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"backend {scenario}: {server.requests} requests served, backend CPU {cpu:.2f}s over {wall:.2f}s"
              f" = {cpu / max(server.requests, 1) * 1e6:.1f} us/request", flush=True)
        server.requests = 0
    srv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--chunks", type=int, default=20, help="stream chunks per request (default 20)")
    parser.add_argument("--interval-ms", type=float, default=0.0,
                        help="pause between stream chunks (default 0 = yield one loop turn)")
    parser.add_argument("--selftest", action="store_true", help="measure this backend's own req/s and CPU")
    parser.add_argument("--duration", type=float, default=5.0, help="selftest seconds per scenario")
    parser.add_argument("--client-core", default="0", help="selftest: core for the load generator")
    args = parser.parse_args()
    _install_uvloop()
    asyncio.run(_selftest(args) if args.selftest else _main(args))


if __name__ == "__main__":
    main()
