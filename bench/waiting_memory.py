"""Where the memory of a waiting streaming request goes, by the module that allocated it.

    .venv/bin/python bench/waiting_memory.py [--streams 1000]

Starts a gateway in this process (a real uvicorn server on 127.0.0.1, as `seadragon-gw serve`
runs it) in front of bench/fast_backend.py with its one slot held (`options.bench_hold`), opens
N streaming /api/chat requests that wait in the queue, and compares tracemalloc snapshots taken
before and while they wait: bytes per waiting request, grouped by the file that allocated them
(Python allocations only; the kernel's socket buffers and C libraries' own mallocs, such as
llhttp's parser state, are not seen by tracemalloc, RSS in bench/queue_scale.py covers those).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from seadragon_gw.app import create_app  # noqa: E402
from seadragon_gw.config import parse_config  # noqa: E402
from tests.support.server import ThreadedServer  # noqa: E402

TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group(path: str) -> str:
    for marker, name in (("seadragon_gw", "seadragon_gw"), ("uvicorn", "uvicorn"), ("httptools", "httptools"),
                         ("starlette", "starlette"), ("orjson", "orjson"), ("sortedcontainers", "sortedcontainers"),
                         ("asyncio", "asyncio (tasks, futures, handles)"), ("uvloop", "uvloop")):
        if marker in path:
            return name
    return "other: " + path.rsplit("/", 2)[-1]


def open_streams(port: int, n: int) -> list[socket.socket]:
    """Blocking sockets from this thread (a few hundred bytes each, so the snapshot is the
    gateway's): each request is sent and its early stream headers read, so it is queued."""
    body = json.dumps({"model": "held", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                       "options": {"bench_hold": True}}).encode()
    head = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head + body)
        socks.append(sock)
    for sock in socks:
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(4096)
    return socks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    backend_port = free_port()
    backend = subprocess.Popen([sys.executable, str(HERE / "fast_backend.py"), "--port", str(backend_port)],
                               stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="seadragon-waiting-memory-")
    Path(work, "tokens.json").write_text(json.dumps({"bench": TOKEN}))
    config = parse_config({
        "server": {"log_level": "warning", "max_connections": args.streams * 2 + 100},
        "auth": {"tokens_file": "tokens.json"}, "database": "bench.db",
        "queue": {"max_waiting": args.streams * 2, "timeout_s": 600},
        "backends": [{"name": "fast", "url": f"http://127.0.0.1:{backend_port}", "max_concurrent": 1,
                      "models": ["held"]}],
    })
    config.base_dir = work
    try:
        time.sleep(0.5)
        server = ThreadedServer(create_app(config), server=config.server).start()
        try:
            run(server.port, args.streams)
        finally:
            server.stop()
    finally:
        backend.terminate()
        backend.wait(10)


def run(port: int, n: int) -> None:
    first = open_streams(port, 1)  # takes the one slot; the rest wait
    time.sleep(0.3)
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    socks = open_streams(port, n)
    time.sleep(0.5)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by: Counter[str] = Counter()
    for stat in after.compare_to(before, "filename"):
        by[group(stat.traceback[0].filename)] += stat.size_diff
    total = sum(by.values())
    print(f"{n} waiting streaming requests: {total / n / 1024:.1f} KiB ({total / n:,.0f} bytes) of Python "
          "allocations each")
    print("\n| allocated in | bytes per waiting request | share |\n|---|---:|---:|")
    for name, size in by.most_common(12):
        print(f"| {name} | {size / n:,.0f} | {size / total * 100:.0f} % |")
    lines = os.environ.get("BENCH_MEMORY_LINES")  # =1: the top 25 lines; =N > 1: the top N
    if lines:
        print("\n| line | bytes per waiting request |\n|---|---:|")
        for stat in after.compare_to(before, "lineno")[:int(lines) if lines.isdigit() and int(lines) > 1 else 25]:
            frame = stat.traceback[0]
            print(f"| {frame.filename.rsplit('/', 2)[-2:]}:{frame.lineno} | {stat.size_diff / n:,.0f} |")
    for sock in [*socks, *first]:
        sock.close()


if __name__ == "__main__":
    main()
