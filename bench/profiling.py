"""Where a gateway's CPU goes: py-spy's raw stacks of a target, summarized by layer.

Used by `bench/run.py --profile chat@16,...` (after the tables, on every Python target); alone:
    .venv/bin/python bench/profiling.py RAW_STACKS.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

LAYERS = [  # (top-level package of the frame's file, layer name); py-spy shows site-packages-relative paths
    ("seadragon_gw", "seadragon_gw (our code)"),
    ("httptools", "httptools"), ("starlette", "starlette"), ("uvicorn", "uvicorn"), ("aiohttp", "aiohttp"),
    ("yarl", "yarl/multidict"), ("multidict", "yarl/multidict"), ("propcache", "yarl/multidict"),
    ("anyio", "anyio"), ("sniffio", "anyio"), ("h11", "h11"), ("uvloop", "uvloop"), ("orjson", "orjson"),
    ("aiosqlite", "aiosqlite"), ("sortedcontainers", "sortedcontainers"), ("prometheus_client", "prometheus_client"),
]
STARTUP = ("seadragon_gw/cli.py", "seadragon_gw/__main__.py", "seadragon_gw/serving.py", "launch_variant.py",
           "uvicorn/main.py", "uvicorn/server.py", "uvicorn/_compat.py")  # start-up frames at the root of every stack
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
    lines = [f"samples: {total} on the event-loop thread ({other_threads} on other threads, left out)", "",
             "| layer (self; stdlib charged to its caller) | % of gateway CPU |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in layer.most_common()]
    lines += ["", "| layer (inclusive: anywhere on the stack) | % |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in inclusive.most_common()]
    lines += ["", f"| top {top} calls out of our code (innermost seadragon_gw frame -> callee), inclusive | % |",
              "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in callout.most_common(top)]
    lines += ["", f"| top {top} functions by self time | % |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in leaf.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize_profile(sys.argv[1]))
