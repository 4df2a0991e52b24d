"""The set of backends and the one owner of their lifecycle state.

Every state change of every backend happens here: active health checks (`refresh`), passive
health from real requests (`report_unreachable`, `report_answered`), and the operator's
add/drain/remove while the gateway runs. The scheduler is told through the `DispatchPool`
interface (start dispatchers for a new backend, retire them for a removed one, look again at
waiting work after a change), so this module never imports the queue.

A managed backend (`managed:` in its config) has a `ProcessSupervisor` that owns its process;
the registry decides when it runs: it starts `stopped`, is started by `routable` when a request
wants one of its models (or at start-up, `start: at_startup`), and is stopped with the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..config import BackendConfig, ConfigError
from ..errors import Conflict, GatewayError, InvalidInput, NotFound, UpstreamFailed
from ..model_names import QueueKey, model_key
from .backend import Backend, ModelInfo
from .listings import ollama_models, openai_models_of
from .state import NEEDS_START, BackendState, StateChange, StateListener
from .supervision import Supervisor, SupervisorFactory, SupervisorHooks, free_port
from .upstream import StreamBroken, UpstreamError

log = logging.getLogger("seadragon_gw.backends")
S = BackendState
# A managed backend in these has a process (starting, running or on its way down).
_LIVE = frozenset({S.STARTING, S.UP, S.DOWN, S.DRAINING, S.STOPPING})


class DispatchPool(Protocol):
    """What the registry needs from the scheduler."""

    def backend_added(self, backend: Backend) -> None: ...

    async def backend_retired(self, backend: Backend) -> None: ...

    def backends_changed(self) -> None: ...

    def waiting(self, queue_key: QueueKey | None = None) -> int: ...

    def reject_waiting(self, model: str | None, error: GatewayError) -> int: ...


class Registry:
    def __init__(self, configs: list[BackendConfig], clock: Callable[[], float] = time.monotonic,
                 supervise: SupervisorFactory | None = None) -> None:
        """`supervise` builds the process supervisor of each managed backend (the gateway
        passes `managed.process.ProcessSupervisor`); without it a managed backend is refused."""
        self.listeners: list[StateListener] = [self._on_state_change]
        self.supervisors: dict[Backend, Supervisor] = {}
        self._supervise = supervise
        self._pools: list[DispatchPool] = []
        self._switching: set[Backend] = set()
        self._group_starts: dict[str, tuple[Backend, asyncio.Task[None]]] = {}
        self._closing = False
        self.backends: list[Backend] = []
        self.backends = [self._build(c) for c in configs]
        self._watchers: dict[Backend, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._started = False

    def attach(self, pool: DispatchPool) -> None:
        """The scheduler registers itself here when it is built."""
        self._pools.append(pool)

    def serving(self, key: QueueKey) -> list[Backend]:
        return [b for b in self.backends if b.can_serve(key)]

    def routable(self, key: QueueKey, profile: str | None = None) -> list[Backend]:
        """The backends a request for `key` may be routed to and wait for (`may_queue`).
        When none of them is up, the stopped managed ones among them are started, so the
        request waits in its queue until one is healthy (or is rejected if the start fails).
        A request for a `profile` may only go to managed backends that have it; when none of
        them runs it, one is started or switched to it (see `want_profile`)."""
        backends = [b for b in self.serving(key) if b.may_queue]
        if profile is not None:
            return self._with_profile(key, backends, profile)
        # A loop, not any(): this runs per request, and any() that stops early closes its
        # generator by raising GeneratorExit in it.
        for backend in backends:
            if backend.healthy:
                return backends
        for backend in backends:  # none is up: start the stopped managed ones
            if backend.state in NEEDS_START:  # may_queue: so not `start: manual`
                self.ensure_started(backend)
        return backends

    def ensure_started(self, backend: Backend, now: bool = False) -> asyncio.Task[None] | None:
        """Start a managed backend's process unless it runs or is on its way (a no-op for a
        plain backend), whatever its `start` says (an operator's start: `now`, no backoff).
        In an exclusive group the other members are drained and stopped first. Returns the
        start task, for a caller that wants to wait for it (None: nothing to wait for here,
        e.g. another member of its group is being started first: it waits its turn)."""
        supervisor = self.supervisors.get(backend)
        if supervisor is None or self._closing:
            return None
        group = _group(backend)
        if group is None:
            return supervisor.ensure_started(now)
        pending = self._group_starts.get(group)
        if pending is not None:
            return pending[1] if pending[0] is backend else None
        others = [b for b in self._members(group) if b is not backend and b.state not in NEEDS_START]
        if not others:
            return supervisor.ensure_started(now)
        task = asyncio.create_task(self._take_group(backend, group, others, now), name=f"group-start:{group}")
        self._group_starts[group] = (backend, task)
        task.add_done_callback(lambda _: self._group_starts.pop(group, None))
        return task

    async def _take_group(self, backend: Backend, group: str, others: list[Backend], now: bool) -> None:
        """Drain and stop the running members of `group` (their active requests end first;
        their new ones wait), then start `backend`: never two of them alive at once."""
        reason = f"making way for {backend.name} (exclusive group {group})"
        await asyncio.gather(*(self.supervisors[o].stop(True, reason) for o in others), return_exceptions=True)
        task = self.supervisors[backend].ensure_started(now)
        if task is not None:
            await task

    def _members(self, group: str) -> list[Backend]:
        return [b for b in self.backends if _group(b) == group]

    def backend_idle(self, backend: Backend, wanted: tuple[QueueKey, str] | None) -> None:
        """The scheduler: `backend` is up with nothing active and nothing it may serve. If a
        waiting request wants another profile of its models (`wanted`), switch; else a member
        of its exclusive group with work waiting gets its turn."""
        if wanted is not None:
            self.want_profile(*wanted)
            return
        group = _group(backend)
        if group is not None:
            self._next_in_group(group, exclude=backend)

    def _next_in_group(self, group: str, exclude: Backend | None = None) -> None:
        for member in self._members(group):
            if member is not exclude and member.state in NEEDS_START and self._work_waiting(member):
                self.ensure_started(member)
                return

    # -- profiles -----------------------------------------------------------------------
    def profile_of(self, backend: Backend) -> str | None:
        """The profile its process runs (or is starting with); when none runs, the one the
        next start uses (the default, unless switched since)."""
        supervisor = self.supervisors.get(backend)
        if supervisor is None:
            return None
        return supervisor.profile if backend.state in _LIVE else supervisor.next_profile

    def _with_profile(self, key: QueueKey, backends: list[Backend], profile: str) -> list[Backend]:
        fitting = [b for b in backends if profile in _profiles(b)]
        if not fitting and backends:
            known = dict.fromkeys(p for b in backends for p in _profiles(b))
            raise InvalidInput(f"unknown profile '{profile}' (known: {', '.join(known) or 'none'})")
        self._want_profile(fitting, profile)
        return fitting

    def want_profile(self, key: QueueKey, profile: str) -> None:
        """Requests for `key` wait for `profile` (the scheduler calls this when a backend that
        could serve them idles with another profile)."""
        self._want_profile([b for b in self.serving(key) if b.may_queue and profile in _profiles(b)], profile)

    def _want_profile(self, backends: list[Backend], profile: str) -> None:
        """Make one of `backends` run `profile`: nothing if one runs or will run it; else a
        stopped one is started with it, or else an idle-most running one is switched
        (gracefully: after its active requests). A backend in the middle of a start, stop or
        switch is left alone: the request waits, and the scheduler asks again when it idles."""
        if not backends:
            return
        coming = [b for b in backends if self._will_run(b, profile)]
        if coming:
            if not any(b.healthy for b in coming):
                for backend in coming:
                    if backend.state in NEEDS_START:
                        self.ensure_started(backend)
            return
        stopped = [b for b in backends if b.state in NEEDS_START]
        if stopped:
            self.supervisors[stopped[0]].next_profile = profile
            self.ensure_started(stopped[0])
            return
        settled = [b for b in backends if b.healthy and b not in self._switching]
        if settled:
            target = min(settled, key=Backend.load_rank)
            self._spawn(self.switch_profile(target.name, profile), f"switch:{target.name}:{profile}")

    def _will_run(self, backend: Backend, profile: str) -> bool:
        supervisor = self.supervisors[backend]
        if backend.state is S.STOPPING or backend in self._switching:
            return supervisor.next_profile == profile
        return self.profile_of(backend) == profile

    # -- operators ------------------------------------------------------------------------
    def by_role(self, role: str) -> list[Backend]:
        """The backends configured with `role` (e.g. "ocr")."""
        return [b for b in self.backends if b.config.role == role]

    async def start_backend(self, name: str, profile: str | None = None) -> None:
        """Start managed backend `name` (with `profile`; a running one with another profile is
        switched gracefully) and wait until it is healthy; UpstreamFailed with the reason if it
        does not get there. A stop in progress is waited for; a crash backoff is not."""
        backend = self.get(name)
        supervisor = self._supervisor_of(backend)
        if profile is not None:
            _check_profile(backend, profile)
            if backend.state in _LIVE and backend.state is not S.STOPPING and supervisor.profile != profile:
                await self.switch_profile(name, profile)
                return
            supervisor.next_profile = profile
        if backend.state is S.STOPPING:
            await supervisor.stop()  # joins the stop in progress
        task = self.ensure_started(backend, now=True)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)  # a cancelled start is judged below
        if not backend.healthy:
            raise UpstreamFailed(backend.lifecycle.reason if backend.state is S.CRASHED
                                 else f"managed backend {name} did not start (it is {backend.state.value})")

    async def stop_backend(self, name: str, graceful: bool = True, reason: str | None = None) -> None:
        """Stop managed backend `name`: graceful takes no new work (it waits), lets the active
        requests finish, then stops; not graceful stops now (active requests end with an
        error). Requests still waiting for an on-demand backend start it again."""
        backend = self.get(name)
        supervisor = self._supervisor_of(backend)
        how = reason or ("stopped by an operator" if graceful else "stopped at once by an operator")
        await supervisor.stop(graceful, how)
        managed = backend.config.managed
        if not graceful and managed is not None and managed.start != "manual" and self._work_waiting(backend):
            self.ensure_started(backend)

    def unload_soon(self, backend: Backend) -> None:
        """Ollama's `keep_alive: 0` for a managed backend: stop its process now, gracefully
        (other active requests finish; requests still waiting start it again)."""
        if backend in self.supervisors and backend.state in _LIVE and backend.state is not S.STOPPING:
            self._spawn(self.stop_backend(backend.name, graceful=True, reason="keep_alive 0: unloaded"),
                        f"unload:{backend.name}")

    async def switch_profile(self, name: str, profile: str, graceful: bool = True) -> None:
        """Run backend `name` with `profile`: a running process is stopped (graceful: once its
        active requests end; new ones wait) and started again with it; a stopped one only
        starts with it next time. Raises InvalidInput for a profile it does not have."""
        backend = self.get(name)
        supervisor = self._supervisor_of(backend)
        _check_profile(backend, profile)
        supervisor.next_profile = profile
        if backend.state not in _LIVE or (supervisor.profile == profile and backend.state is not S.STOPPING):
            return
        self._switching.add(backend)
        try:
            await supervisor.stop(graceful, f"switching to profile {profile}")
            task = self.ensure_started(backend)
            if task is not None:
                await task
        finally:
            self._switching.discard(backend)
        if not backend.healthy:
            raise UpstreamFailed(backend.lifecycle.reason)

    def _supervisor_of(self, backend: Backend) -> Supervisor:
        supervisor = self.supervisors.get(backend)
        if supervisor is None:
            raise InvalidInput(f"backend {backend.name} is not managed (it has no process to start or stop)")
        return supervisor

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Background work whose failure is logged (and told to waiting requests by the
        supervisor's own hooks), never lost silently."""
        task = asyncio.create_task(self._logged(work, name), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except GatewayError as exc:
            log.warning("%s: %s", name, exc.message)
        except Exception:
            log.exception("%s failed", name)

    def _build(self, config: BackendConfig) -> Backend:
        """A Backend; for a managed one also its supervisor, with the url derived from
        `managed.host` and `managed.port` (a free port picked now for `auto`)."""
        managed = config.managed
        if managed is None:
            return Backend.from_config(config, self.listeners)
        if self._supervise is None:
            raise ConfigError(f"backend {config.name}: managed, but this gateway has no process supervisor")
        port = free_port(managed.host) if managed.port == "auto" else managed.port
        config = dataclasses.replace(config, url=f"http://{managed.host}:{port}")
        backend = Backend.from_config(config, self.listeners)
        backend.lifecycle.move(S.STOPPED, "not started yet")
        hooks = SupervisorHooks(self._work_waiting, self._start_failed, self._became_ready, self.ensure_started)
        self.supervisors[backend] = self._supervise(backend, port, hooks)
        return backend

    def _work_waiting(self, backend: Backend) -> bool:
        return any(pool.waiting((model, kind)) for pool in self._pools for model in backend.models
                   for kind in (None, backend.kind))

    def _start_failed(self, backend: Backend, error: GatewayError) -> None:
        """Requests waiting only for this backend get the reason now, not a queue timeout."""
        for model in backend.models:
            others = [b for b in self.backends if b is not backend and b.may_queue
                      and any(b.can_serve((model, k)) for k in (None, b.kind))]
            if not others:
                for pool in self._pools:
                    pool.reject_waiting(model, error)

    def _became_ready(self, backend: Backend) -> None:
        if not backend.discovered:
            self.refresh_soon(backend)

    def get(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise NotFound(f"no backend named '{name}'")

    def undiscovered(self, kind: str | None) -> list[Backend]:
        """Backends with `models: "*"` that have never listed their models: any model might
        be theirs, so "not found" would be a guess."""
        return [b for b in self.backends if b.config.models == "*" and not b.discovered
                and kind in (None, b.kind)]

    # -- running ------------------------------------------------------------------------
    async def start(self) -> None:
        """Check every backend once before serving, then keep checking in the background."""
        self._started = True
        await asyncio.gather(*self._start_at_startup(), *(self.refresh(b, with_models=True)
                                                          for b in self.backends if not b.managed))
        for backend in self.backends:
            self._watch(backend)

    def _start_at_startup(self) -> list[asyncio.Task[None]]:
        tasks = []
        for backend in self.backends:
            managed = backend.config.managed
            task = self.ensure_started(backend) if managed is not None and managed.start == "at_startup" else None
            if task is not None:
                tasks.append(task)
        return tasks

    async def stop(self) -> None:
        self._closing = True
        tasks = [*self._watchers.values(), *self._background, *(t for _, t in self._group_starts.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()
        await asyncio.gather(*(s.stop(graceful=False, reason="the gateway is stopping")
                               for s in self.supervisors.values()), return_exceptions=True)
        await asyncio.gather(*(b.upstream.aclose() for b in self.backends), return_exceptions=True)

    async def add(self, config: BackendConfig) -> Backend:
        """A new backend while the gateway runs: checked once, then served and watched."""
        if any(b.name == config.name for b in self.backends):
            raise Conflict(f"a backend named '{config.name}' exists already")
        backend = self._build(config)
        self.backends.append(backend)
        for pool in self._pools:
            pool.backend_added(backend)
        await self.refresh(backend, with_models=True)
        if self._started:
            self._watch(backend)
        return backend

    def drain(self, name: str) -> Backend:
        """Take no new work on `name`; what it is serving finishes."""
        backend = self.get(name)
        backend.lifecycle.move(S.DRAINING, "drained by an operator")
        return backend

    def undrain(self, name: str) -> Backend:
        backend = self.get(name)
        if backend.state is S.DRAINING:
            backend.lifecycle.move(S.DOWN, "taking work again; checking health")
            self.refresh_soon(backend)
        return backend

    async def remove(self, name: str) -> None:
        """Drain `name`, wait for its running requests to end, then forget it."""
        backend = self.get(name)
        if backend.state not in (S.DRAINING, S.STOPPED, S.CRASHED):
            backend.lifecycle.move(S.DRAINING, "being removed")
        for pool in self._pools:
            await pool.backend_retired(backend)
        supervisor = self.supervisors.pop(backend, None)
        if supervisor is not None:
            await supervisor.stop(graceful=True, reason="being removed")
        backend.lifecycle.move(S.REMOVED, "removed by an operator")
        self.backends.remove(backend)
        watcher = self._watchers.pop(backend, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await backend.upstream.aclose()

    # -- health -------------------------------------------------------------------------
    def report_unreachable(self, backend: Backend, reason: str) -> None:
        """A request could not connect: the backend is down now, not at the next check."""
        if backend.state in (S.UP, S.UNKNOWN):
            backend.lifecycle.move(S.DOWN, reason)

    def report_answered(self, backend: Backend) -> None:
        """A request got an answer from a backend marked down: it is back."""
        if backend.state in (S.DOWN, S.UNKNOWN):
            backend.lifecycle.move(S.UP, "answered a request")
            if not backend.discovered:
                self.refresh_soon(backend)

    def refresh_soon(self, backend: Backend) -> None:
        """Re-read a backend's models in the background (after pull, create, copy, delete)."""
        task = asyncio.create_task(self.refresh(backend, with_models=True), name=f"refresh:{backend.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def refresh(self, backend: Backend, with_models: bool) -> None:
        """Probe a backend; update its state, version and (optionally) its model list.
        A managed backend is probed only while its process runs (its supervisor owns the rest)."""
        if backend.managed and backend.state not in (S.UP, S.DOWN):
            return
        old_models = set(backend.models)
        try:
            found = await self._probe(backend, with_models)
        except UpstreamError as exc:
            self._check_failed(backend, exc.message)
            return
        backend.failed_checks = 0
        if found is not None:
            self._apply_models(backend, found)
        if backend.state in (S.UNKNOWN, S.DOWN):
            backend.lifecycle.move(S.UP, f"answered the health check ({len(backend.models)} models)")
        elif set(backend.models) != old_models:
            self._changed()

    def _check_failed(self, backend: Backend, reason: str) -> None:
        """An up backend is marked down after `fail_threshold` failed checks in a row (one
        slow answer is not an outage); one that never answered, or is down, at once."""
        backend.failed_checks += 1
        threshold = backend.config.fail_threshold
        if backend.state is S.UP and backend.failed_checks < threshold:
            log.info("backend %s: health check failed (%d of %d before it is marked down): %s",
                     backend.name, backend.failed_checks, threshold, reason)
            return
        if backend.state in (S.UP, S.UNKNOWN, S.DOWN):
            backend.lifecycle.move(S.DOWN, reason)

    async def _probe(self, backend: Backend, with_models: bool) -> list[ModelInfo] | None:
        upstream = backend.upstream
        if backend.kind == "ollama":
            version = await upstream.get_json("/api/version")
            backend.version = str(version.get("version")) if isinstance(version, dict) else None
            if not with_models:
                return None
            models = ollama_models(await upstream.get_json("/api/tags"))
            what = "/api/tags"
        else:
            models = openai_models_of(await upstream.get_json("/v1/models"))
            what = "/v1/models"
        if models is None:
            raise StreamBroken(f"{upstream.label}: {what} has no model list")
        return models if with_models else None

    def _apply_models(self, backend: Backend, found: list[ModelInfo]) -> None:
        backend.discovered = True
        if backend.config.models == "*":
            backend.set_models(found)
            return
        by_key = {model_key(info.name): info for info in found}
        backend.set_models([by_key.get(model_key(n), ModelInfo(n, {})) for n in backend.config.models])

    def _watch(self, backend: Backend) -> None:
        self._watchers[backend] = asyncio.create_task(self._watch_loop(backend), name=f"watch:{backend.name}")

    async def _watch_loop(self, backend: Backend) -> None:
        last_models = self._clock()
        while True:
            await asyncio.sleep(backend.config.health_interval_s)
            due = self._clock() - last_models >= backend.config.refresh_s
            if due:
                last_models = self._clock()
            try:
                await self.refresh(backend, with_models=due or not backend.healthy)
            except Exception:  # a bug in one check must not end the watching
                log.exception("health check of backend %s failed", backend.name)

    def _on_state_change(self, change: StateChange) -> None:
        self._changed()
        if change.new is S.STOPPED and not self._closing:
            self._member_stopped(change.backend)

    def _member_stopped(self, name: str) -> None:
        """A member of an exclusive group stopped (idle, operator): one waiting for it starts."""
        backend = next((b for b in self.backends if b.name == name), None)
        group = _group(backend) if backend is not None else None
        if group is not None and group not in self._group_starts:
            self._next_in_group(group, exclude=backend)

    def _changed(self) -> None:
        for pool in self._pools:
            pool.backends_changed()


def _profiles(backend: Backend) -> list[str]:
    managed = backend.config.managed
    return list(managed.profiles) if managed is not None else []


def _group(backend: Backend) -> str | None:
    managed = backend.config.managed
    return managed.group if managed is not None else None


def _check_profile(backend: Backend, profile: str) -> None:
    known = _profiles(backend)
    if profile not in known:
        raise InvalidInput(f"backend {backend.name} has no profile '{profile}' "
                           f"(known: {', '.join(known) or 'none'})")
