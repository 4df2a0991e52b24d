"""auto_switch (seed 004): the pure rule with hand-made history, the usage log's read of past days'
coming hour, and the periodic checker acting on a real registry (a stopped backend only gets the
profile of its next start; a running idle one is switched for real; a busy one is left alone)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import pytest

from seadragon_gw.backends.registry import Registry
from seadragon_gw.backends.state import BackendState
from seadragon_gw.config import AutoSwitchConfig, BackendConfig, ConfigError, ManagedConfig, parse_config
from seadragon_gw.managed.auto_switch import (
    DAY_S,
    HOUR_S,
    AutoSwitcher,
    Choice,
    Unit,
    decide,
    pattern_windows,
    tally,
    units_of,
)
from seadragon_gw.managed.process import ProcessSupervisor
from seadragon_gw.store.bundle import Store
from seadragon_gw.store.usage import Demand, UsageRow
from tests.conftest import GatewayFactory
from tests.support.checks import poll
from tests.test_managed import FAKE
from tests.test_managed_profiles import running, with_profiles

NOW = 1_800_000_000.0  # the injected clock
OCR = ("tiny", "base", "large")
MODELS = {"ocr": frozenset({"rapidocr:latest"}), "llm": frozenset({"llama3:latest"}),
          "vlm": frozenset({"qwen-vl:latest"})}


def profiles_unit(running: str | None = "base", busy: bool = False) -> Unit:
    choices = tuple(Choice("ocr", p) for p in OCR)
    return Unit("ocr", choices, Choice("ocr", running) if running else None, busy, MODELS)


def group_unit(running: str | None = "llm", busy: bool = False) -> Unit:
    return Unit("group gpu", (Choice("llm"), Choice("vlm")), Choice(running) if running else None, busy, MODELS)


def ocr_rows(**counts: int) -> list[Demand]:
    return [Demand("rapidocr:latest", "ocr", profile, n) for profile, n in counts.items()]


def test_windows_are_the_coming_hour_on_past_days() -> None:
    assert pattern_windows(NOW, 3) == [(NOW - DAY_S, NOW - DAY_S + HOUR_S), (NOW - 2 * DAY_S, NOW - 2 * DAY_S + HOUR_S),
                                       (NOW - 3 * DAY_S, NOW - 3 * DAY_S + HOUR_S)]


def test_switches_to_the_profile_the_hour_wants() -> None:
    unit = profiles_unit("base")
    counts = tally(unit, ocr_rows(tiny=12, base=3))
    assert counts == {Choice("ocr", "tiny"): 12, Choice("ocr", "base"): 3, Choice("ocr", "large"): 0}
    assert decide(unit, counts, min_requests=10) == Choice("ocr", "tiny")


@pytest.mark.parametrize(("unit", "rows", "why"), [
    (profiles_unit("base"), ocr_rows(tiny=9), "fewer than min_requests_for_switch"),
    (profiles_unit("base"), ocr_rows(tiny=12, base=12), "a tie keeps what runs"),
    (profiles_unit("base"), ocr_rows(tiny=5, base=20), "the running one is wanted most"),
    (profiles_unit("base", busy=True), ocr_rows(tiny=50), "the running one has work"),
    (profiles_unit("base"), [Demand("rapidocr:latest", "ocr", None, 50), Demand("rapidocr:latest", "ocr", "huge", 50)],
     "no profile asked, or one the backend does not have"),
    (profiles_unit("base"), [Demand("llama3:latest", "llm", "tiny", 50)], "another backend's requests"),
])
def test_no_switch(unit: Unit, rows: list[Demand], why: str) -> None:
    assert decide(unit, tally(unit, rows), min_requests=10) is None, why


def test_a_group_switches_to_the_member_whose_models_are_wanted() -> None:
    rows = [Demand("qwen-vl:latest", None, None, 15), Demand("llama3:latest", "llm", None, 4)]
    unit = group_unit("llm")
    assert tally(unit, rows) == {Choice("llm"): 4, Choice("vlm"): 15}  # by model when no backend served it
    assert decide(unit, tally(unit, rows), 10) == Choice("vlm")
    assert decide(group_unit("llm", busy=True), tally(unit, rows), 10) is None
    assert decide(group_unit(None), tally(unit, rows), 10) is None, "nothing runs: no process for a guess"


async def test_usage_log_demand_reads_only_the_windows(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gw.db"), lambda: NOW)
    try:
        def row(ts: float, profile: str | None, outcome: str = "ok") -> UsageRow:
            return UsageRow(ts, f"r{ts}", "POST", "/api/ocr", "token:alice", "alice", "rapidocr:latest", "ocr", 200,
                            outcome, False, False, None, None, None, None, None, 0, profile)

        yesterday = NOW - DAY_S + 600  # inside yesterday's coming hour
        await store.usage.insert_many([
            row(yesterday, "tiny"), row(yesterday + 1, "tiny"), row(NOW - 2 * DAY_S + 10, "tiny"),
            row(yesterday, "base"), row(yesterday, "tiny", outcome="rejected"),
            row(NOW - DAY_S - 10, "large"), row(NOW - DAY_S + HOUR_S, "large"), row(NOW - 9 * DAY_S, "large"),
        ])
        assert await store.usage.demand(pattern_windows(NOW, 7)) == [
            Demand("rapidocr:latest", "ocr", "base", 1), Demand("rapidocr:latest", "ocr", "tiny", 3)]
        assert await store.usage.demand([]) == []
    finally:
        await store.close()


def history(n: int, profile: str) -> list[Demand]:
    return [Demand("fake-model:latest", "ocr", profile, n)]


class FakeUsage:
    """The usage log's read, with the windows it was asked for kept."""

    def __init__(self, rows: list[Demand]) -> None:
        self.rows = rows
        self.asked: list[list[tuple[float, float]]] = []

    async def demand(self, windows: list[tuple[float, float]]) -> list[Demand]:
        self.asked.append(windows)
        return self.rows


