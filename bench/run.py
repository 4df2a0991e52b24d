"""One command: fast fake backend + gateway(s), each scenario direct and through the gateway.

    .venv/bin/python bench/run.py [--duration 5] [--concurrency 1,16,64] [--chunks 20]
        [--scenarios chat,stream] [--slope-scenarios stream0,pstream,pstream_half] [--slope-concurrency 16]
        [--gateways httpx,aiohttp] [--repeat 1] [--profile chat@16,stream@16] [--json out.json]

What runs where (2-core machine): the gateway(s) are pinned to core 0 (`--gateway-core`); the
fake backend, this process (the load generator) and py-spy are pinned to core 1
(`--load-core`). Only one gateway carries load at a time; an idle one costs nothing. Other
processes on the machine are not ours to stop, so every row reports how much of each core they
took during the window ("other procs").

Gateways: `httpx` is the stock gateway (`python -m seadragon_gw serve`); any other name X runs
`bench/launch_variant.py` with `bench/X_upstream.py` swapped in for
seadragon_gw/backends/upstream.py (e.g. `aiohttp`).

Per scenario and concurrency the same load runs direct (client -> backend) and through each
gateway (client -> gateway -> backend), back to back. Closed loop: C connections, each sending
its next request when the previous answer is complete. Every answer is checked (status 200,
expected number of lines, final done line); only complete ones count.

Gateway CPU per request = delta of the gateway process's utime+stime (/proc/PID/stat) over the
measured window / requests completed in the window. CPU per streamed chunk, three estimates:
  A (brief's method): (CPU/stream request - CPU/non-stream request) / N, at each concurrency.
    Charges the fixed cost of a streamed response (chunked framing, the relay loop, the done
    line) to the chunks.
  B (slope):  (CPU/stream with N chunks - CPU/stream with 0 token chunks) / N: the marginal
    cost of one more chunk, chunks written back to back (a reader that falls behind finds
    several in its socket and relays them in one send, see reads/req).
  C (paced slope): (CPU/stream with N chunks - CPU/stream with N/2 chunks) / (N - N/2), both
    with --paced-ms between chunks, like a model's time per token, so every chunk is read,
    relayed and written alone (one event-loop wake-up each): the per-token cost a real stream
    pays. (Both runs are paced, so the loop is equally idle in both and only chunks differ.)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

TOKEN = "bench-token-0123456789"
TICK = os.sysconf("SC_CLK_TCK")
GW_CORE, LOAD_CORE = 0, 1  # set from the flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, from /proc/PID/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[11]) / TICK, int(rest[12]) / TICK


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds."""
    return sum(proc_times(pid))


def proc_cpu_ns(pid: int) -> float:
    """On-CPU time from /proc/PID/task/*/schedstat (ns resolution), as a cross-check."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def core_busy() -> dict[int, float]:
    """Busy seconds per core from /proc/stat (everything but idle and iowait)."""
    busy: dict[int, float] = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                busy[int(name[3:])] = (sum(v[:8]) - v[3] - v[4]) / TICK
    return busy


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            resp = conn.getresponse()
            last = f"{resp.status} {resp.read()[:200]!r}"
            conn.close()
            if resp.status == 200:
                return
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise SystemExit(f"{proc.args}: {path} not ready after {timeout}s (last: {last})")


@dataclass
class Gateway:
    name: str
    port: int
    proc: subprocess.Popen
    dir: str


def write_config(workdir: str, port: int, backend_port: int, max_concurrent: int) -> str:
    Path(workdir, "tokens.json").write_text(json.dumps({"bench": TOKEN}))
    config = f"""\
server:
  host: 127.0.0.1
  port: {port}
  log_level: warning
  access_log: false
auth:
  tokens_file: tokens.json
  anonymous_read: true
queue:
  max_waiting: 100000
  timeout_s: 600
  early_headers: true
database: bench.db
backends:
  - name: fast
    kind: ollama
    url: http://127.0.0.1:{backend_port}
    max_concurrent: {max_concurrent}
    models: "*"
