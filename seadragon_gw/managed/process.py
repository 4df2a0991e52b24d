"""One managed backend's process: spawn, wait until healthy, watch, stop (issue 9).

Modelled on llama-swap's proxy/process.go: one supervisor per backend owns the process and
moves the backend's lifecycle through the one state table (backends/state.py):
`stopped -> starting -> up -> stopping -> stopped`, with `crashed` when the process exits on
its own or never becomes healthy. The registry decides *when* (a request waits, the gateway
stops); this module only knows *how*. Children run in their own process group (killed as a
group) and, on Linux, get SIGTERM when the gateway dies (PR_SET_PDEATHSIG), so neither a
clean stop nor a SIGKILL of the gateway leaves a model server behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..backends.backend import Backend
from ..backends.state import BackendState
from ..backends.supervision import SupervisorHooks
from ..config import ManagedConfig
from ..errors import UpstreamFailed
from .logfile import ProcessLog

log = logging.getLogger("seadragon_gw.managed")
S = BackendState
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux only; elsewhere the
    process group kill on a clean stop is all there is)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ProcessSupervisor:
    """The owner of one managed backend's process; a `SupervisorFactory` for the registry:
    `Registry(configs, supervise=ProcessSupervisor)`."""

    def __init__(self, backend: Backend, port: int, hooks: SupervisorHooks,
                 clock: Callable[[], float] = time.monotonic) -> None:
        config = backend.config.managed
        if config is None:
            raise ValueError(f"backend {backend.name} is not managed")
        self.backend = backend
        self.config: ManagedConfig = config
        self.host, self.port = config.host, port
        self.hooks = hooks
        self.log = ProcessLog(config.log_dir, backend.name, config.log_max_bytes)
        self._clock = clock
        self._proc: asyncio.subprocess.Process | None = None
        self._exited = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._idle: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._crashes = 0
        self._up_since = 0.0
        self.profile: str | None = None  # the profile of the process that runs or starts
        self.next_profile: str | None = config.default_profile  # the profile the next start uses
        self.started_at: float | None = None  # wall clock, while it runs
        self.restarts = 0  # starts after a crash or a failed start

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def log_path(self) -> Path:
        return self.log.path

    # -- starting -----------------------------------------------------------------------
    def ensure_started(self, now: bool = False) -> asyncio.Task[None] | None:
        """Start the process unless it runs, is starting, stopping or waiting out a backoff
        (`now`: an operator's start does not wait out the backoff). Returns the start task to
        await (None if nothing was started)."""
        if self._starting is not None:
            return self._starting
        if now and self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._stopping is not None or self._restart is not None:
            return None
        if self.backend.state not in (S.STOPPED, S.CRASHED):
            return None
        self._starting = asyncio.create_task(self._start(), name=f"managed-start:{self.backend.name}")
        return self._starting

    async def _start(self) -> None:
        try:
            if self.backend.state is S.CRASHED:
                self.restarts += 1
            self.profile = self.next_profile
            self.backend.lifecycle.move(S.STARTING, "starting the process" + self._with_profile())
            try:
                failure = await self._launch()
            except Exception as exc:  # a bug must not leave the backend `starting` for ever
                log.exception("managed backend %s: start failed", self.backend.name)
                failure = f"start failed: {exc!r}"
            if failure is None:
                self._up_since, self.started_at = self._clock(), time.time()
                self.backend.lifecycle.move(S.UP, "the process answered its health check")
                self._idle = asyncio.create_task(self._idle_watch(), name=f"managed-idle:{self.backend.name}")
                self.hooks.became_ready(self.backend)
                return
            await self._kill()
            tail = self.log.tail()
            reason = f"managed backend {self.backend.name}: {failure}" + (f"; stderr: {tail}" if tail else "")
            log.warning("%s", reason)
            self.backend.lifecycle.move(S.CRASHED, reason)
            self.hooks.start_failed(self.backend, UpstreamFailed(reason))
        finally:
            self._starting = None

    def _with_profile(self) -> str:
        return f" with profile {self.profile}" if self.profile is not None else ""

    def _fill(self, text: str) -> str:
        """Only the named placeholders (not str.format: a JSON argument's braces stay)."""
        values = {"{port}": str(self.port), "{host}": self.host, "{model_path}": self.config.model_path or "",
                  "{profile}": self.profile or "", "{python}": sys.executable}
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return text

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        """The command and environment of a start with `self.profile`: the profile's args
        after the command's, its env over the backend's."""
        profile = self.config.profiles.get(self.profile) if self.profile is not None else None
        command = [*self.config.command, *(profile.args if profile is not None else [])]
        extra = {**self.config.env, **(profile.env if profile is not None else {})}
        env = dict(os.environ)
        env.update({k: self._fill(v) for k, v in extra.items()})
        return [self._fill(part) for part in command], env

    async def _launch(self) -> str | None:
        """Spawn and wait for health; the reason it failed, or None when healthy."""
        self.log.clear_tail()
        self._exited = asyncio.Event()
        argv, env = self.argv_env()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=self.config.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            return f"could not run {argv[0]!r}: {exc.strerror or exc}"
        except subprocess.SubprocessError as exc:  # the preexec step failed in the child
            return f"could not run {argv[0]!r}: {exc}"
        self._proc = proc
        log.info("managed backend %s: started pid %d on port %d", self.backend.name, proc.pid, self.port)
        self._pumps = [asyncio.create_task(self._pump(proc.stdout, "stdout")),
                       asyncio.create_task(self._pump(proc.stderr, "stderr"))]
        asyncio.create_task(self._watch_exit(proc), name=f"managed-exit:{self.backend.name}")
        return await self._until_healthy(time.monotonic() + self.config.start_timeout_s)

    async def _until_healthy(self, deadline: float) -> str | None:
        """Poll the health path until it answers, the process exits or `deadline` passes.
        No `wait_for` around the loop or inside it: on Python 3.11 a `wait_for` whose own
        timeout fires as an outer one cancels it can swallow the cancellation (fixed in 3.12),
        and the start then waited for ever; the deadline is checked here instead."""
        loop = asyncio.get_running_loop()
        exited = loop.create_task(self._exited.wait())
        try:
            while True:
                if self._exited.is_set():
                    code = self._proc.returncode if self._proc is not None else None
                    return f"the process exited during start-up (exit code {code})"
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"not healthy within {self.config.start_timeout_s:g}s"
                if await self._healthy(min(left, 5.0)):
                    return None
                await asyncio.wait({exited}, timeout=max(0.0, min(self.config.health.interval_s,
                                                                   deadline - time.monotonic())))
        finally:
            exited.cancel()

    async def _healthy(self, limit_s: float) -> bool:
        """One GET of the health path within `limit_s`; True on the expected status. A raw
        HTTP/1.1 request: the answer's status line is all that matters."""
        try:
            async with asyncio.timeout(limit_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError):
            return False
        try:
            async with asyncio.timeout(limit_s):
                writer.write(f"GET {self.config.health.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                             "Connection: close\r\n\r\n".encode())
                line = await reader.readline()
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        parts = line.split()
        return len(parts) >= 2 and parts[1] == str(self.config.health.status).encode()

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while line := await stream.readline():
            self.log.write(line, name)

    # -- watching -----------------------------------------------------------------------
    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._exited.set()
        if self._stopping is not None or self.backend.state not in (S.UP, S.DOWN, S.DRAINING):
            return  # a stop, or a failed start: their own code says what happened
        tail = self.log.tail()
        reason = f"the process exited unexpectedly (exit code {code})" + (f"; stderr: {tail}" if tail else "")
        self.backend.lifecycle.move(S.CRASHED, reason)
        self.started_at = None
        self._cancel_idle()
        if self._clock() - self._up_since > self.config.restart_backoff_max_s:
            self._crashes = 0
        self._crashes += 1
        if self.hooks.work_waiting(self.backend):
            delay = min(self.config.restart_backoff_s * 2 ** (self._crashes - 1), self.config.restart_backoff_max_s)
            self._restart = asyncio.create_task(self._restart_after(delay))

    async def _restart_after(self, delay: float) -> None:
        log.info("managed backend %s: restarting in %.2fs", self.backend.name, delay)
        await asyncio.sleep(delay)
        self._restart = None
        self.hooks.start(self.backend)  # through the registry: an exclusive group may say wait

    async def _idle_watch(self) -> None:
        """Stop the process once it has served nothing for `idle_ttl_s`."""
        ttl = self.config.idle_ttl_s
        if ttl <= 0:
            return
        last_used = self._clock()
        while self.backend.state is S.UP:
            await asyncio.sleep(min(ttl / 4, 1.0))
            now = self._clock()
            if self.backend.active > 0:
                last_used = now
            elif now - last_used >= ttl:
                self._idle = None
                self._stopping = asyncio.create_task(self._stop(True, f"idle for {ttl:g}s"))
                return

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle is not asyncio.current_task():
            self._idle.cancel()
        self._idle = None

    # -- stopping -----------------------------------------------------------------------
    async def stop(self, graceful: bool = True, reason: str = "stopped") -> None:
        """Graceful: take no new work, let the active requests finish, then SIGTERM (SIGKILL
        after `stop_timeout_s`). Not graceful (the gateway stops): signal at once."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(graceful, reason))
        await asyncio.shield(self._stopping)

    async def _stop(self, graceful: bool, reason: str) -> None:
        try:
            for task in (self._restart, self._starting):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            self._restart = self._starting = None
            self._cancel_idle()
            if self.backend.lifecycle.can_move(S.STOPPING):
                self.backend.lifecycle.move(S.STOPPING, reason)
            # The slots are the scheduler's counter (no event to wait on); STOPPING takes no
            # new work, so this only counts down.
            while graceful and self.backend.active > 0:  # noqa: ASYNC110
                await asyncio.sleep(self.config.health.interval_s)
            await self._kill()
            if self.backend.state in (S.STOPPING, S.CRASHED):
                self.backend.lifecycle.move(S.STOPPED, reason)
        finally:
            self._stopping = None
            self.started_at = None
            self.log.close()
        if graceful and self.config.start != "manual" and self.hooks.work_waiting(self.backend):
            self.hooks.start(self.backend)  # requests came while it stopped: they waited for it

    async def _kill(self) -> None:
        """SIGTERM the process group, SIGKILL it after `stop_timeout_s`."""
        proc = self._proc
        if proc is None:
            return
        self._signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._exited.wait(), self.config.stop_timeout_s)
        except TimeoutError:
            log.warning("managed backend %s: no exit %gs after SIGTERM; SIGKILL", self.backend.name,
                        self.config.stop_timeout_s)
            self._signal(proc, signal.SIGKILL)
            await self._exited.wait()
        self._signal(proc, signal.SIGKILL)  # anything of the group left behind
        self._proc = None

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