def switcher(registry: Registry, rows: list[Demand], busy: bool = False) -> tuple[AutoSwitcher, FakeUsage]:
    usage = FakeUsage(rows)
    config = AutoSwitchConfig(enabled=True, pattern_window_days=7, min_requests_for_switch=10)
    return AutoSwitcher(config, registry, usage, lambda b: busy, clock=lambda: NOW), usage  # type: ignore[arg-type]


async def test_a_stopped_backend_only_gets_its_next_profile(tmp_path: Path) -> None:
    registry = Registry([with_profiles(tmp_path)], supervise=ProcessSupervisor)
    auto, usage = switcher(registry, history(12, "large"))
    assert await auto.check() == [Choice("ocr", "large")]
    backend = registry.backends[0]
    assert registry.profile_of(backend) == "large" and backend.state is BackendState.STOPPED
    assert usage.asked == [pattern_windows(NOW, 7)]
    await registry.stop()


async def test_a_running_idle_backend_is_switched_and_a_busy_one_is_not(tmp_path: Path) -> None:
    async with running(with_profiles(tmp_path)) as (registry, _, backend):
        await registry.start_backend("ocr")
        assert registry.profile_of(backend) == "small"
        busy, _ = switcher(registry, history(12, "large"), busy=True)
        assert await busy.check() == []
        assert registry.profile_of(backend) == "small"
        idle, _ = switcher(registry, history(12, "large"))
        assert await idle.check() == [Choice("ocr", "large")]
        assert registry.profile_of(backend) == "large" and backend.healthy  # restarted with it


def test_units_of_a_registry(tmp_path: Path) -> None:
    """A group of two (one of them with profiles) is a unit, and so are the profiles."""
    def member(name: str) -> BackendConfig:
        command = [sys.executable, FAKE, "--port", "{port}"]
        return BackendConfig(name=name, kind="openai", models=[f"{name}-model"],
                             managed=ManagedConfig(command=command, group="gpu", log_dir=str(tmp_path)))

    profiled = with_profiles(tmp_path)
    assert profiled.managed is not None
    profiled = dataclasses.replace(profiled, managed=dataclasses.replace(profiled.managed, group="gpu"))
    registry = Registry([profiled, member("other")], supervise=ProcessSupervisor)
    units = units_of(registry, lambda b: False)
    assert [(u.name, u.choices, u.running, u.busy) for u in units] == [
        ("group gpu", (Choice("ocr"), Choice("other")), None, False),
        ("ocr", (Choice("ocr", "small"), Choice("ocr", "large")), Choice("ocr", "small"), False)]
    assert units[0].models["other"] == frozenset({"other-model:latest"})


def test_config_checks() -> None:
    assert parse_config({"auto_switch": {"enabled": True}}).auto_switch == AutoSwitchConfig(enabled=True)
    with pytest.raises(ConfigError, match=r"^auto_switch.min_requests_for_switch: must be positive$"):
        parse_config({"auto_switch": {"min_requests_for_switch": 0}})


def test_the_gateway_runs_it_when_enabled(gateways: GatewayFactory, tmp_path: Path) -> None:
    """Wired in the gateway: yesterday's coming hour wanted `large` 12 times; the stopped backend's
    next start is set to it within a few rounds (check_s is small here)."""
    backend = {"name": "ocr", "kind": "openai", "models": ["fake-model"], "managed": {
        "command": [sys.executable, FAKE, "--port", "{port}"], "log_dir": str(tmp_path / "logs"),
        "profiles": {"small": {"args": ["--tag", "small"]}, "large": {"args": ["--tag", "large"]}},
        "default_profile": "small"}}
    gw = gateways.start([backend], auto_switch={"enabled": True, "check_s": 0.05, "min_requests_for_switch": 10})
    yesterday = time.time() - DAY_S + 60
    rows = [UsageRow(yesterday, f"r{i}", "POST", "/api/ocr", "token:alice", "alice", "fake-model:latest", "ocr", 200,
                     "ok", False, False, None, None, None, None, None, 0, "large") for i in range(12)]
    gw.await_on_loop(lambda g: g.store.usage.insert_many(rows))
    poll(lambda: gw.on_loop(lambda g: g.registry.profile_of(g.registry.get("ocr"))) == "large",
         what="auto_switch to set the next profile")
    assert gw.on_loop(lambda g: g.registry.get("ocr").state) is BackendState.STOPPED
