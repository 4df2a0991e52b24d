"""Queue scale: the scheduler with up to 100k waiting entries, and 10k real waiting HTTP streams.

    .venv/bin/python bench/queue_scale.py [--depths 100,1000,10000,100000] [--streams 10000] \
        [--parts scheduler,streams] [--json bench/queue_scale.json]
    # a smoke run (seconds):
    .venv/bin/python bench/queue_scale.py --depths 100,1000 --streams 200

(a) `scheduler`: the gateway's Scheduler alone, built as the tests build it (one backend "b"
serving model "m", `max_waiting` 10**6, its one dispatcher started), in this process on uvloop
(pinned to --gateway-core). Entries get a RequestRecord each, filled as the gateway fills one on
admission, a deadline 600 s on (kept by the scheduler, as the gateway's), and priorities 1-3
at random. The queue is filled to each depth in turn, then:
  - enqueue: time to submit --batch (1,000) more at that depth (each submit also computes the
    entry's queue position, which X-Queue-Position shows), per request; then the time to
    release those (a waiting client leaving), per request;
  - dequeue: --batch priority-0 entries are queued (ahead of everyone), then the request holding
    the backend slot finishes, the dispatcher takes the best entry and grants it, that one
    finishes... --batch times; per dequeue (two event-loop wake-ups included);
  - positions: for a few fresh entries, the position `submit` returned against a brute-force
    count of the entries ahead of it (exact or not);
  - RSS growth of this process per waiting entry (VmRSS from /proc/self/status after
    gc.collect(), minus the RSS before the first entry, divided by the depth).
  Each timing is the median of --reps repetitions.

(b) `streams`: N (--streams, 10,000) real waiting HTTP streams. A gateway of this tree (pinned to
--gateway-core, as bench/run.py starts it) fronts bench/fast_backend.py with `max_concurrent: 1`;
one request with `options.bench_hold` takes the slot and is never answered, so the N streaming
`POST /api/chat` requests opened next (at most --connect-burst connecting at once) all wait in
the queue. Once the gateway's `/health` (with a credential) reports N waiting: the gateway's RSS
growth per waiting stream (VmRSS of its process now minus before the streams, divided by N;
socket buffers are kernel memory, not RSS) and the p50/p99 latency of 200 sequential
`GET /api/tags` on one keep-alive connection while they wait (and the same before, for
comparison), and the full garbage collections the gateway's /metrics counted while the streams
connected and during the /api/tags window (how many, their total pause, the longest). Then
every connection is closed and the queue drains. This part runs once per round (--gc-rounds)
and `server.gc_freeze_after_ms` setting (--gc-freeze-after-ms, default "5,null": the GC
pacer freezing, and only measuring), the settings alternating.
The client (this process) and the gateway each hold N sockets, so each needs N + ~200 open
files: the soft RLIMIT_NOFILE is raised to the hard limit (the gateway inherits it), and N is
lowered to fit if the hard limit is too small (said in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import loadgen  # noqa: E402
import targets  # noqa: E402

FDS_PER_PROCESS_EXTRA = 200  # listening socket, backend connection, database, py files, health polls


# -- (a) the scheduler alone -------------------------------------------------------------------

class SchedulerBench:
    def __init__(self, batch: int, reps: int, seed: int = 7) -> None:
        from seadragon_gw.backends.registry import Registry
        from seadragon_gw.config import BackendConfig, QueueConfig
        from seadragon_gw.queue.scheduler import Scheduler
        from seadragon_gw.records.observers import Recorder

        self.registry = Registry([BackendConfig(name="b", url="http://127.0.0.1:1", models=["m"])])
        self.scheduler = Scheduler(self.registry, QueueConfig(max_waiting=10**6))
        self.recorder = Recorder()
        self.key = ("m:latest", None)
        self.batch, self.reps = batch, reps
        self.rng = random.Random(seed)
        self.waiting: list[Any] = []   # the entries, as each request's task holds its own
        self.holder: Any = None         # the entry holding the one backend slot

    def record(self, priority: float) -> Any:
        """A RequestRecord as the gateway makes one for a queued inference request."""
        rec = self.recorder.start(self.recorder.ids.new(), "POST", "/api/chat")
        rec.credential_kind, rec.credential_name, rec.client_id = "token", "bench", "token:bench"
        rec.priority, rec.stream, rec.model = priority, True, "m:latest"
        rec.queued_at = self.recorder.clock()
        return rec

    def deadline(self) -> float:
        """As the gateway admits a request: its deadline (queue.timeout_s, 600 s) on the loop's
        clock, which the scheduler keeps (one heap and one timer for all)."""
        return self.scheduler.loop.time() + 600.0

    def submit(self, priority: float) -> tuple[Any, int]:
        return self.scheduler.submit(self.key, priority, self.record(priority), deadline=self.deadline())

    async def start(self) -> None:
        self.scheduler.start()
        for _ in range(3):
            await asyncio.sleep(0)  # the dispatcher parks
        self.holder, position = self.submit(2)
        if position != 0:
            raise SystemExit(f"the first request should take the free slot, got position {position}")

    def fill(self, depth: int) -> None:
        while len(self.waiting) < depth:
            self.waiting.append(self.submit(self.rng.choice((1, 2, 3)))[0])

    def enqueue_release(self) -> tuple[float, float]:
        """Seconds per submit and per release, for one batch at the current depth."""
        priorities = [self.rng.choice((1, 2, 3)) for _ in range(self.batch)]
        records = [self.record(p) for p in priorities]
        submit, key, deadline = self.scheduler.submit, self.key, self.deadline()
        t0 = time.perf_counter()
        entries = [submit(key, p, rec, deadline=deadline)[0] for p, rec in zip(priorities, records, strict=True)]
        t1 = time.perf_counter()
        release = self.scheduler.release
        for entry in entries:
            release(entry)
        t2 = time.perf_counter()
        return (t1 - t0) / self.batch, (t2 - t1) / self.batch

    async def dequeue(self) -> float:
        """Seconds per grant: the slot's holder finishes, the dispatcher grants the best entry."""
        ahead = [self.submit(0)[0] for _ in range(self.batch)]
        release = self.scheduler.release
        t0 = time.perf_counter()
        for entry in ahead:
            release(self.holder)
            await entry.granted
            self.holder = entry
        t1 = time.perf_counter()
        return (t1 - t0) / self.batch

    def check_positions(self, samples: int) -> int:
        """How many of `samples` fresh entries got the exact position (brute-force rank)."""
        exact = 0
        for _ in range(samples):
            entry, position = self.submit(self.rng.choice((1, 2, 3)))
            mine = (entry.sort_key, entry.seq)
            ahead = sum(1 for e in self.waiting if not e.cancelled and (e.sort_key, e.seq) < mine)
            exact += position == ahead + 1
            self.scheduler.release(entry)
        return exact

    async def close(self) -> None:
        for entry in self.waiting:
            self.scheduler.release(entry)
        self.scheduler.release(self.holder)
        await self.scheduler.stop()


