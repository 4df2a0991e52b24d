"""Seed 004's auto_switch: run the profile (or the exclusive group's member) the coming hour will want,
before the first request for it arrives, from the usage log's history.

The rule, per *unit* (the profiles of one managed backend, or the members of one exclusive group:
alternatives of which one runs at a time):

- look at the coming hour (`now` to `now + 1 h`) on each of the last `pattern_window_days` days, and
  count the requests of that time per alternative (the usage log's `profile` column says which
  profile a request asked for; the model or backend says which group member it wanted);
- switch when the most wanted alternative has at least `min_requests_for_switch` requests and more
  than the running one (a tie keeps what runs);
- never while the running alternative has work: a request in flight on it or waiting for it;
  never in the middle of a start, stop or switch; a group whose members are all stopped is left
  stopped (starting a process for a guess would defeat `idle_ttl_s`), while a stopped backend with
  profiles only has the profile of its next start set.

`decide` is the pure rule (tested with an injected clock and history); `AutoSwitcher` gathers the
units from the registry, reads the history and acts, every `check_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..backends.backend import Backend
from ..backends.registry import Registry
from ..backends.state import BackendState
from ..config import AutoSwitchConfig
from ..errors import GatewayError
from ..model_names import QueueKey, model_key
from ..store.errors import DatabaseUnavailable
from ..store.usage import Demand, UsageRepo

log = logging.getLogger("seadragon_gw.auto_switch")

DAY_S = 86400.0
HOUR_S = 3600.0
S = BackendState
_SETTLED = frozenset({S.UP, S.STOPPED, S.CRASHED})  # not starting, stopping, draining or down


@dataclass(frozen=True, slots=True)
class Choice:
    """Run `backend` (with `profile`; None for a group member: whatever profile it starts with)."""

    backend: str
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """Alternatives of which one runs at a time. `running`: what runs now (for a stopped backend with
    profiles, the profile of its next start; None for a group with no member running). `busy`: the
    running one has work, or is in the middle of a change. `models`: each backend's model keys."""

    name: str
    choices: tuple[Choice, ...]
    running: Choice | None
    busy: bool
    models: Mapping[str, frozenset[str]]

    @property
    def is_group(self) -> bool:
        return all(c.profile is None for c in self.choices)


def pattern_windows(now: float, days: int, span_s: float = HOUR_S) -> list[tuple[float, float]]:
    """The coming `span_s` at the same time of day on each of the last `days` days."""
    return [(now - d * DAY_S, now - d * DAY_S + span_s) for d in range(1, days + 1)]


def tally(unit: Unit, demand: Iterable[Demand]) -> dict[Choice, int]:
    """Requests per alternative of `unit` in the history (rows for other backends are ignored)."""
    counts = dict.fromkeys(unit.choices, 0)
    for row in demand:
        choice = _choice_of(unit, row)
        if choice is not None:
            counts[choice] += row.requests
    return counts


def _choice_of(unit: Unit, row: Demand) -> Choice | None:
    """Which alternative a history row wanted: a group member by backend, else by model; a profile
    by the profile it asked for, on this backend or one of its models."""
    if unit.is_group:
        served = Choice(row.backend) if row.backend is not None else None
        if served in unit.choices:
            return served
        return next((c for c in unit.choices if row.model in unit.models[c.backend]), None)
    backend = unit.choices[0].backend
    if row.backend != backend and row.model not in unit.models[backend]:
        return None
    wanted = Choice(backend, row.profile)
    return wanted if wanted in unit.choices else None


def decide(unit: Unit, counts: Mapping[Choice, int], min_requests: int) -> Choice | None:
    """The alternative to switch `unit` to now, or None (see the module's rule)."""
    if unit.busy or not counts:
        return None
    if unit.is_group and unit.running is None:
        return None
    best = max(unit.choices, key=lambda c: (counts.get(c, 0), c == unit.running))
    wanted = counts.get(best, 0)
    if best == unit.running or wanted < min_requests:
        return None
    if unit.running is not None and wanted <= counts.get(unit.running, 0):
        return None
    return best


