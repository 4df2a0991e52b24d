"""A configured backend: its client, the models it serves, its health and load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import BackendConfig
from ..model_names import model_key
from ..queue.entry import QueueKey
from .upstream import Upstream


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as a backend lists it; `raw` is its /api/tags or /v1/models entry."""

    name: str
    raw: dict[str, Any]


@dataclass(eq=False)
class Backend:
    config: BackendConfig
    upstream: Upstream
    models: dict[str, ModelInfo] = field(default_factory=dict)
    healthy: bool = False
    active: int = 0
    version: str | None = None
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind

    def can_serve(self, key: QueueKey) -> bool:
        model, kind = key
        return model in self.models and (kind is None or kind == self.config.kind)

    def load_rank(self) -> tuple[bool, float]:
        """Sort key for "least busy": healthy first, then the smallest share of slots in use."""
        return (not self.healthy, self.active / self.config.max_concurrent)

    def set_models(self, infos: list[ModelInfo]) -> None:
        self.models = {model_key(info.name): info for info in infos}

    @classmethod
    def from_config(cls, config: BackendConfig) -> Backend:
        upstream = Upstream(config.url, config.connect_timeout_s, config.read_timeout_s,
                            config.max_concurrent, config.api_key)
        backend = cls(config=config, upstream=upstream)
        if config.models != "*":
            backend.set_models([ModelInfo(name, {}) for name in config.models])
        return backend