def rss_now() -> int:
    gc.collect()
    return targets.proc_rss_kb("self")


async def scheduler_scale(depths: list[int], batch: int, reps: int, samples: int) -> list[dict[str, float]]:
    bench = SchedulerBench(batch, reps)
    await bench.start()
    base_kb = rss_now()
    rows: list[dict[str, float]] = []
    try:
        for depth in sorted(depths):
            t0 = time.perf_counter()
            bench.fill(depth)
            fill_s = time.perf_counter() - t0
            rss_kb = rss_now()
            timings = [bench.enqueue_release() for _ in range(reps)]
            dequeues = [await bench.dequeue() for _ in range(reps)]
            exact = bench.check_positions(samples)
            if bench.scheduler.waiting() != depth:
                raise SystemExit(f"expected {depth} waiting, the scheduler says {bench.scheduler.waiting()}")
            rows.append({"depth": depth, "fill_s": fill_s,
                         "enqueue_us": statistics.median(t[0] for t in timings) * 1e6,
                         "release_us": statistics.median(t[1] for t in timings) * 1e6,
                         "dequeue_us": statistics.median(dequeues) * 1e6,
                         "positions_exact": exact, "positions_checked": samples,
                         "rss_growth_mb": (rss_kb - base_kb) / 1024,
                         "rss_bytes_per_entry": (rss_kb - base_kb) * 1024 / depth})
            print_scheduler_row(rows[-1], rows[0])
    finally:
        await bench.close()
    return rows