# -- the units of a registry ------------------------------------------------------------
def units_of(registry: Registry, has_work: Callable[[Backend], bool]) -> list[Unit]:
    """Groups first (a member's own profiles are a unit of their own too)."""
    models = {b.name: frozenset(b.models) | frozenset(model_key(m) for m in _config_models(b))
              for b in registry.backends}
    groups: dict[str, list[Backend]] = {}
    units: list[Unit] = []
    for backend in registry.backends:
        managed = backend.config.managed
        if managed is None:
            continue
        if managed.group is not None:
            groups.setdefault(managed.group, []).append(backend)
        if len(managed.profiles) > 1:
            profile = registry.profile_of(backend)
            running = Choice(backend.name, profile) if profile is not None else None
            choices = tuple(Choice(backend.name, p) for p in managed.profiles)
            busy = backend.state not in _SETTLED or has_work(backend)
            units.append(Unit(backend.name, choices, running, busy, models))
    for name, members in groups.items():
        if len(members) < 2:
            continue
        live = [b for b in members if b.state not in (S.STOPPED, S.CRASHED)]
        running = Choice(live[0].name) if len(live) == 1 else None
        busy = len(live) > 1 or any(b.state not in _SETTLED or has_work(b) for b in live)
        units.insert(0, Unit(f"group {name}", tuple(Choice(b.name) for b in members), running, busy, models))
    return units


def work_check(waiting: Callable[[QueueKey], int]) -> Callable[[Backend], bool]:
    """`has_work` from the scheduler's `waiting`: a request in flight on the backend, or one
    waiting for any of its models."""

    def has_work(backend: Backend) -> bool:
        return backend.active > 0 or any(waiting((model, kind)) for model in backend.models
                                         for kind in (None, backend.kind))

    return has_work


def _config_models(backend: Backend) -> list[str]:
    listed = backend.config.models
    return [] if listed == "*" else listed


class AutoSwitcher:
    """Every `check_s`: read the history of the coming hour and switch what the rule says."""

    def __init__(self, config: AutoSwitchConfig, registry: Registry, usage: UsageRepo,
                 has_work: Callable[[Backend], bool], clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.registry = registry
        self.usage = usage
        self.has_work = has_work
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.config.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="auto-switch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check(self) -> list[Choice]:
        """One round; the switches it made (started: a switch waits for nothing here)."""
        units = units_of(self.registry, self.has_work)
        if not units:
            return []
        history = await self.usage.demand(pattern_windows(self.clock(), self.config.pattern_window_days))
        made: list[Choice] = []
        switched: set[str] = set()
        for unit in units:
            if switched & {c.backend for c in unit.choices}:
                continue  # its group changed this round: look again next time
            choice = decide(unit, tally(unit, history), self.config.min_requests_for_switch)
            if choice is not None:
                await self._apply(unit, choice)
                made.append(choice)
                switched.add(choice.backend)
        return made

    async def _apply(self, unit: Unit, choice: Choice) -> None:
        log.info("auto_switch: %s -> %s%s (the coming hour's history)", unit.name, choice.backend,
                 f" profile {choice.profile}" if choice.profile else "")
        try:
            if choice.profile is None:
                await self.registry.start_backend(choice.backend)
            else:
                await self.registry.switch_profile(choice.backend, choice.profile, graceful=True)
        except GatewayError as exc:
            log.warning("auto_switch: %s -> %s failed: %s", unit.name, choice.backend, exc.message)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_s)
            try:
                await self.check()
            except DatabaseUnavailable as exc:
                log.warning("auto_switch: the usage log cannot be read: %s", exc.message)
            except Exception:  # a bug in one round must not end the checking
                log.exception("auto_switch round failed")
