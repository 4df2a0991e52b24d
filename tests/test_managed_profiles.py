"""Managed profiles (issue 9): named extra argv/env of a managed process (e.g. OCR resolutions),
with real processes (tests/support/fake_model_server.py). The process really runs with the
profile's arguments; a switch drains (graceful) or cuts (not graceful) the active requests and
restarts; a request for another profile waits in the queue and is served by the restarted
process, driven as the gateway drives a request: `Registry.routable` then `Scheduler.submit`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from seadragon_gw.backends.backend import Backend
from seadragon_gw.backends.registry import Registry
from seadragon_gw.backends.state import BackendState
from seadragon_gw.config import (
    BackendConfig,
    ConfigError,
    ManagedConfig,
    ManagedHealthConfig,
    ManagedProfile,
    parse_config,
)
from seadragon_gw.errors import InvalidInput
from seadragon_gw.queue.entry import QueueEntry
from seadragon_gw.queue.scheduler import Scheduler
from tests.test_managed import FAKE, KEY, alive, running, until

S = BackendState


def with_profiles(tmp_path: Path, **options: Any) -> BackendConfig:
    """A fake model server with profiles small and large; each tags its answers."""
    profiles = {name: ManagedProfile(args=["--tag", "{profile}"], env={"FAKE_SIZE": size})
                for name, size in (("small", "640"), ("large", "1280"))}
    config = ManagedConfig(command=[sys.executable, FAKE, "--port", "{port}", "--host", "{host}"],
                           env={"FAKE_WEIGHTS": "{model_path}/w.gguf"}, model_path="/models",
                           health=ManagedHealthConfig(interval_s=0.02), start_timeout_s=10.0,
                           restart_backoff_s=0.05, log_dir=str(tmp_path / "logs"), profiles=profiles,
                           default_profile="small", **options)
    return BackendConfig(name="ocr", kind="openai", models=["fake-model"], managed=config)


def submit(registry: Registry, scheduler: Scheduler, profile: str | None) -> QueueEntry:
    assert registry.routable(KEY, profile), "no backend may take the request"
    entry, _ = scheduler.submit(KEY, 1.0, profile=profile)
    return entry


async def send(scheduler: Scheduler, entry: QueueEntry, **body: Any) -> str:
    """Wait for the slot, send one completion, give the slot back; the answer's text."""
    try:
        backend = await asyncio.wait_for(asyncio.shield(entry.granted), 15)
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{backend.config.url}/v1/chat/completions",
                                       json={"model": "fake-model", "messages": [], **body})
        text: str = answer.json()["choices"][0]["message"]["content"]
        return text
    finally:
        scheduler.release(entry)


async def ask(registry: Registry, scheduler: Scheduler, profile: str | None = None, **body: Any) -> str:
    return await send(scheduler, submit(registry, scheduler, profile), **body)


async def argv(backend: Backend) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        found: dict[str, Any] = (await client.get(f"{backend.config.url}/argv")).json()
        return found


