"""A lean closed-loop HTTP/1.1 load generator for the benchmark.

Raw asyncio protocol on uvloop with httptools' response parser, one keep-alive connection per
concurrent worker, pre-rendered request bytes. Per request it records latency (send -> last
byte), time to first body chunk (`ttfc`: the first body bytes, so the first token of a stream,
never the status line or headers, which a gateway may send early while a request is queued;
an SSE comment such as `: queued` is a keepalive and does not count either), the number of
newline-delimited lines received (so a stream is checked for completeness: N token lines +
the final `done:true` line), and how many socket reads the body took (a view of how the
stream arrived: ~N+1 reads means chunk by chunk).

Used in-process by bench/run.py, or alone:
    python bench/loadgen.py --url http://127.0.0.1:11435 --scenario stream --concurrency 16 \
        --duration 5 --chunks 20 --token bench-token
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
import orjson

MODEL = "bench"
MESSAGES = [{"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": "Say hello in a few words, please."}]


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    body: bytes
    stream: bool
    expect_lines: int        # newlines in a complete body
    done_marker: bytes       # must appear at the end of a complete body
    chunks: int              # token chunks per request (0 for non-stream)
    headers: tuple[str, ...] = ()  # extra request header lines, e.g. "X-Bench-Chunks: 20"


@dataclass(frozen=True)
class ModelShape:
    """The `real` scenario's backend: time to first token, then `tokens` tokens `interval_ms` apart."""
    ttft_ms: float = 200.0
    tokens: int = 50
    interval_ms: float = 20.0

    @property
    def stream_s(self) -> float:
        """How long one stream takes at the backend (first token, the rest, the done line)."""
        return (self.ttft_ms + self.tokens * self.interval_ms) / 1000.0


def scenario(name: str, chunks: int, paced_ms: float = 2.0, shape: ModelShape = ModelShape()) -> Scenario:
    """chat: native non-stream; stream: native stream with `chunks` token lines, as fast as the
    backend can write them; stream0: native stream with no token line (only the final done
    line); pstream / pstream_half: N and N//2 token chunks with `paced_ms` between chunks (like a
    model's time per token, so each chunk travels alone); real: a model-like native stream
    (`shape`: 200 ms to the first token, then 50 tokens 20 ms apart); v1chat / v1stream: OpenAI route."""
    if name == "real":
        opts = {"bench_chunks": shape.tokens, "bench_interval_ms": shape.interval_ms, "bench_ttft_ms": shape.ttft_ms}
        body = {"model": MODEL, "messages": MESSAGES, "options": opts}
        return Scenario(name, "/api/chat", orjson.dumps(body), True, shape.tokens + 1, b'"done":true', shape.tokens)
    if name in ("pstream", "pstream_half"):
        n = chunks if name == "pstream" else chunks // 2
        body = {"model": MODEL, "messages": MESSAGES, "options": {"bench_chunks": n, "bench_interval_ms": paced_ms}}
        return Scenario(name, "/api/chat", orjson.dumps(body), True, n + 1, b'"done":true', n)
    if name == "chat":
        body = {"model": MODEL, "messages": MESSAGES, "stream": False}
        return Scenario(name, "/api/chat", orjson.dumps(body), False, 0, b'"done":true', 0)
    if name in ("stream", "stream0"):
        n = chunks if name == "stream" else 0
        body = {"model": MODEL, "messages": MESSAGES, "options": {"bench_chunks": n}}
        return Scenario(name, "/api/chat", orjson.dumps(body), True, n + 1, b'"done":true', n)
    if name == "v1chat":
        body = {"model": MODEL, "messages": MESSAGES}
        return Scenario(name, "/v1/chat/completions", orjson.dumps(body), False, 0, b'"finish_reason":"stop"', 0)
    if name == "v1stream":
        body = {"model": MODEL, "messages": MESSAGES, "stream": True, "options": {"bench_chunks": chunks}}
        # N token events + the finish event + [DONE], each "data: ...\n\n"
        return Scenario(name, "/v1/chat/completions", orjson.dumps(body), True, 2 * (chunks + 2),
                        b"data: [DONE]\n\n", chunks)
    raise ValueError(f"unknown scenario {name!r}")


def request_bytes(url: str, sc: Scenario, token: str | None) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path.rstrip('/')}{sc.path} HTTP/1.1", f"Host: {parts.netloc}",
             "Content-Type: application/json", f"Content-Length: {len(sc.body)}",
             "User-Agent: seadragon-bench", "Accept: */*"]
    lines += sc.headers
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + sc.body


