"""Exclusive groups of managed backends (issue 9, one GPU): backends with the same `group` never
run at once. Starting one drains and stops the others first; a request for a stopped member
waits and is served once the running one has no active request. Real processes (the fake model
server), driven as the gateway drives a request (`Registry.routable`, `Scheduler.submit`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from seadragon_gw.backends.backend import Backend
from seadragon_gw.backends.registry import Registry
from seadragon_gw.backends.state import BackendState, StateChange
from seadragon_gw.config import BackendConfig, ManagedConfig, ManagedHealthConfig, QueueConfig
from seadragon_gw.managed.process import ProcessSupervisor
from seadragon_gw.model_names import QueueKey, model_key
from seadragon_gw.queue.scheduler import Scheduler
from tests.test_managed import FAKE, alive, until

S = BackendState


def member(tmp_path: Path, name: str, **options: Any) -> BackendConfig:
    config = ManagedConfig(command=[sys.executable, FAKE, "--port", "{port}", "--model", f"model-{name}",
                                    "--tag", name],
                           health=ManagedHealthConfig(interval_s=0.02), start_timeout_s=10.0,
                           log_dir=str(tmp_path / "logs"), group="gpu", **options)
    return BackendConfig(name=name, kind="openai", models=[f"model-{name}"], managed=config)


def key(name: str) -> QueueKey:
    return (model_key(f"model-{name}"), None)


@contextlib.asynccontextmanager
async def group(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Registry, Scheduler, list[Backend]]]:
    registry = Registry([member(tmp_path, "a", **options), member(tmp_path, "b", **options)],
                        supervise=ProcessSupervisor)
    scheduler = Scheduler(registry, QueueConfig())
    scheduler.start()
    await registry.start()
    try:
        yield registry, scheduler, registry.backends
    finally:
        await scheduler.stop()
        await registry.stop()


async def ask(registry: Registry, scheduler: Scheduler, name: str, **body: Any) -> str:
    assert registry.routable(key(name)), "no backend may take the request"
    entry, _ = scheduler.submit(key(name), 1.0)
    try:
        backend = await asyncio.wait_for(asyncio.shield(entry.granted), 15)
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{backend.config.url}/v1/chat/completions",
                                       json={"model": f"model-{name}", "messages": [], **body})
        text: str = answer.json()["choices"][0]["message"]["content"]
        return text
    finally:
        scheduler.release(entry)


class Overlap:
    """At every start of a member, which other members' processes are alive (by pid)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.pids: dict[str, set[int]] = {}
        self.seen: list[tuple[str, list[str]]] = []
        registry.listeners.append(self.changed)

    def changed(self, change: StateChange) -> None:
        for backend, supervisor in self.registry.supervisors.items():
            if supervisor.pid is not None:
                self.pids.setdefault(backend.name, set()).add(supervisor.pid)
        if change.new is S.STARTING:
            others = [name for name, pids in self.pids.items() if name != change.backend
                      and any(alive(pid) for pid in pids)]
            self.seen.append((change.backend, others))


async def test_a_request_for_each_member_never_has_both_processes_alive(tmp_path: Path) -> None:
    async with group(tmp_path) as (registry, scheduler, (a, b)):
        overlap = Overlap(registry)
        assert (await ask(registry, scheduler, "a")).endswith(" tag a")
        pid_a = registry.supervisors[a].pid
        assert pid_a is not None
        assert (await ask(registry, scheduler, "b")).endswith(" tag b")
        assert a.state is S.STOPPED and not alive(pid_a)
        assert a.lifecycle.reason == "making way for b (exclusive group gpu)"
        pid_b = registry.supervisors[b].pid
        assert pid_b is not None
        assert (await ask(registry, scheduler, "a")).endswith(" tag a")
        assert b.state is S.STOPPED and not alive(pid_b)
        assert overlap.seen == [("a", []), ("b", []), ("a", [])]


async def test_the_running_member_finishes_its_active_request_before_the_other_starts(tmp_path: Path) -> None:
    async with group(tmp_path) as (registry, scheduler, (a, b)):
        overlap = Overlap(registry)
        hold = tmp_path / "release"
        active = asyncio.create_task(ask(registry, scheduler, "a", hold_until=str(hold)))
        await until(lambda: a.active == 1, "a's request in flight")
        pid_a = registry.supervisors[a].pid
        assert pid_a is not None
        waiting_b = asyncio.create_task(ask(registry, scheduler, "b"))
        await until(lambda: a.state is S.STOPPING, "a draining for b")
        late_a = asyncio.create_task(ask(registry, scheduler, "a"))  # waits: a takes no new work
        await until(lambda: scheduler.waiting(key("a")) == 1, "the late request for a waiting")
        assert b.state is S.STOPPED and alive(pid_a) and not waiting_b.done()
        hold.touch()
        assert (await active).endswith(" tag a")
        assert (await waiting_b).endswith(" tag b")
        assert (await late_a).endswith(" tag a")  # b idled: a had its turn again
        assert [name for name, _ in overlap.seen] == ["a", "b", "a"]
        assert all(others == [] for _, others in overlap.seen)


async def test_an_idle_stop_lets_a_waiting_member_start(tmp_path: Path) -> None:
    async with group(tmp_path) as (registry, scheduler, (a, b)):
        assert (await ask(registry, scheduler, "a")).endswith(" tag a")
        hold = tmp_path / "release"
        active = asyncio.create_task(ask(registry, scheduler, "a", hold_until=str(hold)))
        await until(lambda: a.active == 1, "a's request in flight")
        both = asyncio.gather(ask(registry, scheduler, "b"), ask(registry, scheduler, "b"))
        hold.touch()
        await active
        assert [t.rsplit(" ", 1)[1] for t in await both] == ["b", "b"]
        assert a.state is S.STOPPED


async def test_an_operator_start_of_a_member_stops_the_running_one(tmp_path: Path) -> None:
    async with group(tmp_path) as (registry, scheduler, (a, b)):
        assert (await ask(registry, scheduler, "a")).endswith(" tag a")
        task = registry.ensure_started(b)
        assert task is not None
        await task
        assert a.state is S.STOPPED and b.state is S.UP


def test_two_at_startup_members_of_one_group_are_refused_at_load(tmp_path: Path) -> None:
    """Started together they would stop each other in turn: the gateway refuses the config at
    load (exit 2), in one line naming the key, and starts nothing."""
    def backend(name: str) -> dict[str, Any]:
        return {"name": name, "kind": "openai", "models": [f"model-{name}"],
                "managed": {"command": [sys.executable, FAKE, "--port", "{port}"], "group": "gpu",
                            "start": "at_startup", "log_dir": str(tmp_path / "logs")}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"backends": [backend("a"), {"name": "plain", "url": "http://127.0.0.1:9"},
                                                   backend("b")]}))
    env = {k: v for k, v in os.environ.items() if k != "SEADRAGON_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "seadragon_gw", "--config", str(config)], capture_output=True,
                            text=True, timeout=30, env=env, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [
        "seadragon-gw: config error: backends[2].managed.start: at_startup, like backends[0] ('a') of the same "
        "exclusive group 'gpu'; members of a group never run at once, so at most one may start at startup"])
    assert not (tmp_path / "logs").exists()  # nothing was started