"""
    path = Path(workdir, "config.yaml")
    path.write_text(config)
    return str(path)


STOCK = "aiohttp"  # the shipped seadragon_gw/backends/upstream.py; others are bench/<name>_upstream.py


def start_gateway(name: str, backend_port: int, max_concurrent: int, core: str) -> Gateway:
    workdir = tempfile.mkdtemp(prefix=f"seadragon-bench-{name}-")
    port = free_port()
    config = write_config(workdir, port, backend_port, max_concurrent)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if name == STOCK:
        cmd = [sys.executable, "-m", "seadragon_gw", "serve", "--config", config, "--port", str(port)]
    else:
        variant = HERE / f"{name}_upstream.py"
        if not variant.exists():
            raise SystemExit(f"no variant file {variant}")
        env["SEADRAGON_UPSTREAM_VARIANT"] = str(variant)
        cmd = [sys.executable, str(HERE / "launch_variant.py"), "serve", "--config", config, "--port", str(port)]
    log = open(Path(workdir, "gateway.log"), "wb")  # start-up chatter (e.g. an admin registration token)
    proc = subprocess.Popen(["taskset", "-c", core, *cmd], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(port, "/health", 30, proc)
    except SystemExit:
        print(Path(workdir, "gateway.log").read_text()[-3000:], file=sys.stderr)
        raise
    return Gateway(name, port, proc, workdir)


@dataclass
class Row:
    scenario: str
    concurrency: int
    target: str              # "direct" or a gateway name
    summary: dict
    gw_cpu_s: float = 0.0
    gw_cpu_sched_s: float = 0.0
    backend_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    core_busy_s: dict = field(default_factory=dict)   # per core, whole machine, over the window
    gw_core: int = 0
    load_core: int = 1
    gw_stime_s: float = 0.0

    @property
    def gw_sys_pct(self) -> float:
        return self.gw_stime_s / self.gw_cpu_s * 100 if self.gw_cpu_s else float("nan")

    @property
    def foreign_gw_core_pct(self) -> float:
        """CPU used on the gateway's core by processes that are not ours (other work on the machine)."""
        return (self.core_busy_s.get(self.gw_core, 0.0) - self.gw_cpu_s) / self.summary["duration_s"] * 100

    @property
    def foreign_load_core_pct(self) -> float:
        ours = self.backend_cpu_s + self.loadgen_cpu_s
        return (self.core_busy_s.get(self.load_core, 0.0) - ours) / self.summary["duration_s"] * 100

    @property
    def gw_us_per_req(self) -> float:
        n = self.summary["requests"]
        return self.gw_cpu_s / n * 1e6 if n else float("nan")

    @property
    def gw_core_pct(self) -> float:
        return self.gw_cpu_s / self.summary["duration_s"] * 100

    @property
    def load_core_pct(self) -> float:
        return (self.backend_cpu_s + self.loadgen_cpu_s) / self.summary["duration_s"] * 100


async def measure(url: str, sc: loadgen.Scenario, concurrency: int, duration: float, warmup: float,
                  gw_pid: int | None, backend_pid: int, token: str | None) -> Row:
    marks: dict[str, tuple] = {}

    def on_window(edge: str) -> None:
        gu, gs = proc_times(gw_pid) if gw_pid else (0.0, 0.0)
        gw_ns = proc_cpu_ns(gw_pid) if gw_pid else 0.0
        marks[edge] = (gu + gs, gw_ns, proc_cpu(backend_pid), time.process_time(), core_busy(), gs)

    result = await loadgen.run_load(url, sc, concurrency, duration, warmup, token, on_window)
    (g0, gn0, b0, l0, c0, s0), (g1, gn1, b1, l1, c1, s1) = marks["start"], marks["end"]
    busy = {k: c1[k] - c0.get(k, 0.0) for k in c1}
    return Row(sc.name, concurrency, "", result.summary(), g1 - g0, gn1 - gn0, b1 - b0, l1 - l0, busy,
               GW_CORE, LOAD_CORE, s1 - s0)


def fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # NaN -> "-"


