"""The proxies the benchmark measures, started pinned to one core and stopped cleanly.

Names (bench/run.py `--targets`):
- `seadragon`: the gateway in this tree, started as `python -m seadragon_gw serve`.
- `aiohttp` (or any X with a file bench/X_upstream.py): this tree's gateway with
  bench/X_upstream.py loaded as `seadragon_gw.backends.upstream` by bench/launch_variant.py
  (aiohttp_upstream.py is the aiohttp client the gateway shipped before backends/http1.py).
- `nginx`: nginx as a reference proxy, config generated here: one process doing all the work
  (`master_process off; daemon off; worker_processes 1`, so its CPU is read from /proc like the
  gateway's), upstream keepalive 64 over HTTP/1.1, no buffering either way, no access log.
  Installed with `apt-get install -y nginx` if it is missing.
- `floor`: bench/floor_proxy.py, the least a Python proxy can do per request (uvloop +
  httptools, relaying from the parser callbacks, nothing else): what issue 7's ratios would be
  if the gateway did no work of its own.
- `base@REF`: the gateway as of git ref REF, from a `git worktree add` of REF in a temp
  folder (removed afterwards) run with this venv and PYTHONPATH set to that worktree only; the
  start checks that `seadragon_gw` is imported from the worktree, not from this tree.
  `base-off@REF` / `base-on@REF`: the same with the operator features off / on, to compare a
  change with `seadragon-off` / `seadragon` (both configs alike).

Every gateway gets the same generated config, with only keys that old and new gateways both
know (a typo-checking config loader refuses unknown keys); `extra_server` adds newer keys for
benchmarks that only run this tree.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_rss_kb(pid: int | str = "self") -> int:
    """Resident set size in KiB, from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
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
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    dir: str                       # temp folder: config, logs (removed at stop)
    python: bool = True            # a Python process (py-spy can sample it)
    worktree: str | None = None    # base@REF: the git worktree to remove at stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# The operator features for `seadragon` (on: metrics, usage log and rate limits, the limits high
# enough never to refuse) and `seadragon-off` (all three off): issue 8's "within 1.15x" check.
OPERATIONS_ON = """\
rate_limits:
  enabled: true
  default: {per_minute: 100000000, burst: 100000000}
"""
OPERATIONS_OFF = """\
rate_limits:
  enabled: false
usage:
  enabled: false
metrics:
  enabled: false
"""


def gateway_config(workdir: str, port: int, backend_port: int, max_concurrent: int,
                   extra_server: dict[str, object] | None = None, max_waiting: int = 100000,
                   sections: str = "", backends_extra: str = "") -> str:
    Path(workdir, "tokens.json").write_text(json.dumps({"bench": TOKEN}))
    extra = "".join(f"  {k}: {v}\n" for k, v in (extra_server or {}).items())
    config = f"""\
server:
  host: 127.0.0.1
  port: {port}
  log_level: warning
  access_log: false
{extra}auth:
  tokens_file: tokens.json
  anonymous_read: true
queue:
  max_waiting: {max_waiting}
  timeout_s: 600
  early_headers: true
database: bench.db
backends:
  - name: fast
    kind: ollama
    url: http://127.0.0.1:{backend_port}
    max_concurrent: {max_concurrent}
    models: "*"
""" + backends_extra + sections
    path = Path(workdir, "config.yaml")
    path.write_text(config)
    return str(path)


