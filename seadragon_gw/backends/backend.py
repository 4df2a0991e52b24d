"""A configured backend: its client, the models it serves, its lifecycle state and load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import BackendConfig
from ..model_names import QueueKey, model_key
from .state import MAY_QUEUE_MANAGED, MAY_TRY, NEEDS_START, BackendLifecycle, BackendState, StateListener
from .upstream import Upstream

_GONE = frozenset({BackendState.STOPPING, BackendState.STOPPED, BackendState.CRASHED})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as a backend lists it; `raw` is its /api/tags or /v1/models entry."""

    name: str
    raw: dict[str, Any]


@dataclass(eq=False)
class Backend:
    """`lifecycle` is changed only by the registry; `active` (slots in use) only by the
    scheduler's dispatchers. Everything else reads them."""

    config: BackendConfig
    upstream: Upstream
    lifecycle: BackendLifecycle
    models: dict[str, ModelInfo] = field(default_factory=dict)
    active: int = 0
    version: str | None = None
    discovered: bool = False
    failed_checks: int = 0  # health checks failed in a row (the registry's count, for fail_threshold)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def state(self) -> BackendState:
        return self.lifecycle.state

    @property
    def healthy(self) -> bool:
        return self.lifecycle.state is BackendState.UP

    @property
    def last_error(self) -> str | None:
        return None if self.healthy else self.lifecycle.reason

    @property
    def may_try(self) -> bool:
        """Up, or down/unknown (a last resort: it may have come back)."""
        state = self.lifecycle.state
        return state is BackendState.UP or state in MAY_TRY  # UP first: hashing an Enum is Python code

    @property
    def managed(self) -> bool:
        return self.config.managed is not None

    @property
    def may_queue(self) -> bool:
        """A request may be routed here and wait: `may_try`, or a managed backend whose
        process is starting or stopping, or stopped/crashed and started on demand (the
        registry starts it; the scheduler dispatches only once it is up)."""
        state, managed = self.lifecycle.state, self.config.managed
        if state is BackendState.UP or state in MAY_TRY:
            return True
        if managed is None:
            return False
        return state in MAY_QUEUE_MANAGED or (state in NEEDS_START and managed.start != "manual")

    def gone_why(self) -> str | None:
        """Why a managed backend's connections broke, when its process is stopping, stopped
        or crashed (the lifecycle's reason: "stopped at once by an operator"); else None."""
        return self.lifecycle.reason if self.lifecycle.state in _GONE else None

    def can_serve(self, key: QueueKey) -> bool:
        model, kind = key
        return model in self.models and (kind is None or kind == self.config.kind)

    def load_rank(self) -> tuple[bool, float]:
        """Sort key for "least busy": healthy first, then the smallest share of slots in use."""
        return (not self.healthy, self.active / self.config.max_concurrent)

    def set_models(self, infos: list[ModelInfo]) -> None:
        self.models = {model_key(info.name): info for info in infos}

    @classmethod
    def from_config(cls, config: BackendConfig, listeners: list[StateListener] | None = None) -> Backend:
        upstream = Upstream(config.name, config.url, config.connect_timeout_s, config.read_timeout_s, config.api_key)
        backend = cls(config=config, upstream=upstream, lifecycle=BackendLifecycle(config.name, listeners))
        if config.managed is not None:
            upstream.explain = backend.gone_why
        if config.models != "*":
            backend.set_models([ModelInfo(name, {}) for name in config.models])
        return backend
