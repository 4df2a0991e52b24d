"""One command: a fast fake backend, the proxies to compare, each scenario direct and through each.

    .venv/bin/python bench/run.py [--targets seadragon,nginx] [--repeat 3] [--duration 5]
        [--concurrency 1,16,64] [--chunks 20] [--scenarios chat,stream,real]
        [--slope-scenarios stream0,pstream,pstream_half] [--slope-concurrency 16] [--paced-chunks 40]
        [--real-concurrency 64] [--real-duration 6] [--profile chat@16,stream@16] [--json out.json]

    # issue 7's measurement (targets as ratios to nginx, 3 alternating rounds):
    .venv/bin/python bench/run.py --repeat 3 --targets seadragon,nginx,base@0636bf1 --json bench/results.json
    # a smoke run (seconds):
    .venv/bin/python bench/run.py --duration 1 --warmup 0.3 --concurrency 16 --scenarios chat \
        --slope-scenarios '' --targets seadragon,nginx

Targets (bench/targets.py): `seadragon` = the gateway in this tree (`python -m seadragon_gw
serve`); `aiohttp` = this tree with bench/aiohttp_upstream.py (the aiohttp client it shipped
before backends/http1.py) swapped in by bench/launch_variant.py (any bench/X_upstream.py works
the same as `X`); `nginx` = nginx 1.x as a reference proxy (one process, upstream keepalive, no
buffering, no access log); `base@REF` = the gateway as of git ref REF, from a temporary git
worktree. Every table gives each target's figures in us and as a ratio to nginx in the same run,
because absolute times on a shared VM drift by 2x from hour to hour while ratios hold.

What runs where (2-core machine): every target is pinned to core 0 (`--gateway-core`); the
fake backend, this process (the load generator) and py-spy to core 1 (`--load-core`). Only one
target carries load at a time; an idle one costs nothing. Other processes on the machine are
not ours to stop, so every row reports how much of each core they took during its window
("other procs").

Per round, for each scenario and concurrency, the same load runs direct (client -> backend) and
then through each target, back to back; `--repeat N` rounds; tables show each cell's median
round, the issue-7 summary the medians of per-round figures and ratios. Closed loop: C
connections, each sending its next request when the previous answer is complete. Every answer
is checked (status 200, expected number of lines, final done line); only complete ones count.

Proxy CPU per request = delta of the proxy process's utime+stime (/proc/PID/stat) over the
measured window / requests completed in the window. CPU per streamed chunk, three estimates:
  A: (CPU/stream request - CPU/non-stream request) / N, at each concurrency. Charges the fixed
    cost of a streamed response (chunked framing, the relay loop, the done line) to the chunks.
  B (slope): (CPU/stream with N chunks - CPU/stream with 0 token chunks) / N: the marginal
    cost of one more chunk, chunks written back to back (a reader that falls behind finds
    several in its socket and relays them in one send, see reads/req).
  C (paced slope): (CPU/stream with N chunks - CPU/stream with N/2 chunks) / (N - N/2), both
    with --paced-ms between chunks, like a model's time per token, so every chunk is read,
    relayed and written alone (one event-loop wake-up each): the per-token cost a real stream
    pays. (Both runs are paced, so the loop is equally idle in both and only chunks differ.)
    Here N is --paced-chunks (default 40, so pstream 40 vs pstream_half 20), not --chunks: the
    slope is a difference of two CPU/stream figures divided by N - N/2, so over 20 tokens
    instead of 10 the same per-stream noise moves it half as much. --chunks (default 20) stays
    the length of stream, stream0 (A, B, issue 7's 20-chunk stream) and v1stream.

Scenario `real` (model-like): the backend takes --real-ttft-ms (200) to the first token, then
sends --real-tokens (50) tokens --real-interval-ms (20) apart, on a fixed schedule; it runs at
--real-concurrency (64) for --real-duration (6) s, the workers' first requests spread over one
stream's length (1.2 s) as independent clients' are. Reported: req/s as a ratio to direct, and
the added time to first token (the first body bytes, i.e. the first token, not the headers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import profiling  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from report import Row  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


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


class Cores:
    def __init__(self, gateway: str, load: str) -> None:
        self.gateway, self.load = gateway, load
        self.gw0, self.load0 = int(gateway.split(",")[0]), int(load.split(",")[0])


async def measure(url: str, sc: loadgen.Scenario, concurrency: int, duration: float, warmup: float,
                  proxy_pid: int | None, backend_pid: int, cores: Cores, stagger_s: float = 0.0) -> Row:
    marks: dict[str, tuple] = {}

    def on_window(edge: str) -> None:
        gu, gs = proc_times(proxy_pid) if proxy_pid else (0.0, 0.0)
        gw_ns = proc_cpu_ns(proxy_pid) if proxy_pid else 0.0
        marks[edge] = (gu + gs, gw_ns, proc_cpu(backend_pid), time.process_time(), core_busy(), gs)

    result = await loadgen.run_load(url, sc, concurrency, duration, warmup, targets.TOKEN, on_window, stagger_s)
    (g0, gn0, b0, l0, c0, s0), (g1, gn1, b1, l1, c1, s1) = marks["start"], marks["end"]
    busy = {k: c1[k] - c0.get(k, 0.0) for k in c1}
    return Row(sc.name, concurrency, "", result.summary(), g1 - g0, gn1 - gn0, b1 - b0, l1 - l0, busy,
               cores.gw0, cores.load0, s1 - s0)


def start_pyspy(target: targets.Target, raw: Path, seconds: float, rate: int, cores: Cores) -> subprocess.Popen[bytes]:
    raw.parent.mkdir(parents=True, exist_ok=True)
    pyspy = str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(pyspy):
        pyspy = "py-spy"
    return subprocess.Popen(["taskset", "-c", cores.load, pyspy, "record", "--pid", str(target.proc.pid),
                             "--rate", str(rate), "--format", "raw", "--threads", "-o", str(raw),
                             *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else []),
                             "--duration", str(int(seconds + 1.5))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_pyspy(spy: subprocess.Popen[bytes], raw: Path) -> str:
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        return f"py-spy failed ({spy.returncode}): {err.decode()[-500:]}"
    return profiling.summarize_profile(str(raw))


async def profile_run(target: targets.Target, sc: loadgen.Scenario, concurrency: int, seconds: float,
                      backend_pid: int, cores: Cores, out_dir: Path, rate: int) -> tuple[str, Row]:
    raw = out_dir / f"{target.name.replace('@', '-')}-{sc.name}-c{concurrency}.txt"
    spy = start_pyspy(target, raw, seconds, rate, cores)
    await asyncio.sleep(0.5)
    row = await measure(target.url, sc, concurrency, seconds, 1.0, target.proc.pid, backend_pid, cores)
    row.target = target.name + " (under py-spy)"
    return await asyncio.to_thread(finish_pyspy, spy, raw), row


def make_scenario(name: str, args: argparse.Namespace, shape: loadgen.ModelShape) -> loadgen.Scenario:
    """Scenario `name`; the paced pair (pstream, pstream_half) is --paced-chunks long, the rest --chunks."""
    chunks = args.paced_chunks if name in report.PACED else args.chunks
    return loadgen.scenario(name, chunks, args.paced_ms, shape)


def progress(rep: int, repeat: int, row: Row, proxied: bool) -> None:
    s = row.summary
    print(f"  [{rep + 1}/{repeat}] {row.scenario:12s} c={row.concurrency:<3d} {row.target:14s} {s['rps']:8.0f} req/s  "
          f"p50 {s['p50_ms']:8.3f} ms  p99 {s['p99_ms']:8.3f} ms  "
          f"cpu {report.fmt(row.gw_us_per_req, 0) if proxied else '-':>5s} us/req  "
          f"load core {row.load_core_pct:3.0f}%  others on cores {row.foreign_gw_core_pct:3.0f}%/"
          f"{row.foreign_load_core_pct:3.0f}%  errors {s['errors']}"
          + (f"  e.g. {s['error_samples'][:1]}" if s["errors"] else ""), flush=True)


class Plan:
    """The cells of one round: (scenario, concurrency, measured seconds, warm-up, stagger)."""

    def __init__(self, args: argparse.Namespace) -> None:
        concs = [int(c) for c in args.concurrency.split(",") if c]
        self.shape = loadgen.ModelShape(args.real_ttft_ms, args.real_tokens, args.real_interval_ms)
        names = [s for s in args.scenarios.split(",") if s]
        self.cells: list[tuple[loadgen.Scenario, int, float, float, float]] = []
        for name in names:
            sc = make_scenario(name, args, self.shape)
            if name == "real":
                stagger = self.shape.stream_s if args.real_stagger else 0.0
                self.cells.append((sc, args.real_concurrency, args.real_duration,
                                   max(args.warmup, stagger + 0.3), stagger))
            else:
                self.cells += [(sc, c, args.duration, args.warmup, 0.0) for c in concs]
        for name in [s for s in args.slope_scenarios.split(",") if s]:
            sc = make_scenario(name, args, self.shape)
            self.cells.append((sc, args.slope_concurrency, args.duration, args.warmup, 0.0))
        self.max_concurrency = max([64, *(c for _, c, *_ in self.cells)])

    def seconds_per_round(self, n_targets: int) -> float:
        return sum((1 + n_targets) * (d + w + 0.3) for _, _, d, w, _ in self.cells)


async def run_rounds(args: argparse.Namespace, plan: Plan, started: list[targets.Target], backend_port: int,
                     backend_pid: int, cores: Cores) -> report.Runs:
    runs: report.Runs = {}
    for rep in range(args.repeat):
        for sc, c, duration, warmup, stagger in plan.cells:
            lineup: list[tuple[str, str, int | None]] = [("direct", f"http://127.0.0.1:{backend_port}", None)]
            lineup += [(t.name, t.url, t.proc.pid) for t in started]
            for name, url, pid in lineup:
                row = await measure(url, sc, c, duration, warmup, pid, backend_pid, cores, stagger)
                row.target, row.round = name, rep
                runs.setdefault((sc.name, name, c), {})[rep] = row
                progress(rep, args.repeat, row, pid is not None)
    return runs


async def run_profiles(args: argparse.Namespace, started: list[targets.Target], backend_pid: int,
                       cores: Cores, shape: loadgen.ModelShape) -> dict[str, str]:
    profiles: dict[str, str] = {}
    for spec in [p for p in args.profile.split(",") if p]:
        name, _, conc = spec.partition("@")
        sc = make_scenario(name, args, shape)
        for t in started:
            if not t.python:
                continue  # py-spy samples Python processes (nginx is C)
            summary, row = await profile_run(t, sc, int(conc or 16), args.profile_seconds, backend_pid, cores,
                                             Path(args.profile_dir), args.profile_rate)
            key = f"{t.name} {sc.name}@{conc or 16}"
            profiles[key] = summary
            print(f"\n### py-spy: {key} ({row.summary['rps']:.0f} req/s, {report.fmt(row.gw_us_per_req, 0)} us/req "
                  f"while sampled)\n{summary}", flush=True)
    return profiles


def print_report(args: argparse.Namespace, runs: report.Runs, names: list[str]) -> tuple[str, list[dict]]:
    tables = report.Tables(runs, names, args.chunks, args.slope_concurrency, args.paced_ms,
                           args.real_concurrency, args.real_tokens, args.paced_chunks)
    lines = tables.all_rows() + tables.per_request() + tables.slopes() + tables.real()
    summary_lines, summary = report.summary(runs, names, args.chunks, args.slope_concurrency, args.real_concurrency,
                                            args.paced_chunks)
    text = "\n".join(lines + summary_lines + report.operations_summary(runs, names))
    print(text, flush=True)
    return text, summary


async def main_async(args: argparse.Namespace, plan: Plan, started: list[targets.Target], backend_port: int,
                     backend_pid: int, cores: Cores) -> tuple[report.Runs, str, list[dict], dict[str, str]]:
    runs = await run_rounds(args, plan, started, backend_port, backend_pid, cores)
    print()
    text, summary = print_report(args, runs, [t.name for t in started])
    profiles = await run_profiles(args, started, backend_pid, cores, plan.shape)
    return runs, text, summary, profiles


def write_json(args: argparse.Namespace, runs: report.Runs, names: list[str], text: str, summary: list[dict],
               profiles: dict[str, str]) -> None:
    medians = report.Tables(runs, names, args.chunks, args.slope_concurrency, args.paced_ms,
                            args.real_concurrency, args.real_tokens, args.paced_chunks).rows
    Path(args.json).write_text(json.dumps({
        "args": vars(args), "tables": text, "summary": summary, "profiles": profiles,
        "rows": [r.as_json() for r in medians],
        "all_rounds": [r.as_json() for cell in runs.values() for r in cell.values()]}, indent=1))


def run(args: argparse.Namespace) -> None:
    """Start the backend and every target pinned, run the rounds, print, stop everything."""
    plan = Plan(args)
    names = [t for t in args.targets.split(",") if t]
    cores = Cores(args.gateway_core, args.load_core)
    os.sched_setaffinity(0, {int(c) for c in args.load_core.split(",")})
    backend_port = targets.free_port()
    backend = subprocess.Popen(["taskset", "-c", args.load_core, sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(backend_port), "--chunks", str(args.chunks),
                                "--interval-ms", str(args.interval_ms)], stdout=subprocess.DEVNULL)
    started: list[targets.Target] = []
    try:
        targets.wait_http(backend_port, "/api/version", 10, backend)
        for name in names:
            started.append(targets.start_target(name, backend_port, plan.max_concurrency, args.gateway_core))
        print(f"backend pid {backend.pid} on core {args.load_core}; load generator pid {os.getpid()} on core "
              f"{args.load_core}; " + "; ".join(f"{t.name} pid {t.proc.pid} on core {args.gateway_core}"
                                               for t in started), flush=True)
        print(f"about {plan.seconds_per_round(len(started)) * args.repeat / 60:.1f} min of load "
              f"({args.repeat} round(s))", flush=True)
        runs, text, summary, profiles = asyncio.run(main_async(args, plan, started, backend_port, backend.pid, cores))
        if args.json:
            write_json(args, runs, names, text, summary, profiles)
    finally:
        for t in started:
            targets.stop_target(t)
        backend.terminate()
        backend.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description="seadragon_gw benchmark: direct vs through each proxy")
    p.add_argument("--targets", default="seadragon,nginx",
                   help="seadragon (this tree), nginx, aiohttp (bench/X_upstream.py swapped in), base@REF "
                        "(the gateway at git ref REF); default seadragon,nginx")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the whole matrix; each cell reports its median")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--chunks", type=int, default=20,
                   help="token chunks per stream, v1stream (default 20); the paced pair uses --paced-chunks")
    p.add_argument("--interval-ms", type=float, default=0.0, help="backend pause between chunks (0 = one loop turn)")
    p.add_argument("--scenarios", default="chat,stream,real",
                   help="chat, stream run at every --concurrency; real at --real-concurrency "
                        "(also: v1chat, v1stream, stream0, pstream, pstream_half)")
    p.add_argument("--slope-scenarios", default="stream0,pstream,pstream_half",
                   help="run at --slope-concurrency only, for the per-chunk slopes")
    p.add_argument("--slope-concurrency", type=int, default=16)
    p.add_argument("--paced-ms", type=float, default=2.0, help="pause between chunks in pstream/pstream_half")
    p.add_argument("--paced-chunks", type=int, default=40,
                   help="token chunks in pstream (pstream_half: half), for chunk C's slope (default 40 vs 20)")
    p.add_argument("--real-concurrency", type=int, default=64)
    p.add_argument("--real-duration", type=float, default=6.0, help="measured seconds of the real scenario")
    p.add_argument("--real-ttft-ms", type=float, default=200.0)
    p.add_argument("--real-tokens", type=int, default=50)
    p.add_argument("--real-interval-ms", type=float, default=20.0)
    p.add_argument("--real-stagger", type=int, default=1, help="1: spread the workers' first requests over one "
                   "stream's length; 0: all start at once (one burst)")
    p.add_argument("--gateway-core", default="0", help="core(s) for the targets")
    p.add_argument("--load-core", default="1", help="core(s) for the backend, load generator and py-spy")
    p.add_argument("--profile", default="", help="py-spy runs after the tables, e.g. chat@16,stream@16")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--profile-dir", default=os.path.join(tempfile.gettempdir(), "seadragon-bench-profiles"))
    p.add_argument("--json", default="", help="write all numbers to this file")
    args = p.parse_args()
    loadgen.install_uvloop()
    run(args)


if __name__ == "__main__":
    main()