def print_scheduler_header(batch: int) -> None:
    print(f"\n(a) Scheduler alone, {batch} requests per measurement, medians of repetitions:\n", flush=True)
    print("| waiting | enqueue us/req | x at first depth | release us/req | dequeue us/req | x at first depth "
          "| positions exact | RSS growth MB | RSS bytes/entry |", flush=True)
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)


def print_scheduler_row(row: dict[str, float], first: dict[str, float]) -> None:
    print(f"| {row['depth']:,} | {row['enqueue_us']:.2f} | {row['enqueue_us'] / first['enqueue_us']:.2f}x "
          f"| {row['release_us']:.2f} | {row['dequeue_us']:.2f} | {row['dequeue_us'] / first['dequeue_us']:.2f}x "
          f"| {row['positions_exact']}/{row['positions_checked']} | {row['rss_growth_mb']:.1f} "
          f"| {row['rss_bytes_per_entry']:,.0f} |", flush=True)


# -- (b) real waiting HTTP streams --------------------------------------------------------------

def raise_nofile(streams: int) -> tuple[int, str]:
    """Raise the soft open-file limit to the hard one; return how many streams fit and a note."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    note = (f"RLIMIT_NOFILE: soft {soft} -> {limit} (hard {hard}); the client (this process) and the gateway "
            f"each need N + {FDS_PER_PROCESS_EXTRA} files")
    fits = limit - FDS_PER_PROCESS_EXTRA
    if streams > fits:
        note += f"; the hard limit is too low for {streams:,} streams: measuring {fits:,}"
        return fits, note
    return streams, note


class Waiting(asyncio.Protocol):
    """One streaming request that waits in the queue: resolves `head` with the status line."""

    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            return
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.head.set_result(self.buf.split(b"\r\n", 1)[0])
            self.buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_result(b"closed before headers")


def chat_request(port: int, options: dict[str, Any]) -> bytes:
    body = json.dumps({"model": "bench", "messages": loadgen.MESSAGES, "stream": True, "options": options}).encode()
    head = (f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {targets.TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def get_body(port: int, path: str) -> bytes:
    """One GET with a credential and `Connection: close`: the body, de-chunked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {targets.TOKEN}\r\n"
                 "Connection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return dechunk(body) if b"chunked" in head.lower() else body


async def get_json(port: int, path: str) -> dict[str, Any]:
    return json.loads(await get_body(port, path))


def dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2:]
    return b"".join(out)


async def gc_figures(port: int) -> dict[str, float]:
    """The gateway's `seadragon_gc_*` samples from /metrics (gc_pacing.py's pacer)."""
    figures: dict[str, float] = {}
    for line in (await get_body(port, "/metrics")).decode().splitlines():
        if line.startswith("seadragon_gc_"):
            name, _, value = line.partition(" ")
            figures[name] = float(value)
    return figures


def gc_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Full collections between two scrapes: how many, their total pause (ms), and the longest
    so far (ms; the pacer keeps the longest since start)."""
    return {"collections": after["seadragon_gc_full_collections_total"] - before["seadragon_gc_full_collections_total"],
            "total_ms": 1000 * (after["seadragon_gc_full_collection_seconds_total"]
                                - before["seadragon_gc_full_collection_seconds_total"]),
            "longest_ms": 1000 * after["seadragon_gc_longest_full_collection_seconds"],
            "freezes": after["seadragon_gc_freezes_total"] - before["seadragon_gc_freezes_total"]}


async def queue_counts(port: int) -> tuple[int, int]:
    """(waiting, processing) from the gateway's /health detail."""
    report = await get_json(port, "/health")
    queue = report.get("queue")
    if not isinstance(queue, dict):
        raise SystemExit(f"/health has no queue detail: {report}")
    return int(queue["waiting"]), int(queue["processing"])


async def wait_for(port: int, want: str, value: int, limit_s: float) -> tuple[int, float]:
    """Poll /health until `want` ("waiting"/"processing") reaches `value`; (last count, seconds)."""
    t0 = time.monotonic()
    count = -1
    while time.monotonic() - t0 < limit_s:
        waiting, processing = await queue_counts(port)
        count = waiting if want == "waiting" else processing
        if (count >= value) if value else (count == 0):
            break
        await asyncio.sleep(0.2)
    return count, time.monotonic() - t0


