"""Managed backends (issue 9): a backend whose process the gateway owns. Real processes (the
fake model server in tests/support/fake_model_server.py) on real ports, driven through the
registry and the scheduler exactly as a request is: `Registry.routable` (what routing calls),
`Scheduler.submit`, then a real HTTP request to the backend it was granted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from seadragon_gw.backends.backend import Backend
from seadragon_gw.backends.registry import Registry
from seadragon_gw.backends.state import BackendState, StateChange
from seadragon_gw.config import (
    BackendConfig,
    ConfigError,
    ManagedConfig,
    ManagedHealthConfig,
    QueueConfig,
    parse_config,
)
from seadragon_gw.errors import UpstreamFailed
from seadragon_gw.managed.logfile import ProcessLog
from seadragon_gw.managed.process import ProcessSupervisor
from seadragon_gw.model_names import model_key
from seadragon_gw.queue.scheduler import Scheduler

S = BackendState
FAKE = str(Path(__file__).parent / "support" / "fake_model_server.py")
KEY = (model_key("fake-model"), None)


def managed(tmp_path: Path, *args: str, **options: Any) -> BackendConfig:
    settings: dict[str, Any] = {"start_timeout_s": 10.0, "stop_timeout_s": 5.0, "restart_backoff_s": 0.05,
                                "log_dir": str(tmp_path / "logs"), **options}
    config = ManagedConfig(command=[sys.executable, FAKE, "--port", "{port}", "--host", "{host}", *args],
                           health=ManagedHealthConfig(interval_s=0.02), **settings)
    return BackendConfig(name="local", kind="openai", models=["fake-model"], managed=config)


@contextlib.asynccontextmanager
async def running(config: BackendConfig) -> AsyncIterator[tuple[Registry, Scheduler, Backend]]:
    registry = Registry([config], supervise=ProcessSupervisor)
    scheduler = Scheduler(registry, QueueConfig())
    scheduler.start()
    await registry.start()
    try:
        yield registry, scheduler, registry.backends[0]
    finally:
        await scheduler.stop()
        await registry.stop()


async def until(predicate: Callable[[], Any], what: str) -> None:
    """Wait (bounded, 10 s) for a condition the supervisor brings about."""
    try:
        async with asyncio.timeout(10.0):
            while not predicate():  # noqa: ASYNC110 - the conditions are plain attributes
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def ask(registry: Registry, scheduler: Scheduler, **body: Any) -> httpx.Response:
    """One request as the gateway makes it: routed, queued, granted, sent."""
    assert registry.routable(KEY), "no backend may take the request"
    entry, _ = scheduler.submit(KEY, 1.0)
    try:
        backend = await asyncio.wait_for(entry.granted, 15)
        async with httpx.AsyncClient() as client:
            return await client.post(f"{backend.config.url}/v1/chat/completions",
                                     json={"model": "fake-model", "messages": [], **body})
    finally:
        scheduler.release(entry)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return True


def test_managed_config_derives_the_url_and_is_checked() -> None:
    raw: dict[str, Any] = {"backends": [{"name": "m", "kind": "openai", "models": ["x"],
                         "managed": {"command": ["srv", "--port", "{port}"], "port": 8123,
                                     "health": {"path": "/health", "status": 200}, "idle_ttl_s": 60}}]}
    backend = parse_config(raw).backends[0]
    assert backend.managed is not None and backend.managed.port == 8123 and backend.managed.start == "on_demand"
    registry = Registry([backend], supervise=ProcessSupervisor)
    assert registry.backends[0].config.url == "http://127.0.0.1:8123"
    assert registry.backends[0].state is S.STOPPED and registry.backends[0].may_queue
    assert not registry.backends[0].may_try
    raw["backends"][0]["url"] = "http://x:1"
    with pytest.raises(ConfigError, match=r"backends\[0\]\.url: leave it out for a managed backend"):
        parse_config(raw)
    del raw["backends"][0]["url"]
    raw["backends"][0]["managed"]["start"] = "sometimes"
    with pytest.raises(ConfigError, match=r"backends\[0\]\.managed\.start: must be one of"):
        parse_config(raw)


async def test_first_request_starts_the_process_and_succeeds(tmp_path: Path) -> None:
    seen: list[tuple[S, S]] = []
    async with running(managed(tmp_path, "--warmup-s", "0.2")) as (registry, scheduler, backend):
        registry.listeners.append(lambda change: seen.append((change.old, change.new)))
        assert backend.state is S.STOPPED
        answer = await ask(registry, scheduler)
        assert answer.status_code == 200
        pid = registry.supervisors[backend].pid
        assert answer.json()["choices"][0]["message"]["content"] == f"pid {pid}"
        assert seen == [(S.STOPPED, S.STARTING), (S.STARTING, S.UP)]
        assert (tmp_path / "logs" / "local.log").read_text().count("GET /health") >= 1


async def test_start_timeout_rejects_the_waiting_request_with_the_stderr_tail(tmp_path: Path) -> None:
    config = managed(tmp_path, "--warmup-s", "60", "--stderr", "loading weights: out of memory",
                     start_timeout_s=0.3)
    async with running(config) as (registry, scheduler, backend):
        with pytest.raises(UpstreamFailed) as caught:
            await ask(registry, scheduler)
        assert caught.value.message == ("managed backend local: not healthy within 0.3s; "
                                        "stderr: loading weights: out of memory")
        assert backend.state is S.CRASHED and backend.lifecycle.reason == caught.value.message
        assert registry.supervisors[backend].pid is None


async def test_process_that_exits_at_once_fails_the_start_with_its_exit_code(tmp_path: Path) -> None:
    async with running(managed(tmp_path, "--exit-now", "7", "--stderr", "no such model file")) as (r, s, backend):
        with pytest.raises(UpstreamFailed) as caught:
            await ask(r, s)
        assert caught.value.message == ("managed backend local: the process exited during start-up "
                                        "(exit code 7); stderr: no such model file")


async def test_a_command_that_cannot_run_fails_the_start(tmp_path: Path) -> None:
    config = managed(tmp_path)
    assert config.managed is not None
    config.managed.command = [str(tmp_path / "no-such-server"), "--port", "{port}"]
    async with running(config) as (registry, scheduler, backend):
        with pytest.raises(UpstreamFailed) as caught:
            await ask(registry, scheduler)
        assert caught.value.message == (f"managed backend local: could not run "
                                        f"'{tmp_path / 'no-such-server'}': No such file or directory")
        assert backend.state is S.CRASHED


async def test_crash_marks_crashed_and_the_next_request_restarts_it(tmp_path: Path) -> None:
    async with running(managed(tmp_path, "--crash-after", "1")) as (registry, scheduler, backend):
        first = await ask(registry, scheduler)
        assert first.status_code == 200
        await until(lambda: backend.state is S.CRASHED, "the crash to be seen")
        assert backend.lifecycle.reason == ("the process exited unexpectedly (exit code 3); "
                                            "stderr: fake model server: crashing as told")
        second = await ask(registry, scheduler)
        assert second.status_code == 200 and second.json() != first.json()  # another pid


async def test_crash_with_work_waiting_restarts_with_backoff(tmp_path: Path) -> None:
    async with running(managed(tmp_path)) as (registry, scheduler, backend):
        changes: list[StateChange] = []
        registry.listeners.append(changes.append)
        assert (await ask(registry, scheduler)).status_code == 200
        first_pid = registry.supervisors[backend].pid
        hold = tmp_path / "release"
        entry, _ = scheduler.submit(KEY, 1.0)
        granted = await entry.granted
        async with httpx.AsyncClient() as client:
            dying = asyncio.create_task(client.post(f"{granted.config.url}/v1/chat/completions",
                                                    json={"hold_until": str(hold), "exit": 9}))
            waiting = asyncio.create_task(ask(registry, scheduler))  # max_concurrent is 1: it waits
            await until(lambda: scheduler.waiting(KEY) == 1, "the second request waiting")
            hold.touch()
            with pytest.raises(httpx.RemoteProtocolError):  # the in-flight request ends
                await dying
        await until(lambda: backend.state is not S.UP, "the crash to be seen")
        scheduler.release(entry)
        answer = await waiting  # served by the process restarted after the backoff
        assert answer.status_code == 200
        assert [(c.new, c.reason) for c in changes[2:4]] == [
            (S.CRASHED, "the process exited unexpectedly (exit code 9); "
                        "stderr: fake model server: exiting mid-request"),
            (S.STARTING, "starting the process")]
        assert answer.json()["choices"][0]["message"]["content"] != f"pid {first_pid}"


async def test_idle_ttl_stops_the_process(tmp_path: Path) -> None:
    async with running(managed(tmp_path, idle_ttl_s=0.2)) as (registry, scheduler, backend):
        assert (await ask(registry, scheduler)).status_code == 200
        pid = registry.supervisors[backend].pid
        assert pid is not None
        await until(lambda: backend.state is S.STOPPED, "the idle stop")
        assert backend.lifecycle.reason == "idle for 0.2s"
        await until(lambda: not alive(pid), "the process to be gone")


async def test_graceful_stop_waits_for_the_active_request(tmp_path: Path) -> None:
    async with running(managed(tmp_path)) as (registry, scheduler, backend):
        hold = tmp_path / "release"
        request = asyncio.create_task(ask(registry, scheduler, hold_until=str(hold)))
        await until(lambda: backend.active == 1, "the request in flight")
        pid = registry.supervisors[backend].pid
        assert pid is not None
        stop = asyncio.create_task(registry.supervisors[backend].stop(reason="operator"))
        await until(lambda: backend.state is S.STOPPING, "stopping")
        assert alive(pid) and not stop.done()  # the held request keeps it running
        hold.touch()
        assert (await request).status_code == 200
        await stop
        assert backend.state is S.STOPPED and backend.lifecycle.reason == "operator"
        assert not alive(pid)


async def test_a_request_during_a_graceful_stop_waits_and_is_served_after_a_restart(tmp_path: Path) -> None:
    async with running(managed(tmp_path)) as (registry, scheduler, backend):
        changes: list[StateChange] = []
        hold = tmp_path / "release"
        request = asyncio.create_task(ask(registry, scheduler, hold_until=str(hold)))
        await until(lambda: backend.active == 1, "the request in flight")
        registry.listeners.append(changes.append)
        stop = asyncio.create_task(registry.supervisors[backend].stop(reason="operator"))
        await until(lambda: backend.state is S.STOPPING, "stopping")
        late = asyncio.create_task(ask(registry, scheduler))
        await until(lambda: scheduler.waiting(KEY) == 1, "the late request waiting")
        hold.touch()
        assert (await request).status_code == 200
        await stop
        assert (await late).status_code == 200
        assert [c.new for c in changes] == [S.STOPPING, S.STOPPED, S.STARTING, S.UP]


async def test_manual_backend_is_not_started_by_a_request(tmp_path: Path) -> None:
    async with running(managed(tmp_path, start="manual")) as (registry, scheduler, backend):
        assert registry.routable(KEY) == [] and backend.state is S.STOPPED
        task = registry.ensure_started(backend)  # what an operator's start does
        assert task is not None
        await task
        assert (await ask(registry, scheduler)).status_code == 200


def test_process_log_rotates_at_its_size_limit(tmp_path: Path) -> None:
    log = ProcessLog(str(tmp_path), "local", max_bytes=100)
    for i in range(12):
        log.write(f"line {i:02d} padding\n".encode(), "stderr" if i % 2 else "stdout")
    log.close()
    current, old = tmp_path / "local.log", tmp_path / "local.log.1"
    assert current.read_text() == "".join(f"line {i:02d} padding\n" for i in range(7, 12))
    assert old.read_text() == "".join(f"line {i:02d} padding\n" for i in range(7))  # 112 bytes >= 100
    assert log.tail().endswith("line 09 padding | line 11 padding")


async def test_sigterm_ignored_is_followed_by_sigkill(tmp_path: Path) -> None:
    async with running(managed(tmp_path, "--ignore-sigterm", stop_timeout_s=0.2)) as (r, s, backend):
        assert (await ask(r, s)).status_code == 200
        pid = r.supervisors[backend].pid
        assert pid is not None
        await r.supervisors[backend].stop()
        assert backend.state is S.STOPPED and not alive(pid)


async def test_no_orphan_after_the_registry_stops(tmp_path: Path) -> None:
    async with running(managed(tmp_path, start="at_startup")) as (registry, _, backend):
        assert backend.state is S.UP
        pid = registry.supervisors[backend].pid
        assert pid is not None
    assert not alive(pid)


_GATEWAY = """
import asyncio, sys
from seadragon_gw.backends.registry import Registry
from seadragon_gw.config import parse_config
from seadragon_gw.managed.process import ProcessSupervisor

async def main() -> None:
    config = parse_config({"backends": [{"name": "local", "kind": "openai", "models": ["m"], "managed": {
        "command": [sys.executable, sys.argv[1], "--port", "{port}"], "start": "at_startup",
        "log_dir": sys.argv[2], "health": {"interval_s": 0.02}}}]})
    registry = Registry(config.backends, supervise=ProcessSupervisor)
    await registry.start()
    print(registry.supervisors[registry.backends[0]].pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_no_orphan_after_sigkill_of_the_gateway(tmp_path: Path) -> None:
    gateway = subprocess.Popen([sys.executable, "-c", _GATEWAY, FAKE, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None
        child = int(gateway.stdout.readline())
        assert alive(child)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the model server outlived its gateway"
            time.sleep(0.02)
    finally:
        gateway.kill()