def test_profiles_are_checked_by_name() -> None:
    raw: dict[str, Any] = {"backends": [{"name": "m", "kind": "openai", "models": ["x"], "managed": {
        "command": ["srv", "--port", "{port}"], "profiles": {"tiny": {"args": ["--size", "512"]}},
        "default_profile": "base"}}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == "backends[0].managed.default_profile: 'base' is not one of its profiles (tiny)"
    raw["backends"][0]["managed"]["default_profile"] = "tiny"
    raw["backends"][0]["managed"]["profiles"]["tiny"]["argz"] = []
    with pytest.raises(ConfigError, match=r"backends\[0\]\.managed\.profiles\.tiny\.argz: unknown key"):
        parse_config(raw)
    del raw["backends"][0]["managed"]["profiles"]["tiny"]["argz"]
    managed = parse_config(raw).backends[0].managed
    assert managed is not None and managed.profiles["tiny"].args == ["--size", "512"]


async def test_the_process_runs_with_the_default_profile_and_its_placeholders(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        assert registry.profile_of(backend) == "small"  # stopped: the next start's
        text = await ask(registry, scheduler)
        assert text.endswith(" tag small") and registry.profile_of(backend) == "small"
        seen = await argv(backend)
        port = backend.config.url.rsplit(":", 1)[1]
        assert seen["argv"] == ["--port", port, "--host", "127.0.0.1", "--tag", "small"]
        assert seen["env"] == {"FAKE_WEIGHTS": "/models/w.gguf", "FAKE_SIZE": "640"}


async def test_graceful_switch_waits_for_the_active_request_then_restarts(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        hold = tmp_path / "release"
        active = asyncio.create_task(ask(registry, scheduler, hold_until=str(hold)))
        await until(lambda: backend.active == 1, "the request in flight")
        old_pid = registry.supervisors[backend].pid
        assert old_pid is not None
        switch = asyncio.create_task(registry.switch_profile("ocr", "large"))
        await until(lambda: backend.state is S.STOPPING, "the drain")
        assert backend.lifecycle.reason == "switching to profile large"
        assert alive(old_pid) and not switch.done()
        hold.touch()
        assert (await active).endswith(" tag small")  # served to the end by the old process
        await switch
        assert backend.state is S.UP and registry.profile_of(backend) == "large"
        assert (await argv(backend))["argv"][-2:] == ["--tag", "large"]
        assert not alive(old_pid)


async def test_switch_not_graceful_ends_the_active_request_at_once(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        active = asyncio.create_task(ask(registry, scheduler, hold_until=str(tmp_path / "never")))
        await until(lambda: backend.active == 1, "the request in flight")
        await registry.switch_profile("ocr", "large", graceful=False)
        with pytest.raises(httpx.TransportError):  # the process is gone: reset or closed
            await active
        assert registry.profile_of(backend) == "large"
        assert (await ask(registry, scheduler)).endswith(" tag large")


async def test_a_request_for_another_profile_waits_and_is_served_after_the_switch(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        hold = tmp_path / "release"
        active = asyncio.create_task(ask(registry, scheduler, "small", hold_until=str(hold)))
        await until(lambda: backend.active == 1, "the small request in flight")
        large = submit(registry, scheduler, "large")  # switches, after the small request
        await until(lambda: backend.state is S.STOPPING, "the drain for the large request")
        assert not large.granted.done() and scheduler.waiting(KEY) == 1
        hold.touch()
        assert (await active).endswith(" tag small")
        assert (await send(scheduler, large)).endswith(" tag large")
        assert registry.profile_of(backend) == "large"


async def test_requests_for_both_profiles_are_all_served_one_profile_at_a_time(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        assert (await ask(registry, scheduler, "small")).endswith(" tag small")
        entries = [(p, submit(registry, scheduler, p)) for p in ("large", "small", "large", "small")]
        texts = await asyncio.gather(*(send(scheduler, entry) for _, entry in entries))
        assert [t.rsplit(" ", 1)[1] for t in texts] == [p for p, _ in entries]


async def test_a_request_without_a_profile_during_a_switch_is_served_by_the_new_process(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        hold = tmp_path / "release"
        active = asyncio.create_task(ask(registry, scheduler, hold_until=str(hold)))
        await until(lambda: backend.active == 1, "the request in flight")
        switch = asyncio.create_task(registry.switch_profile("ocr", "large"))
        await until(lambda: backend.state is S.STOPPING, "the drain")
        late = submit(registry, scheduler, None)
        hold.touch()
        await active
        await switch
        assert (await send(scheduler, late)).endswith(" tag large")


async def test_unknown_profiles_are_refused_naming_the_known_ones(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        with pytest.raises(InvalidInput) as caught:
            await registry.switch_profile("ocr", "gundam")
        assert caught.value.message == "backend ocr has no profile 'gundam' (known: small, large)"
        with pytest.raises(InvalidInput) as refused:
            registry.routable(KEY, "gundam")
        assert refused.value.message == "unknown profile 'gundam' (known: small, large)"
        assert backend.state is S.STOPPED


async def test_switching_a_stopped_backend_only_changes_its_next_start(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, scheduler, backend):
        await registry.switch_profile("ocr", "large")
        assert backend.state is S.STOPPED and registry.profile_of(backend) == "large"
        assert (await ask(registry, scheduler)).endswith(" tag large")