async def tags_latency(port: int, n: int) -> dict[str, float]:
    """p50/p99 (ms) of n sequential GET /api/tags on one keep-alive connection."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(loadgen.Conn, "127.0.0.1", port)
    request = f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {targets.TOKEN}\r\n\r\n"
    payload = request.encode()
    lat: list[float] = []
    bad = 0
    for _ in range(n):
        t0 = time.perf_counter()
        await conn.send(payload)
        lat.append(time.perf_counter() - t0)
        bad += conn.status != 200
    assert conn.transport is not None
    conn.transport.close()
    return {"p50_ms": loadgen.Result.pct(lat, 0.5) * 1e3, "p99_ms": loadgen.Result.pct(lat, 0.99) * 1e3,
            "max_ms": max(lat) * 1e3, "errors": bad}


async def open_waiting(port: int, n: int, burst: int) -> tuple[list[Waiting], dict[str, int], float]:
    """Open n streaming requests, at most `burst` connecting at once; wait for their headers."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(burst)
    payload = chat_request(port, {"bench_chunks": 1})
    conns: list[Waiting] = []
    statuses: dict[str, int] = {}

    async def one() -> None:
        async with gate:
            try:
                _, proto = await loop.create_connection(Waiting, "127.0.0.1", port)
                conns.append(proto)
                assert proto.transport is not None
                proto.transport.write(payload)
                line = await asyncio.wait_for(proto.head, 60)
                status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else line.decode()
            except (OSError, TimeoutError) as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return conns, statuses, time.monotonic() - t0