def nginx_config(workdir: str, port: int, backend_port: int) -> str:
    d = workdir
    config = f"""\
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_max_body_size 100m;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""
    path = Path(workdir, "nginx.conf")
    path.write_text(config)
    return str(path)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found:
        return found
    print("nginx not found: apt-get install -y nginx", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "install", "-y", "nginx"], check=True)
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(found):
        raise SystemExit("nginx is still missing after apt-get install")
    return found


def add_worktree(ref: str) -> str:
    parent = tempfile.mkdtemp(prefix="seadragon-bench-base-")
    tree = os.path.join(parent, "tree")
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tree, ref],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        raise SystemExit(f"git worktree add {ref} failed: {done.stderr.strip()}")
    return tree


def remove_worktree(tree: str) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=False,
                   capture_output=True)
    shutil.rmtree(os.path.dirname(tree), ignore_errors=True)


def _check_imports_from(env: dict[str, str], cwd: str, tree: str) -> None:
    """The old gateway must not pick up this tree's package (the venv's editable install)."""
    found = subprocess.run([sys.executable, "-c", "import seadragon_gw; print(seadragon_gw.__file__)"],
                           env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.realpath(found).startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"base target imports seadragon_gw from {found}, not from the worktree {tree}")


def _gateway_cmd(name: str, config: str, port: int, env: dict[str, str], workdir: str
                 ) -> tuple[list[str], str | None]:
    """The command line for a Python target and, for base@REF, its worktree."""
    serve = ["serve", "--config", config, "--port", str(port)]
    if name in ("seadragon", "seadragon-off"):
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return [sys.executable, "-m", "seadragon_gw", *serve], None
    if name.startswith(("base@", "base-off@", "base-on@")):
        tree = add_worktree(name.partition("@")[2])
        env["PYTHONPATH"] = tree
        try:
            _check_imports_from(env, workdir, tree)
        except BaseException:
            remove_worktree(tree)
            raise
        return [sys.executable, "-m", "seadragon_gw", *serve], tree
    variant = HERE / f"{name}_upstream.py"
    if not variant.exists():
        raise SystemExit(f"unknown target {name!r}: not seadragon, nginx or base@REF, and no file {variant}")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["SEADRAGON_UPSTREAM_VARIANT"] = str(variant)
    return [sys.executable, str(HERE / "launch_variant.py"), *serve], None


def start_target(name: str, backend_port: int, max_concurrent: int, core: str,
                 extra_server: dict[str, object] | None = None, max_waiting: int = 100000,
                 backends_extra: str = "") -> Target:
    """Start one target pinned to `core` and wait until it proxies to the backend."""
    workdir = tempfile.mkdtemp(prefix=f"seadragon-bench-{name.replace('@', '-')}-")
    port = free_port()
    log = open(Path(workdir, "target.log"), "wb")  # start-up chatter (e.g. an admin registration token)
    env = dict(os.environ)
    tree: str | None = None
    if name == "nginx":
        conf = nginx_config(workdir, port, backend_port)
        cmd = [nginx_binary(), "-p", workdir, "-e", f"{workdir}/error.log", "-c", conf]
        ready = "/api/version"  # through the proxy: nginx is up and reaches the backend
    elif name == "floor" or name.startswith("floor+"):
        burn = name.partition("+")[2] or "0"
        cmd = [sys.executable, str(HERE / "floor_proxy.py"), "--port", str(port), "--backend-port", str(backend_port),
               "--burn-us", burn]
        ready = "/api/version"
    else:
        sections = {"seadragon": OPERATIONS_ON, "seadragon-off": OPERATIONS_OFF}.get(name, "")
        if name.startswith("base-off@"):
            sections = OPERATIONS_OFF  # the build at REF with the operator features off (A/B against seadragon-off)
        elif name.startswith("base-on@"):
            sections = OPERATIONS_ON  # ... and on (A/B against seadragon)
        config = gateway_config(workdir, port, backend_port, max_concurrent, extra_server, max_waiting, sections,
                                backends_extra)
        cmd, tree = _gateway_cmd(name, config, port, env, workdir)
        ready = "/health"
    proc = subprocess.Popen(["taskset", "-c", core, *cmd], cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    target = Target(name, port, proc, workdir, python=name != "nginx", worktree=tree)
    try:
        wait_http(port, ready, 30, proc)
    except BaseException:
        print(Path(workdir, "target.log").read_text()[-3000:], file=sys.stderr)
        stop_target(target)
        raise
    return target


def stop_target(target: Target) -> None:
    if target.proc.poll() is None:
        target.proc.terminate()
        try:
            target.proc.wait(15)
        except subprocess.TimeoutExpired:
            target.proc.kill()
            target.proc.wait(5)
    if target.worktree:
        remove_worktree(target.worktree)
    shutil.rmtree(target.dir, ignore_errors=True)