class Conn(asyncio.Protocol):
    """One keep-alive connection doing one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Exception | None = None
        self.t_first = 0.0
        self.lines = 0
        self.reads = 0
        self.tail = b""
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed")
        self._fail(self.lost)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if body[:1] == b":":
            return  # an SSE comment (": queued" keepalive), not an answer's content
        if not self.t_first:
            self.t_first = time.perf_counter()
        self.lines += body.count(b"\n")
        self.tail = (self.tail + body)[-256:]

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def send(self, data: bytes) -> asyncio.Future[None]:
        if self.lost is not None or self.transport is None:
            raise ConnectionError(f"connection lost: {self.lost}")
        self.t_first = 0.0
        self.lines = 0
        self.reads = 0
        self.tail = b""
        self.status = 0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


@dataclass
class Result:
    scenario: str
    concurrency: int
    duration: float = 0.0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    reads: int = 0
    error_samples: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict:
        return {"scenario": self.scenario, "concurrency": self.concurrency, "duration_s": round(self.duration, 3),
                "requests": self.ok, "errors": self.errors, "rps": self.rps,
                "p50_ms": self.pct(self.latencies, 0.50) * 1e3, "p99_ms": self.pct(self.latencies, 0.99) * 1e3,
                "ttfc_p50_ms": self.pct(self.ttfc, 0.50) * 1e3, "ttfc_p99_ms": self.pct(self.ttfc, 0.99) * 1e3,
                "reads_per_req": self.reads / self.ok if self.ok else 0.0,
                "error_samples": self.error_samples[:3], **self.extra}


async def run_load(url: str, sc: Scenario, concurrency: int, duration: float, warmup: float = 1.0,
                   token: str | None = None,
                   on_window: Callable[[str], None] | None = None, stagger_s: float = 0.0) -> Result:
    """Closed loop: `concurrency` workers, each on its own connection, send back to back for
    `warmup + duration` seconds. Only requests that complete inside the measured window count;
    `on_window("start"|"end")` is called at the window's edges (CPU sampling hooks).
    `stagger_s`: worker i sends its first request i/concurrency * stagger_s late, so long
    requests (a 1.2 s model stream) are spread over time as real clients' are, instead of all
    starting, and ending, in one burst; the window's request count then does not depend on
    where the bursts fall (keep `warmup` >= `stagger_s`)."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = request_bytes(url, sc, token)
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(Conn, host, port)
        conns.append(proto)
    result = Result(sc.name, concurrency)
    state = {"recording": False, "stop": False}
    perf = time.perf_counter

    async def worker(conn: Conn, delay: float) -> None:
        lat, ttfc = result.latencies, result.ttfc
        if delay:
            await asyncio.sleep(delay)
        while not state["stop"]:
            t0 = perf()
            try:
                await conn.send(payload)
            except Exception as exc:  # a load generator counts errors, it does not crash
                if state["recording"]:
                    result.errors += 1
                    result.error_samples.append(f"{type(exc).__name__}: {exc}")
                return
            t1 = perf()
            if not state["recording"]:
                continue
            good = (conn.status == 200 and conn.lines == sc.expect_lines and sc.done_marker in conn.tail)
            if good:
                result.ok += 1
                lat.append(t1 - t0)
                if sc.stream:
                    ttfc.append(conn.t_first - t0)
                result.reads += conn.reads
            else:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(
                        f"status={conn.status} lines={conn.lines}/{sc.expect_lines} tail={conn.tail[-40:]!r}")

    tasks = [loop.create_task(worker(c, i * stagger_s / concurrency)) for i, c in enumerate(conns)]
    await asyncio.sleep(warmup)
    state["recording"] = True
    if on_window:
        on_window("start")
    t_start = perf()
    await asyncio.sleep(duration)
    state["recording"] = False
    result.duration = perf() - t_start
    if on_window:
        on_window("end")
    state["stop"] = True
    await asyncio.wait(tasks, timeout=30)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result


def install_uvloop() -> None:
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        print("loadgen: uvloop not installed, using asyncio's loop", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop HTTP load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", default="chat",
                        help="chat | stream | stream0 | pstream | pstream_half | real | v1chat | v1stream")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    install_uvloop()
    sc = scenario(args.scenario, args.chunks)
    c0 = time.process_time()
    result = asyncio.run(run_load(args.url, sc, args.concurrency, args.duration, args.warmup, args.token))
    cpu = time.process_time() - c0
    s = result.summary()
    print(f"{s['scenario']} c={s['concurrency']}: {s['rps']:.0f} req/s  p50 {s['p50_ms']:.3f} ms  "
          f"p99 {s['p99_ms']:.3f} ms  ttfc p50 {s['ttfc_p50_ms']:.3f} ms  reads/req {s['reads_per_req']:.1f}  "
          f"errors {s['errors']}  loadgen CPU {cpu:.2f}s ({cpu / max(s['requests'], 1) * 1e6:.1f} us/req incl. warmup)")
    if result.error_samples:
        print("  e.g.", result.error_samples[:3])


if __name__ == "__main__":
    main()
