"""Upstream client cost alone: each Upstream variant against the fast backend, no gateway.

    .venv/bin/python bench/client_micro.py [--variants http1,aiohttp] [--concurrency 1,16,64]

Runs `Upstream.open(...)` + `read()` (non-stream) or `chunks()` (stream) from C concurrent tasks
for a few seconds in this process (pinned to --core, default 0; the backend is pinned to core 1)
and prints this process's CPU time per request: what the upstream library alone costs the
gateway per request. Each variant runs in a fresh child process so the modules don't mix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BODY_CHAT = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"stream":false}'
BODY_STREAM = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"options":{"bench_chunks":20}}'
HEADERS = [("content-type", "application/json"), ("user-agent", "bench"), ("accept", "*/*"),
           ("accept-encoding", "identity")]


async def child(url: str, concurrency: int, duration: float, stream: bool) -> None:
    from seadragon_gw.backends.upstream import Upstream

    up = Upstream("bench", url, 5.0, 600.0)
    body = BODY_STREAM if stream else BODY_CHAT
    count = 0
    stop = False

    async def worker() -> None:
        nonlocal count
        while not stop:
            resp = await up.open("POST", "/api/chat", HEADERS, body)
            try:
                if stream:
                    async for _ in resp.chunks():
                        pass
                else:
                    await resp.read()
            finally:
                await resp.aclose()
            count += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0.5)  # warm-up: connections opened
    c0, n0, t0 = time.process_time(), count, time.perf_counter()
    await asyncio.sleep(duration)
    cpu, n, wall = time.process_time() - c0, count - n0, time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await up.aclose()
    print(f"{n / wall:8.0f} req/s  {cpu / n * 1e6:7.1f} us CPU/req  (core {cpu / wall * 100:3.0f}%)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", default="http1,aiohttp",
                   help="http1 = the shipped upstream.py; X = bench/X_upstream.py")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--core", default="0")
    p.add_argument("--child", nargs=4, metavar=("URL", "C", "DURATION", "STREAM"), help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import loadgen
    loadgen.install_uvloop()
    if args.child:
        variant = os.environ.get("SEADRAGON_UPSTREAM_VARIANT", "")
        if variant:
            from launch_variant import install
            install(variant)
        url, c, d, s = args.child
        asyncio.run(child(url, int(c), float(d), s == "1"))
        return
    sock_port = __import__("targets").free_port()
    backend = subprocess.Popen(["taskset", "-c", "1", sys.executable, os.path.join(HERE, "fast_backend.py"),
                                "--port", str(sock_port)], stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        for stream in (False, True):
            for c in args.concurrency.split(","):
                for v in args.variants.split(","):
                    env = dict(os.environ)
                    if v != "http1":  # http1 is the shipped upstream; others are variants
                        env["SEADRAGON_UPSTREAM_VARIANT"] = os.path.join(HERE, f"{v}_upstream.py")
                    print(f"{'stream(20)' if stream else 'non-stream':10s} c={c:<3s} {v:8s}", end=" ", flush=True)
                    subprocess.run(["taskset", "-c", args.core, sys.executable, __file__, "--child",
                                    f"http://127.0.0.1:{sock_port}", c, str(args.duration), "1" if stream else "0"],
                                   env=env, check=False)
    finally:
        backend.terminate()
        backend.wait()


if __name__ == "__main__":
    main()
