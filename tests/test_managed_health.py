"""`fail_threshold` (issue 9): health checks mark an up backend down only after that many
failures in a row, and up again when it answers. The checks are driven one by one
(`Registry.refresh`, what the watch loop calls every `health_interval_s`), against a real
server process whose model list fails while a file exists."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seadragon_gw.backends.registry import Registry
from seadragon_gw.backends.state import BackendState
from seadragon_gw.backends.supervision import free_port
from seadragon_gw.config import BackendConfig, ConfigError, parse_config
from tests.test_managed import FAKE

S = BackendState


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port, failing = free_port("127.0.0.1"), tmp_path / "failing"
    process = subprocess.Popen([sys.executable, FAKE, "--port", str(port), "--fail-file", str(failing)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}", failing
    finally:
        process.kill()
        process.wait()


async def answering(registry: Registry) -> None:
    """Check until the just-started server answers (bounded)."""
    backend = registry.backends[0]
    async with asyncio.timeout(10):
        while backend.state is not S.UP:
            await registry.refresh(backend, with_models=False)
            await asyncio.sleep(0.01)


async def test_an_up_backend_is_marked_down_after_fail_threshold_failures(server: tuple[str, Path]) -> None:
    url, failing = server
    registry = Registry([BackendConfig(name="b", kind="openai", url=url, fail_threshold=3)])
    backend = registry.backends[0]
    try:
        async def check() -> S:
            await registry.refresh(backend, with_models=False)
            return backend.state

        await answering(registry)
        failing.touch()
        assert [await check(), await check()] == [S.UP, S.UP]  # two failures: still up
        assert await check() is S.DOWN
        assert backend.lifecycle.reason == f"backend 'b' at {url}: /v1/models answered HTTP 503"
        failing.unlink()
        assert await check() is S.UP  # it answers: up again, the count starts over
        failing.touch()
        assert [await check(), await check(), await check()] == [S.UP, S.UP, S.DOWN]
    finally:
        await registry.stop()


async def test_the_default_threshold_marks_down_at_the_first_failure(server: tuple[str, Path]) -> None:
    url, failing = server
    registry = Registry([BackendConfig(name="b", kind="openai", url=url)])
    backend = registry.backends[0]
    try:
        await answering(registry)
        failing.touch()
        await registry.refresh(backend, with_models=False)
        assert backend.state is S.DOWN
    finally:
        await registry.stop()


def test_fail_threshold_is_checked() -> None:
    raw: dict[str, Any] = {"backends": [{"name": "b", "url": "http://x:1", "fail_threshold": 0}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == "backends[0].fail_threshold: must be at least 1"
    raw["backends"][0]["fail_threshold"] = 2
    assert parse_config(raw).backends[0].fail_threshold == 2
