"""`/api/ps` for managed processes: what runs now, in Ollama's shape (issue 9).

Ollama lists the models it has loaded; a managed process has its models loaded while it runs,
so each running managed backend contributes one entry per model it serves. Sizes are unknown
to the gateway (0); `expires_at` is when the idle TTL would stop it if nothing else came (far
in the future with no TTL, as Ollama shows `keep_alive: -1`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..backends.backend import Backend
from ..backends.state import BackendState

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
        for key, info in backend.models.items():
            if allowed is None or key in allowed:
                entries.append(_entry(key, info.raw, expires))
    return entries


def _entry(key: str, raw: dict[str, Any], expires_at: str) -> dict[str, Any]:
    details = raw.get("details") if isinstance(raw.get("details"), dict) else None
    return {"name": key, "model": key, "size": 0, "digest": str(raw.get("digest") or ""),
            "details": details or {"parent_model": "", "format": "", "family": "", "families": [],
                                   "parameter_size": "", "quantization_level": ""},
            "expires_at": expires_at, "size_vram": 0}


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