def median_row(runs: list[Row]) -> Row:
    """With --repeat: the run whose gateway CPU/request is the median (direct: median req/s),
    so one row's numbers stay consistent with each other."""
    key = (lambda r: r.gw_us_per_req) if runs[0].target != "direct" else (lambda r: r.summary["rps"])
    ordered = sorted(runs, key=key)
    return ordered[(len(ordered) - 1) // 2]


def print_tables(rows: list[Row], gateways: list[str], chunks: int, slope_c: int, paced_ms: float) -> str:
    out: list[str] = []
    direct = {(r.scenario, r.concurrency): r for r in rows if r.target == "direct"}
    out.append("| scenario | conc | target | req/s | x direct | p50 ms (x direct) | p99 ms | +p50 ms | TTFC p50 ms "
               "| gw CPU us/req (sys %) | gw core % | load core % | other procs on gw/load core % | reads/req | errors |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r.summary
        d = direct.get((r.scenario, r.concurrency))
        is_gw = r.target != "direct"
        ratio = s["rps"] / d.summary["rps"] if is_gw and d and d.summary["rps"] else float("nan")
        added = s["p50_ms"] - d.summary["p50_ms"] if is_gw and d else float("nan")
        p50_ratio = s["p50_ms"] / d.summary["p50_ms"] if is_gw and d and d.summary["p50_ms"] else float("nan")
        out.append(
            f"| {r.scenario} | {r.concurrency} | {r.target} | {s['rps']:.0f} | {fmt(ratio)} | {fmt(s['p50_ms'], 3)}"
            f"{'' if not is_gw else f' ({fmt(p50_ratio, 1)}x)'} | {fmt(s['p99_ms'], 3)} | {fmt(added, 3)} "
            f"| {fmt(s['ttfc_p50_ms'], 3)} | {fmt(r.gw_us_per_req, 0) + ' (' + fmt(r.gw_sys_pct, 0) + ')' if is_gw else '-'} "
            f"| {fmt(r.gw_core_pct, 0) if is_gw else '-'} | {fmt(r.load_core_pct, 0)} "
            f"| {fmt(r.foreign_gw_core_pct, 0)} / {fmt(r.foreign_load_core_pct, 0)} "
            f"| {fmt(s['reads_per_req'], 1)} | {s['errors']} |")
    by = {(r.target, r.scenario, r.concurrency): r for r in rows}
    nan = float("nan")

    def cpu(g: str, sc: str, c: int) -> float:
        r = by.get((g, sc, c))
        return r.gw_us_per_req if r else nan

    def added(g: str, sc: str, c: int) -> float:
        r, d = by.get((g, sc, c)), direct.get((sc, c))
        return r.summary["p50_ms"] - d.summary["p50_ms"] if r and d else nan

    out += ["", f"Gateway CPU per request and per streamed chunk ({chunks} chunks/stream). Targets: <=300 us per "
            "non-stream request, <=10 us per chunk, <=0.5 ms added p50 at c=1.", "",
            "| gateway | conc | us/non-stream req | us/stream req | us/chunk A = (stream-chat)/N "
            "| added p50 chat ms | added p50 stream ms | added TTFC p50 stream ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    concs = sorted({r.concurrency for r in rows if r.scenario == "chat"})
    for g in gateways:
        for c in concs:
            a = (cpu(g, "stream", c) - cpu(g, "chat", c)) / chunks
            r, d = by.get((g, "stream", c)), direct.get(("stream", c))
            ttfc = r.summary["ttfc_p50_ms"] - d.summary["ttfc_p50_ms"] if r and d else nan
            out.append(f"| {g} | {c} | {fmt(cpu(g, 'chat', c), 0)} | {fmt(cpu(g, 'stream', c), 0)} | {fmt(a, 1)} "
                       f"| {fmt(added(g, 'chat', c), 3)} | {fmt(added(g, 'stream', c), 3)} | {fmt(ttfc, 3)} |")
    if any(sc in ("stream0", "pstream", "pstream_half") for (_, sc, _) in by):
        half = chunks // 2
        out += ["", f"Marginal cost of one chunk at c={slope_c}. B: back-to-back chunks, N={chunks} vs 0 token "
                f"chunks. C: paced ({paced_ms:g} ms between chunks, each chunk read and relayed alone), "
                f"N={chunks} vs {half}:", "",
                f"| gateway | us/stream N | us/stream 0 | us/chunk B | us/paced stream N | us/paced stream {half} "
                "| us/chunk C (paced) | reads/req paced N |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for g in gateways:
            b = (cpu(g, "stream", slope_c) - cpu(g, "stream0", slope_c)) / chunks
            cc = (cpu(g, "pstream", slope_c) - cpu(g, "pstream_half", slope_c)) / (chunks - half)
            pr = by.get((g, "pstream", slope_c))
            out.append(f"| {g} | {fmt(cpu(g, 'stream', slope_c), 0)} | {fmt(cpu(g, 'stream0', slope_c), 0)} "
                       f"| {fmt(b, 1)} | {fmt(cpu(g, 'pstream', slope_c), 0)} "
                       f"| {fmt(cpu(g, 'pstream_half', slope_c), 0)} "
                       f"| {fmt(cc, 1)} | {fmt(pr.summary['reads_per_req'], 1) if pr else '-'} |")
    text = "\n".join(out)
    print(text, flush=True)
    return text


# -- profiling --------------------------------------------------------------------------------

LAYERS = [  # (top-level package of the frame's file, layer name); py-spy shows site-packages-relative paths
    ("seadragon_gw", "seadragon_gw (our code)"),
    ("httpx", "httpx"), ("httpcore", "httpcore"), ("httpx2", "httpx2"), ("httpcore2", "httpcore2"),
    ("h11", "h11"), ("anyio", "anyio"), ("sniffio", "anyio"),
    ("starlette", "starlette"), ("uvicorn", "uvicorn"), ("aiohttp", "aiohttp"), ("yarl", "yarl/multidict"),
    ("multidict", "yarl/multidict"), ("propcache", "yarl/multidict"), ("uvloop", "uvloop"), ("orjson", "orjson"),
]
STARTUP = ("seadragon_gw/cli.py", "seadragon_gw/__main__.py", "launch_variant.py", "uvicorn/main.py",
           "uvicorn/server.py", "uvicorn/_compat.py")  # start-up frames at the root of every stack
LOOP = "event loop (uvloop C code: socket I/O, callbacks; no Python frame)"


def frame_file(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    i = frame.rfind(" (")
    return frame[i + 2:-1].rsplit(":", 1)[0] if i >= 0 else ""


def frame_func(frame: str) -> str:
    i = frame.rfind(" (")
    if i < 0:
        return frame
    path = frame_file(frame)
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{frame[:i]} ({path})"


def layer_of(path: str) -> str | None:
    parts = path.replace("\\", "/").split("/")
    if parts[-1].endswith("_upstream.py"):  # a bench variant of seadragon_gw/backends/upstream.py
        return "seadragon_gw (our code)"
    for marker, name in LAYERS:
        if marker in parts:
            return name
    return None


def summarize_profile(raw_path: str, top: int = 15) -> str:
    """Where the gateway's CPU goes, from py-spy's raw (collapsed) stacks; idle time is not
    sampled, so sample shares are shares of CPU time. Three views:
    - layer (self): each sample goes to the innermost frame of a known library or of our code;
      stdlib frames (asyncio, typing, contextlib...) go to the layer that called them. A sample
      whose leaf is `asyncio.Runner.run` is uvloop's own C code (no Python frame below it).
    - calls out of our code: the innermost seadragon_gw frame and the library function it
      called (inclusive time of that call), or "(self)" when the leaf is our code.
    - top functions by self time (leaf frame).
    Only the main (event-loop) thread counts: py-spy in its default blocking mode reports the
    idle aiosqlite worker thread as busy, though /proc shows it using no CPU."""
    leaf: Counter[str] = Counter()
    layer: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    callout: Counter[str] = Counter()
    total = other_threads = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        parts = stack.split(";")
        if parts[0].startswith("thread (") and not parts[0].endswith("MainThread"):
            other_threads += count  # e.g. aiosqlite's worker, blocked in queue.get: not event-loop work
            continue
        frames = [f for f in parts if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf[frame_func(frames[-1])] += count
        if frame_file(frames[-1]).endswith("asyncio/runners.py"):
            charged = LOOP
        else:
            charged = next((lay for lay in map(layer_of, map(frame_file, reversed(frames))) if lay), "other")
        layer[charged] += count
        request_frames = [f for f in frames if not frame_file(f).endswith(STARTUP)]
        for name in {layer_of(frame_file(f)) for f in request_frames} - {None}:
            inclusive[name] += count
        ours = [i for i, f in enumerate(frames) if layer_of(frame_file(f)) == "seadragon_gw (our code)"
                and not frame_file(f).endswith(STARTUP)]
        if not ours:
            callout["(no request-handling frame of ours on the stack: " + charged + ")"] += count
        else:
            i = ours[-1]
            callee = "(self)" if i == len(frames) - 1 else frame_func(frames[i + 1])
            callout[f"{frame_func(frames[i])} -> {callee}"] += count
    if not total:
        return f"(no samples in {raw_path})"
    pct = lambda v: f"{v / total * 100:.1f}"  # noqa: E731
    lines = [f"samples: {total} on the event-loop thread ({other_threads} on other threads, left out)", "", "| layer (self; stdlib charged to its caller) | % of gateway CPU |",
             "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in layer.most_common()]
    lines += ["", "| layer (inclusive: anywhere on the stack) | % |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in inclusive.most_common()]
    lines += ["", f"| top {top} calls out of our code (innermost seadragon_gw frame -> callee), inclusive | % |",
              "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in callout.most_common(top)]
    lines += ["", f"| top {top} functions by self time | % |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in leaf.most_common(top)]
    return "\n".join(lines)


async def profile_run(gw: Gateway, url: str, sc: loadgen.Scenario, concurrency: int, seconds: float,
                      backend_pid: int, load_core: str, out_dir: Path, rate: int) -> tuple[str, Row]:
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{gw.name}-{sc.name}-c{concurrency}.txt"
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen(["taskset", "-c", load_core, pyspy, "record", "--pid", str(gw.proc.pid),
                            "--rate", str(rate), "--format", "raw", "--threads", "-o", str(raw),
                            "--duration", str(int(seconds + 1.5))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(0.5)
    row = await measure(url, sc, concurrency, seconds, 1.0, gw.proc.pid, backend_pid, TOKEN)
    row.target = gw.name + " (under py-spy)"
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        return f"py-spy failed ({spy.returncode}): {err.decode()[-500:]}", row
    return summarize_profile(str(raw)), row


# -- main -------------------------------------------------------------------------------------

async def main_async(args: argparse.Namespace) -> None:
    concs = [int(c) for c in args.concurrency.split(",")]
    scenarios = [loadgen.scenario(s, args.chunks, args.paced_ms) for s in args.scenarios.split(",") if s]
    slope = [loadgen.scenario(s, args.chunks, args.paced_ms) for s in args.slope_scenarios.split(",") if s]
    gateways = [g for g in args.gateways.split(",") if g]
    global GW_CORE, LOAD_CORE
    GW_CORE, LOAD_CORE = int(args.gateway_core.split(",")[0]), int(args.load_core.split(",")[0])
    os.sched_setaffinity(0, {int(c) for c in args.load_core.split(",")})
    backend_port = free_port()
    backend = subprocess.Popen(["taskset", "-c", args.load_core, sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(backend_port), "--chunks", str(args.chunks),
                                "--interval-ms", str(args.interval_ms)], stdout=subprocess.DEVNULL)
    started: list[Gateway] = []
    try:
        wait_http(backend_port, "/api/version", 10, backend)
        for g in gateways:
            started.append(start_gateway(g, backend_port, max(64, *concs), args.gateway_core))
        print(f"backend pid {backend.pid} on core {args.load_core}; load generator pid {os.getpid()} on core "
              f"{args.load_core}; " + "; ".join(f"gateway {g.name} pid {g.proc.pid} on core {args.gateway_core}"
                                               for g in started), flush=True)
        plan = [(sc, c) for sc in scenarios for c in concs]
        plan += [(sc, args.slope_concurrency) for sc in slope]
        runs: dict[tuple[str, str, int], list[Row]] = {}
        for rep in range(args.repeat):
            for sc, c in plan:
                targets = [("direct", f"http://127.0.0.1:{backend_port}", None)]
                targets += [(g.name, f"http://127.0.0.1:{g.port}", g.proc.pid) for g in started]
                for name, url, pid in targets:
                    row = await measure(url, sc, c, args.duration, args.warmup, pid, backend.pid, TOKEN)
                    row.target = name
                    runs.setdefault((sc.name, name, c), []).append(row)
                    s = row.summary
                    print(f"  [{rep + 1}/{args.repeat}] {sc.name:8s} c={c:<3d} {name:8s} {s['rps']:8.0f} req/s  "
                          f"p50 {s['p50_ms']:7.3f} ms  p99 {s['p99_ms']:7.3f} ms  "
                          f"gw {fmt(row.gw_us_per_req, 0) if pid else '-':>5s} us/req  "
                          f"load core {row.load_core_pct:3.0f}%  others on cores {row.foreign_gw_core_pct:3.0f}%/"
                          f"{row.foreign_load_core_pct:3.0f}%  errors {s['errors']}"
                          + (f"  e.g. {s['error_samples'][:1]}" if s["errors"] else ""), flush=True)
        rows = [median_row(v) for v in runs.values()]
        print()
        tables = print_tables(rows, gateways, args.chunks, args.slope_concurrency, args.paced_ms)
        profiles: dict[str, str] = {}
        for spec in [p for p in args.profile.split(",") if p]:
            name, _, conc = spec.partition("@")
            sc = loadgen.scenario(name, args.chunks, args.paced_ms)
            for g in started:
                summary, row = await profile_run(g, f"http://127.0.0.1:{g.port}", sc, int(conc or 16),
                                                 args.profile_seconds, backend.pid, args.load_core,
                                                 Path(args.profile_dir), args.profile_rate)
                key = f"{g.name} {sc.name}@{conc}"
                profiles[key] = summary
                print(f"\n### py-spy: {key} ({row.summary['rps']:.0f} req/s, {fmt(row.gw_us_per_req, 0)} us/req "
                      f"while sampled)\n{summary}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "args": vars(args), "tables": tables, "profiles": profiles,
                "rows": [{"target": r.target, "gw_cpu_s": r.gw_cpu_s, "gw_cpu_sched_s": r.gw_cpu_sched_s,
                          "gw_us_per_req": r.gw_us_per_req, "gw_stime_s": r.gw_stime_s, "backend_cpu_s": r.backend_cpu_s,
                          "loadgen_cpu_s": r.loadgen_cpu_s,
                          "foreign_gw_core_pct": r.foreign_gw_core_pct,
                          "foreign_load_core_pct": r.foreign_load_core_pct, **r.summary} for r in rows]}, indent=1))
    finally:
        for g in started:
            g.proc.terminate()
        backend.terminate()
        for g in started:
            try:
                g.proc.wait(10)
            except subprocess.TimeoutExpired:
                g.proc.kill()
            shutil.rmtree(g.dir, ignore_errors=True)
        backend.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description="seadragon_gw benchmark: direct vs through the gateway")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--chunks", type=int, default=20, help="token chunks per stream (default 20)")
    p.add_argument("--interval-ms", type=float, default=0.0, help="backend pause between chunks (0 = one loop turn)")
    p.add_argument("--scenarios", default="chat,stream",
                   help="run at every --concurrency: chat, stream (also: v1chat, v1stream, stream0, pstream, pstream_half)")
    p.add_argument("--slope-scenarios", default="stream0,pstream,pstream_half",
                   help="run at --slope-concurrency only, for the per-chunk slopes (default stream0,pstream,pstream_half)")
    p.add_argument("--slope-concurrency", type=int, default=16)
    p.add_argument("--paced-ms", type=float, default=2.0, help="pause between chunks in pstream/pstream_half (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="run the whole matrix N times; report each cell's median run")
    p.add_argument("--gateways", default="httpx,aiohttp",
                   help="httpx = stock gateway; X = bench/X_upstream.py swapped in (default httpx,aiohttp)")
    p.add_argument("--gateway-core", default="0")
    p.add_argument("--load-core", default="1", help="core(s) for the backend, load generator and py-spy")
    p.add_argument("--profile", default="", help="py-spy runs after the table, e.g. chat@16,stream@16")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--profile-dir", default=os.path.join(tempfile.gettempdir(), "seadragon-bench-profiles"))
    p.add_argument("--json", default="", help="write all numbers to this file")
    args = p.parse_args()
    loadgen.install_uvloop()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

