"""Issue 9: the CPU per chunk of a translated stream vs the pass-through relay, in one run.

One gateway (pinned to core 0) with two backends on the same fast fake backend (core 1): `bench`
on a `kind: ollama` backend, so a native `/api/chat` stream is relayed as the backend wrote it
(pass-through), and `bench-oa` on a `kind: openai` backend, so the same native request is
translated (the backend's SSE events become Ollama NDJSON lines, translate/ollama_over_openai.py).
Both streams carry the same number of token chunks, sent by the backend `--paced-ms` apart
(each chunk read, relayed or translated, and written alone, like a model's tokens).

Per chunk, for each way: (CPU per stream with N chunks - CPU per stream with N/2 chunks) /
(N - N/2), the gateway's utime+stime from /proc over the measured window. The cells alternate
(pass-through N, translated N, pass-through N/2, translated N/2) within each round; the figures
are medians over `--repeat` rounds. Target (issue 9): translated <= 2x pass-through.

    .venv/bin/python bench/translate_cost.py [--repeat 3] [--duration 5] [--chunks 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import run as bench_run  # noqa: E402
import targets  # noqa: E402

OPENAI_BACKEND = """\
  - name: fast-openai
    kind: openai
    url: http://127.0.0.1:{port}
    max_concurrent: {slots}
    models: ["bench-oa"]
"""


def stream_scenario(model: str, chunks: int, paced_ms: float) -> loadgen.Scenario:
    """A native /api/chat stream of `chunks` token chunks; the counts go in headers so the
    translated body (which drops unknown options) still carries them to the backend."""
    body = {"model": model, "messages": loadgen.MESSAGES}
    base = loadgen.scenario("pstream", chunks, paced_ms)
    headers = (f"X-Bench-Chunks: {chunks}", f"X-Bench-Interval-Ms: {paced_ms}")
    return replace(base, name=f"{model}/{chunks}", body=json.dumps(body).encode(), headers=headers)


async def measure_lines(url: str, sc: loadgen.Scenario) -> int:
    """The newline count of one complete answer (a translated stream's line count is the
    translation's business; the load generator checks every answer has the same)."""
    probe = replace(sc, expect_lines=-1)
    result = await loadgen.run_load(url, probe, 1, 0.3, 0.0, targets.TOKEN)
    samples = result.error_samples
    if not samples:
        raise SystemExit(f"{sc.name}: no answer")
    return int(samples[0].split("lines=")[1].split("/")[0])


async def rounds(args: argparse.Namespace, gw: targets.Target, backend_pid: int, cores: bench_run.Cores
                 ) -> dict[str, list[float]]:
    half = args.chunks // 2
    cells = {(way, n): stream_scenario(model, n, args.paced_ms)
             for way, model in (("pass-through", loadgen.MODEL), ("translated", "bench-oa"))
             for n in (args.chunks, half)}
    for key, sc in list(cells.items()):
        cells[key] = replace(sc, expect_lines=await measure_lines(gw.url, sc))
    per_chunk: dict[str, list[float]] = {"pass-through": [], "translated": [], "ratio": []}
    for rep in range(args.repeat):
        cpu: dict[tuple[str, int], float] = {}
        for n in (args.chunks, half):
            for way in ("pass-through", "translated"):
                row = await bench_run.measure(gw.url, cells[(way, n)], args.concurrency, args.duration,
                                              args.warmup, gw.proc.pid, backend_pid, cores)
                ok = row.summary["requests"]
                cpu[(way, n)] = row.gw_us_per_req
                print(f"  [{rep + 1}/{args.repeat}] {way:12s} {n:3d} chunks: {row.summary['rps']:7.0f} req/s "
                      f"{row.gw_us_per_req:7.1f} us/stream  ok {ok} errors {row.summary['errors']}", flush=True)
        for way in ("pass-through", "translated"):
            per_chunk[way].append((cpu[(way, args.chunks)] - cpu[(way, half)]) / (args.chunks - half))
        per_chunk["ratio"].append(per_chunk["translated"][-1] / per_chunk["pass-through"][-1])
    return per_chunk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--paced-ms", type=float, default=2.0)
    p.add_argument("--json", default="")
    args = p.parse_args()
    loadgen.install_uvloop()
    cores = bench_run.Cores("0", "1")
    os.sched_setaffinity(0, {1})
    port = targets.free_port()
    backend = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(port)], stdout=subprocess.DEVNULL)
    gw = None
    try:
        targets.wait_http(port, "/api/version", 10, backend)
        extra = OPENAI_BACKEND.format(port=port, slots=args.concurrency * 2)
        gw = targets.start_target("seadragon", port, args.concurrency * 2, "0", backends_extra=extra)
        result = asyncio.run(rounds(args, gw, backend.pid, cores))
    finally:
        if gw is not None:
            targets.stop_target(gw)
        backend.terminate()
        backend.wait(10)
    med = {k: statistics.median(v) for k, v in result.items()}
    print(f"\nCPU per paced chunk at c={args.concurrency} (median of {args.repeat} rounds): pass-through "
          f"{med['pass-through']:.1f} us, translated {med['translated']:.1f} us, translated / pass-through "
          f"{med['ratio']:.2f}x (target <= 2x: {'met' if med['ratio'] <= 2 else 'missed'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": result, "medians": med}, indent=1))


if __name__ == "__main__":
    main()
