"""What open admin pages cost the gateway (issue 10): CPU of the gateway process with 0, 1 and
10 overview pages open (real headless Chromium, each polling /api/admin/overview every 2 s as
shipped), and the proxy's throughput and latency with none and with ten open.

    python bench/web_pages.py                       # 45 s per CPU window, 10 s per load run
    python bench/web_pages.py --seconds 10 --load-seconds 3 --pages 1   # a short smoke run

The gateway runs pinned to core 0 (bench/targets.py, the `seadragon` target with the operator
features on) in front of bench/fast_backend.py; Chromium, the backend and the load generator
run on the other core(s). CPU is utime + stime from /proc/PID/stat over the window, minus the
same window with no page open (the gateway's own timers), as a share of one core.
Needs Debian's chromium and the playwright package (the test extras).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402
from run import proc_cpu  # noqa: E402

USER, PASSWORD = "bench-admin", "bench-password-0123456789"
LOAD_LINE = re.compile(r"(?P<rps>[\d.]+) req/s\s+p50 (?P<p50>[\d.]+) ms\s+p99 (?P<p99>[\d.]+) ms")


def cores() -> tuple[str, str]:
    """The gateway's core, and the others' (everything else on a bigger machine)."""
    count = os.cpu_count() or 1
    return "0", (f"1-{count - 1}" if count > 1 else "0")


def create_admin(target: targets.Target) -> None:
    config = str(Path(target.dir, "config.yaml"))
    subprocess.run([sys.executable, "-m", "seadragon_gw", "admin", "create", USER, "--password-stdin",
                    "--config", config], input=f"{PASSWORD}\n", text=True, check=True, cwd=target.dir,
                   capture_output=True)


def cpu_share(pid: int, seconds: float) -> float:
    """The process's CPU over `seconds`, as a share of one core."""
    start, t0 = proc_cpu(pid), time.monotonic()
    time.sleep(seconds)
    return (proc_cpu(pid) - start) / (time.monotonic() - t0)


def open_pages(browser: Any, url: str, n: int) -> list[Any]:
    """`n` logged-in overview pages, each in its own context (its own session), polling."""
    pages = []
    for _ in range(n):
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/admin")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-card=health] .badge", timeout=30_000)
        pages.append(page)
    return pages


