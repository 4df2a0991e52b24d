"""The set of backends and the one owner of their lifecycle state.

Every state change of every backend happens here: active health checks (`refresh`), passive
health from real requests (`report_unreachable`, `report_answered`), and the operator's
add/drain/remove while the gateway runs. The scheduler is told through the `DispatchPool`
interface (start dispatchers for a new backend, retire them for a removed one, look again at
waiting work after a change), so this module never imports the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..config import BackendConfig
from ..errors import Conflict, NotFound
from ..model_names import QueueKey, model_key
from .backend import Backend, ModelInfo
from .listings import ollama_models, openai_models_of
from .state import BackendState, StateChange, StateListener
from .upstream import StreamBroken, UpstreamError

log = logging.getLogger("seadragon_gw.backends")
S = BackendState


class DispatchPool(Protocol):
    """What the registry needs from the scheduler."""

    def backend_added(self, backend: Backend) -> None: ...

    async def backend_retired(self, backend: Backend) -> None: ...

    def backends_changed(self) -> None: ...


class Registry:
    def __init__(self, configs: list[BackendConfig], clock: Callable[[], float] = time.monotonic) -> None:
        self.listeners: list[StateListener] = [self._on_state_change]
        self.backends = [Backend.from_config(c, self.listeners) for c in configs]
        self._pools: list[DispatchPool] = []
        self._watchers: dict[Backend, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._started = False

    def attach(self, pool: DispatchPool) -> None:
        """The scheduler registers itself here when it is built."""
        self._pools.append(pool)

    def serving(self, key: QueueKey) -> list[Backend]:
        return [b for b in self.backends if b.can_serve(key)]

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
        await asyncio.gather(*(self.refresh(b, with_models=True) for b in self.backends))
        for backend in self.backends:
            self._watch(backend)

    async def stop(self) -> None:
        tasks = [*self._watchers.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()
        await asyncio.gather(*(b.upstream.aclose() for b in self.backends), return_exceptions=True)

    async def add(self, config: BackendConfig) -> Backend:
        """A new backend while the gateway runs: checked once, then served and watched."""
        if any(b.name == config.name for b in self.backends):
            raise Conflict(f"a backend named '{config.name}' exists already")
        backend = Backend.from_config(config, self.listeners)
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
        if backend.state is not S.DRAINING:
            backend.lifecycle.move(S.DRAINING, "being removed")
        for pool in self._pools:
            await pool.backend_retired(backend)
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
        """Probe a backend; update its state, version and (optionally) its model list."""
        old_models = set(backend.models)
        try:
            found = await self._probe(backend, with_models)
        except UpstreamError as exc:
            if backend.state in (S.UP, S.UNKNOWN, S.DOWN):
                backend.lifecycle.move(S.DOWN, exc.message)
            return
        if found is not None:
            self._apply_models(backend, found)
        if backend.state in (S.UNKNOWN, S.DOWN):
            backend.lifecycle.move(S.UP, f"answered the health check ({len(backend.models)} models)")
        elif set(backend.models) != old_models:
            self._changed()

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

    def _changed(self) -> None:
        for pool in self._pools:
            pool.backends_changed()