async def streams_scale(port: int, gw_pid: int, n: int, burst: int, tag_requests: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    _, hold = await loop.create_connection(Waiting, "127.0.0.1", port)
    assert hold.transport is not None
    hold.transport.write(chat_request(port, {"bench_hold": True}))
    processing, _ = await wait_for(port, "processing", 1, 10)
    if processing < 1:
        raise SystemExit("the hold request never took the backend slot")
    before = await tags_latency(port, tag_requests)
    await asyncio.sleep(0.3)
    rss_before_kb = targets.proc_rss_kb(gw_pid)
    gc_start = await gc_figures(port)
    conns, statuses, open_s = await open_waiting(port, n, burst)
    waiting, queued_s = await wait_for(port, "waiting", n, 120)
    await asyncio.sleep(0.5)
    rss_after_kb = targets.proc_rss_kb(gw_pid)
    gc_opened = await gc_figures(port)
    during = await tags_latency(port, tag_requests)
    gc_tags = await gc_figures(port)
    t0 = time.monotonic()
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    left, _ = await wait_for(port, "waiting", 0, 60)
    drain_s = time.monotonic() - t0
    hold.transport.close()
    return {"streams": n, "statuses": statuses, "open_s": open_s, "reported_waiting": waiting,
            "queued_after_s": queued_s, "rss_before_mb": rss_before_kb / 1024, "rss_after_mb": rss_after_kb / 1024,
            "rss_bytes_per_stream": (rss_after_kb - rss_before_kb) * 1024 / max(waiting, 1),
            "tags_before": before, "tags_during": during, "waiting_after_close": left, "drain_s": drain_s,
            "gc_while_opening": gc_delta(gc_opened, gc_start), "gc_during_tags": gc_delta(gc_tags, gc_opened)}


def run_streams(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The streams part once per round and --gc-freeze-after-ms setting, alternating."""
    n, note = raise_nofile(args.streams)
    print(f"\n(b) {n:,} waiting HTTP streams; {note}", flush=True)
    settings = [x for x in args.gc_freeze_after_ms.split(",") if x]
    results = []
    for rnd in range(args.gc_rounds):
        for setting in settings:
            result = run_streams_once(args, n, setting)
            result.update(note=note, round=rnd, gc_freeze_after_ms=setting)
            print(f"\nround {rnd}, server.gc_freeze_after_ms: {setting}", flush=True)
            print_streams(result)
            results.append(result)
    print_gc(results)
    return results


def run_streams_once(args: argparse.Namespace, n: int, gc_setting: str) -> dict[str, Any]:
    os.sched_setaffinity(0, {int(c) for c in args.load_core.split(",")})
    backend_port = targets.free_port()
    backend = subprocess.Popen(["taskset", "-c", args.load_core, sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(backend_port)], stdout=subprocess.DEVNULL)
    gateway: targets.Target | None = None
    try:
        targets.wait_http(backend_port, "/api/version", 10, backend)
        gateway = targets.start_target("seadragon", backend_port, 1, args.gateway_core,
                                       extra_server={"max_connections": n + 1000, "gc_freeze_after_ms": gc_setting},
                                       max_waiting=n + 1000, backends_extra=METRICS_PUBLIC)
        return asyncio.run(streams_scale(gateway.port, gateway.proc.pid, n, args.connect_burst, args.tag_requests))
    finally:
        if gateway is not None:
            targets.stop_target(gateway)
        backend.terminate()
        backend.wait(10)


METRICS_PUBLIC = "metrics:\n  public: true\n"  # /metrics without the admin credential the bench has not


def print_gc(results: list[dict[str, Any]]) -> None:
    print("\nFull garbage collections in the gateway (from its /metrics), per run: while the streams connected, "
          "and during the /api/tags window\n")
    print("| round | server.gc_freeze_after_ms | collections while connecting | their total ms | longest ms "
          "| freezes | collections during /api/tags | /api/tags p99 ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        o, t = r["gc_while_opening"], r["gc_during_tags"]
        print(f"| {r['round']} | {r['gc_freeze_after_ms']} | {o['collections']:.0f} | {o['total_ms']:.1f} "
              f"| {o['longest_ms']:.1f} | {o['freezes']:.0f} | {t['collections']:.0f} "
              f"| {r['tags_during']['p99_ms']:.3f} |", flush=True)


def print_streams(r: dict[str, Any]) -> None:
    b, d = r["tags_before"], r["tags_during"]
    print(f"\nopened {r['streams']:,} streams in {r['open_s']:.1f} s (statuses {r['statuses']}); /health reported "
          f"{r['reported_waiting']:,} waiting after {r['queued_after_s']:.1f} s; after closing them, "
          f"{r['waiting_after_close']} waiting after {r['drain_s']:.1f} s\n", flush=True)
    print("| waiting streams | gateway RSS before MB | with them MB | RSS bytes per waiting stream "
          "| /api/tags p50 ms (before) | /api/tags p99 ms (before) | max ms | tags errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['reported_waiting']:,} | {r['rss_before_mb']:.1f} | {r['rss_after_mb']:.1f} "
          f"| {r['rss_bytes_per_stream']:,.0f} | {d['p50_ms']:.3f} ({b['p50_ms']:.3f}) "
          f"| {d['p99_ms']:.3f} ({b['p99_ms']:.3f}) | {d['max_ms']:.3f} | {d['errors'] + b['errors']} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description="queue scale: scheduler depth and waiting HTTP streams")
    p.add_argument("--parts", default="scheduler,streams")
    p.add_argument("--depths", default="100,1000,10000,100000")
    p.add_argument("--batch", type=int, default=1000, help="requests per enqueue/dequeue measurement")
    p.add_argument("--reps", type=int, default=5, help="repetitions per depth (median)")
    p.add_argument("--position-samples", type=int, default=20)
    p.add_argument("--streams", type=int, default=10000)
    p.add_argument("--connect-burst", type=int, default=256, help="streams connecting at once")
    p.add_argument("--tag-requests", type=int, default=200)
    p.add_argument("--gc-freeze-after-ms", default="5,null",
                   help="server.gc_freeze_after_ms settings to run the streams part with, alternating")
    p.add_argument("--gc-rounds", type=int, default=1)
    p.add_argument("--gateway-core", default="0")
    p.add_argument("--load-core", default="1")
    p.add_argument("--json", default="")
    args = p.parse_args()
    parts = {x for x in args.parts.split(",") if x}
    loadgen.install_uvloop()
    out: dict[str, Any] = {"args": vars(args)}
    if "scheduler" in parts:
        os.sched_setaffinity(0, {int(c) for c in args.gateway_core.split(",")})
        print_scheduler_header(args.batch)
        depths = [int(d) for d in args.depths.split(",") if d]
        out["scheduler"] = asyncio.run(scheduler_scale(depths, args.batch, args.reps, args.position_samples))
    if "streams" in parts:
        out["streams"] = run_streams(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
