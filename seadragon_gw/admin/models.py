"""Managed models and backends, for operators: list, start, stop, switch profile, read logs.

The one implementation behind `/api/admin/models*` and `/api/admin/backends` (and seed 004's
`/admin/models*` aliases), for the CLI and the SDK too: routes only parse the query and shape
nothing themselves. The registry owns every state change; this module only asks it and
describes what it sees. Failures are `seadragon_gw.errors` kinds (unknown backend: NotFound,
not managed or unknown profile: InvalidInput, a start that fails: UpstreamFailed).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..backends.backend import Backend
from ..backends.registry import Registry
from ..backends.state import BackendState
from ..errors import InvalidInput
from ..queue.scheduler import Scheduler
from ..records.record import RequestRecord

S = BackendState
MAX_LOG_LINES = 5000
# Seed 004's process states; `up`, `down` and `draining` all have a running process.
_STATUS = {S.STOPPED: "stopped", S.STARTING: "starting", S.STOPPING: "stopping", S.CRASHED: "crashed",
           S.UP: "running", S.DOWN: "running", S.DRAINING: "running", S.UNKNOWN: "stopped",
           S.REMOVED: "stopped"}


@dataclass
class BackendTotals:
    """Since the gateway started, per backend: what it was sent and how it went."""

    requests: int = 0
    failed: int = 0  # ended by an upstream error or a 5xx answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass
class TotalsByBackend:
    """A record observer (cheap: a few additions per finished request)."""

    by_name: dict[str, BackendTotals] = field(default_factory=lambda: collections.defaultdict(BackendTotals))

    def request_finished(self, record: RequestRecord) -> None:
        if record.backend is None:
            return
        totals = self.by_name[record.backend]
        totals.requests += 1
        totals.prompt_tokens += record.prompt_tokens or 0
        totals.completion_tokens += record.completion_tokens or 0
        if record.outcome == "upstream_error" or (record.status or 0) >= 500:
            totals.failed += 1
            totals.last_error = record.error or f"status {record.status}"
            totals.last_error_at = record.finished_at


class ModelsAdmin:
    def __init__(self, registry: Registry, scheduler: Scheduler,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.totals = TotalsByBackend()
        self._clock = clock

    # -- reading ------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every managed backend with seed 004's fields, plus load and restarts."""
        return [self.model(b) for b in self.registry.backends if b.managed]

    def model(self, backend: Backend) -> dict[str, Any]:
        supervisor = self.registry.supervisors[backend]
        started = supervisor.started_at
        profile = self.registry.profile_of(backend)
        port = backend.config.url.rsplit(":", 1)[1]
        return {"name": backend.name, "status": _STATUS[backend.state], "state": backend.state.value,
                "port": int(port), "pid": supervisor.pid, "models": sorted(backend.models),
                "started_at": _iso(started),
                "uptime_seconds": round(self._clock() - started, 3) if started is not None else None,
                "profile": profile, "resolution": profile, "profiles": _profiles(backend),
                "is_healthy": backend.healthy, "active_requests": backend.active,
                "waiting": self._waiting(backend), "restarts": supervisor.restarts,
                "last_error": _last_error(backend)}

    def backends(self) -> list[dict[str, Any]]:
        """Every backend, managed or not: health, in flight, totals since start, last error."""
        result = []
        for backend in self.registry.backends:
            totals = self.totals.by_name.get(backend.name, BackendTotals())
            result.append({
                "name": backend.name, "kind": backend.kind, "managed": backend.managed,
                "role": backend.config.role, "state": backend.state.value, "healthy": backend.healthy,
                "reason": backend.lifecycle.reason, "since": _iso(backend.lifecycle.since),
                "in_flight": backend.active, "max_concurrent": backend.config.max_concurrent,
                "waiting": self._waiting(backend), "models": sorted(backend.models),
                "totals": {"requests": totals.requests, "failed": totals.failed,
                           "prompt_tokens": totals.prompt_tokens, "completion_tokens": totals.completion_tokens},
                "last_error": _last_error(backend) or totals.last_error,
                "last_error_at": _iso(totals.last_error_at) if _last_error(backend) is None else None})
        return result

    async def logs(self, name: str, lines: int = 100) -> dict[str, Any]:
        """The last `lines` lines of the process's output (its rotated log files)."""
        if not 1 <= lines <= MAX_LOG_LINES:
            raise InvalidInput(f"lines must be 1-{MAX_LOG_LINES}")
        backend = self._managed(name)
        path = self.registry.supervisors[backend].log_path
        return {"model": backend.name, "path": str(path), "lines": await asyncio.to_thread(_tail, path, lines)}

    # -- changing -----------------------------------------------------------------------
    async def start(self, name: str, profile: str | None = None) -> dict[str, Any]:
        backend = self._managed(name)
        await self.registry.start_backend(name, profile)
        return {"status": "started", "model": name, "profile": self.registry.profile_of(backend)}

    async def stop(self, name: str, graceful: bool = True) -> dict[str, Any]:
        self._managed(name)
        await self.registry.stop_backend(name, graceful)
        return {"status": "stopped", "model": name, "graceful": graceful}

    async def switch(self, name: str, profile: str, graceful: bool = True) -> dict[str, Any]:
        backend = self._managed(name)
        await self.registry.switch_profile(name, profile, graceful)
        running = backend.state is not S.STOPPED
        message = (f"{name} runs profile {profile}" if running
                   else f"{name} is stopped; it starts with profile {profile}")
        return {"status": "switched", "model": name, "profile": profile, "resolution": profile,
                "message": message}

    def _managed(self, name: str) -> Backend:
        backend = self.registry.get(name)
        if not backend.managed:
            raise InvalidInput(f"backend {name} is not managed (it has no process to start or stop)")
        return backend

    def _waiting(self, backend: Backend) -> int:
        return sum(self.scheduler.waiting((model, kind)) for model in backend.models
                   for kind in (None, backend.kind))


def _profiles(backend: Backend) -> list[str]:
    managed = backend.config.managed
    return list(managed.profiles) if managed is not None else []


def _last_error(backend: Backend) -> str | None:
    """The reason of a state that is trouble (a stopped process is no error)."""
    return backend.lifecycle.reason if backend.state in (S.CRASHED, S.DOWN) else None


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _tail(path: Path, lines: int) -> list[str]:
    """The last lines across `<name>.log.1` and `<name>.log` (rotation splits them)."""
    found: collections.deque[str] = collections.deque(maxlen=lines)
    for part in (path.with_name(path.name + ".1"), path):
        try:
            with open(part, "rb") as file:
                found.extend(line.decode("utf-8", "replace").rstrip("\n") for line in file)
        except FileNotFoundError:
            continue
    return list(found)