class Pollers:
    """What `n` open overview pages send the gateway, without a browser's CPU on this machine:
    `n` sessions, each GET /api/admin/overview every `every_s` on its own keep-alive connection."""

    def __init__(self, port: int, n: int, every_s: float = 2.0) -> None:
        self.port, self.n, self.every_s = port, n, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sessions: list[tuple[http.client.HTTPConnection, str]] = []

    def _token(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        body = urllib.parse.urlencode({"username": USER, "password": PASSWORD})
        conn.request("POST", "/auth/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
        token = str(json.loads(conn.getresponse().read())["access_token"])
        conn.close()
        return token

    def _run(self) -> None:
        sessions = self.sessions
        while not self.stop.is_set():
            for conn, token in sessions:
                conn.request("GET", "/api/admin/overview", headers={"Authorization": f"Bearer {token}"})
                conn.getresponse().read()
                if self.stop.wait(self.every_s / self.n):
                    break

    def __enter__(self) -> Pollers:
        # Log in first: each login hashes a password (argon2, tens of ms of the gateway's CPU),
        # which must not fall inside the measured load run.
        self.sessions = [(http.client.HTTPConnection("127.0.0.1", self.port, timeout=10), self._token())
                         for _ in range(self.n)]
        time.sleep(1.0)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def load(url: str, seconds: float, core: str, pid: int | None = None) -> dict[str, float]:
    """A closed-loop chat load (bench/loadgen.py, 8 connections): req/s, p50 and p99 in ms, and
    (with the gateway's `pid`) its CPU per request in us over the run (warm-up included)."""
    cpu0 = proc_cpu(pid) if pid else 0.0
    done = subprocess.run(["taskset", "-c", core, sys.executable, str(HERE / "loadgen.py"), "--url", url,
                           "--scenario", "chat", "--concurrency", "8", "--duration", str(seconds),
                           "--token", targets.TOKEN], capture_output=True, text=True, check=True)
    found = LOAD_LINE.search(done.stdout)
    if found is None:
        raise SystemExit(f"loadgen said: {done.stdout}{done.stderr}")
    result = {k: float(v) for k, v in found.groupdict().items()}
    if pid:  # the run's requests: its rate over the window and loadgen's 1 s warm-up alike
        result["cpu_us"] = (proc_cpu(pid) - cpu0) / (result["rps"] * (seconds + 1.0)) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="each CPU window")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="each load run")
    parser.add_argument("--pages", default="1,10", help="page counts to measure, comma-separated")
    parser.add_argument("--chromium", default=os.environ.get("SEADRAGON_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    gateway_core, other = cores()
    backend_port = targets.free_port()
    backend = subprocess.Popen(["taskset", "-c", other, sys.executable, str(HERE / "fast_backend.py"),
                                "--port", str(backend_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = targets.start_target("seadragon", backend_port, 64, gateway_core)
    try:
        create_admin(target)
        pid = target.proc.pid
        time.sleep(2)  # the start's own work settles
        idle = cpu_share(pid, args.seconds)
        print(f"no page open: gateway CPU {idle * 100:.3f}% of a core over {args.seconds:g} s", flush=True)
        quiet = load(target.url, args.load_seconds, other, pid)
        print(f"proxy, no page open: {quiet['rps']:.0f} req/s, p50 {quiet['p50']:.3f} ms, p99 {quiet['p99']:.3f} ms, "
              f"gateway CPU {quiet['cpu_us']:.1f} us/req", flush=True)
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 1)) or {0})  # Chromium (a child) off core 0
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=["--no-sandbox"] if os.geteuid() == 0 else [])
            opened: list[Any] = []
            for n in sorted(int(p) for p in args.pages.split(",")):
                opened += open_pages(browser, target.url, n - len(opened))
                share = cpu_share(pid, args.seconds)
                print(f"{n} overview page(s) open: gateway CPU {share * 100:.3f}% of a core, "
                      f"{(share - idle) * 100:.3f}% above idle ({(share - idle) / n * 100:.3f}% per page)",
                      flush=True)
            busy = load(target.url, args.load_seconds, other, pid)
            print(f"proxy, {len(opened)} pages open in Chromium here: {busy['rps']:.0f} req/s "
                  f"({busy['rps'] / quiet['rps']:.3f}x), p50 {busy['p50']:.3f} ms, p99 {busy['p99']:.3f} ms, "
                  f"gateway CPU {busy['cpu_us']:.1f} us/req ({busy['cpu_us'] / quiet['cpu_us']:.3f}x) "
                  "(Chromium shares the load generator's core)", flush=True)
            browser.close()
        again = load(target.url, args.load_seconds, other, pid)
        with Pollers(target.port, 10):
            polled = load(target.url, args.load_seconds, other, pid)
        print(f"proxy, no page open (again): {again['rps']:.0f} req/s, p50 {again['p50']:.3f} ms, "
              f"p99 {again['p99']:.3f} ms, gateway CPU {again['cpu_us']:.1f} us/req", flush=True)
        print(f"proxy, ten pages' polling (no browser here): {polled['rps']:.0f} req/s "
              f"({polled['rps'] / again['rps']:.3f}x), p50 {polled['p50']:.3f} ms, p99 {polled['p99']:.3f} ms, "
              f"gateway CPU {polled['cpu_us']:.1f} us/req ({polled['cpu_us'] / again['cpu_us']:.3f}x)", flush=True)
    finally:
        targets.stop_target(target)
        backend.terminate()
        backend.wait(10)


if __name__ == "__main__":
    main()
