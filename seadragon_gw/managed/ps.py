"""`/api/ps` for managed processes: what runs now, in Ollama's shape (issue 9).

Ollama lists the models it has loaded; a managed process has its models loaded while it runs,
so each running managed backend contributes one entry per model it serves. `size` is the model
file's (`managed.model_path`, or the built-in local model's GGUF), 0 where the gateway cannot
know it; `size_vram` is 0 (the gateway does not see the device's memory). `expires_at` is
when the idle TTL would stop it if nothing else came (far in the future with no TTL, as
Ollama shows `keep_alive: -1`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..backends.backend import Backend
from ..backends.state import BackendState
from ..config import ManagedConfig
from ..localmodel.layout import default_layout
from ..localmodel.prepare import LAUNCHER_MODULE

NEVER = "2318-01-01T00:00:00Z"  # "does not expire", as Ollama writes a keep_alive of -1


def running_models(backends: Iterable[Backend], allowed: frozenset[str] | None = None,
                   clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """One /api/ps entry per model of every managed backend whose process runs (up, or
    draining); only `allowed` model keys for a model-restricted credential."""
    entries = []
    for backend in backends:
        managed = backend.config.managed
        if managed is None or backend.state not in (BackendState.UP, BackendState.DRAINING):
            continue
        expires = NEVER if managed.idle_ttl_s <= 0 else _iso(clock() + managed.idle_ttl_s)
        size = model_size(managed)
        for key, info in backend.models.items():
            if allowed is None or key in allowed:
                entries.append(_entry(key, info.raw, expires, size))
    return entries


def model_size(managed: ManagedConfig) -> int:
    """The bytes of the model file the process loads: `model_path` (the `{model_path}`
    placeholder), or for the built-in local model the GGUF where its launcher finds it (the
    cache named by the process's own environment); 0 when unknown or not there."""
    path = managed.model_path
    if not path and LAUNCHER_MODULE in managed.command:
        path = str(default_layout({**os.environ, **managed.env}).model)
    if not path:
        return 0
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _entry(key: str, raw: dict[str, Any], expires_at: str, size: int) -> dict[str, Any]:
    details = raw.get("details") if isinstance(raw.get("details"), dict) else None
    return {"name": key, "model": key, "size": size, "digest": str(raw.get("digest") or ""),
            "details": details or {"parent_model": "", "format": "", "family": "", "families": [],
                                   "parameter_size": "", "quantization_level": ""},
            "expires_at": expires_at, "size_vram": 0}


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
