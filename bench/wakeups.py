"""CPU, system time and cross-core wake-ups per request, per target, in alternating rounds.

Why: on this VM an idle core halts at once (`/sys/module/haltpoll/parameters/guest_halt_poll_ns`
is 0), so waking a process on an idle core costs the waker an inter-processor interrupt and a
VM exit. The kernel counts the interrupts each core received in /proc/interrupts (`CAL`:
function-call interrupts, which is how a wake-up reaches an idle core; `RES`: rescheduling).
Counted over the measured window and divided by the requests in it, they show how many of a
proxy's writes woke a sleeping peer: the load generator and the backend run on the load core,
so the interrupts into that core are the proxy's doing (and the peers' among themselves).

    .venv/bin/python bench/wakeups.py --targets seadragon-off,nginx,base-off@REF --rounds 3
    .venv/bin/python bench/wakeups.py --targets seadragon-off --concurrency 1 --scenario chat

Pinned as bench/run.py pins: each target on core 0, the backend and this script on core 1.
Prints one line per target per round: requests, p50 latency, CPU and system time per request
(from /proc/PID/stat), and interrupts per request into core 0 / core 1 (only kinds above 0.01).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import run as benchrun  # noqa: E402
import targets  # noqa: E402

KINDS = ("CAL", "RES", "LOC", "TLB", "IWI")


def interrupts() -> dict[str, tuple[int, int]]:
    """Interrupts received so far by cores 0 and 1, by kind."""
    counts: dict[str, tuple[int, int]] = {}
    with open("/proc/interrupts") as fh:
        for line in fh:
            parts = line.split()
            kind = parts[0].rstrip(":") if parts else ""
            if kind in KINDS and len(parts) > 2:
                counts[kind] = (int(parts[1]), int(parts[2]))
    return counts


def measure(target: targets.Target, sc: loadgen.Scenario, concurrency: int, seconds: float) -> str:
    marks: dict[str, tuple[dict[str, tuple[int, int]], float, float]] = {}
    pid = target.proc.pid

    def window(edge: str) -> None:
        marks[edge] = (interrupts(), benchrun.proc_cpu(pid), benchrun.proc_times(pid)[1])

    url = f"http://127.0.0.1:{target.port}"
    asyncio.run(loadgen.run_load(url, sc, concurrency, 1.0, 0.3, targets.TOKEN))  # warm up
    result = asyncio.run(loadgen.run_load(url, sc, concurrency, seconds, 0.5, targets.TOKEN, window))
    (i0, cpu0, sys0), (i1, cpu1, sys1) = marks["start"], marks["end"]
    summary = result.summary()
    n = summary["requests"] or 1
    per_kind = {k: ((i1[k][0] - i0[k][0]) / n, (i1[k][1] - i0[k][1]) / n) for k in i1}
    irqs = " ".join(f"{k}={a:.2f}/{b:.2f}" for k, (a, b) in per_kind.items() if a + b > 0.01)
    return (f"{target.name:18s} n={n:6d} p50={summary['p50_ms']:.3f}ms cpu/req={1e6 * (cpu1 - cpu0) / n:7.1f}us "
            f"sys/req={1e6 * (sys1 - sys0) / n:6.1f}us interrupts/req (core0/core1): {irqs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="seadragon-off,nginx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenario", default="chat")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    backend_port = targets.free_port()
    backend = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(backend_port)], stdout=subprocess.DEVNULL)
    started: list[targets.Target] = []
    try:
        targets.wait_http(backend_port, "/api/version", 10, backend)
        for name in args.targets.split(","):
            started.append(targets.start_target(name, backend_port, 64, "0"))
        loadgen.install_uvloop()
        sc = loadgen.scenario(args.scenario, 20)
        for rnd in range(args.rounds):
            for target in started:
                print(f"round {rnd} {measure(target, sc, args.concurrency, args.seconds)}", flush=True)
    finally:
        for target in started:
            targets.stop_target(target)
        backend.terminate()
        backend.wait(10)


if __name__ == "__main__":
    main()
