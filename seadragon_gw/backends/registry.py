"""All backends: model discovery, health checks and the merged model listings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..config import BackendConfig
from ..model_names import model_key
from ..queue.entry import QueueKey
from .backend import Backend, ModelInfo
from .upstream import UpstreamError

log = logging.getLogger("seadragon_gw.backends")


class Registry:
    def __init__(self, configs: list[BackendConfig], on_change: Callable[[], None] = lambda: None) -> None:
        self.backends = [Backend.from_config(c) for c in configs]
        self.on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []

    def serving(self, key: QueueKey) -> list[Backend]:
        return [b for b in self.backends if b.can_serve(key)]

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Check every backend once before serving, then keep checking in the background."""
        await asyncio.gather(*(self.refresh(b, with_models=True) for b in self.backends))
        for backend in self.backends:
            self._tasks.append(asyncio.create_task(self._watch(backend), name=f"watch:{backend.name}"))

    def refresh_soon(self, backend: Backend) -> None:
        """Re-read a backend's models in the background (after pull, create, copy, delete)."""
        task = asyncio.create_task(self.refresh(backend, with_models=True))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.upstream.aclose() for b in self.backends), return_exceptions=True)

    async def _watch(self, backend: Backend) -> None:
        last_models = time.monotonic()
        while True:
            await asyncio.sleep(backend.config.health_interval_s)
            due = time.monotonic() - last_models >= backend.config.refresh_s
            if due:
                last_models = time.monotonic()
            with contextlib.suppress(Exception):
                await self.refresh(backend, with_models=due or not backend.healthy)

    async def refresh(self, backend: Backend, with_models: bool) -> None:
        """Probe a backend; update health, version and (optionally) its model list."""
        was_healthy, old_models = backend.healthy, set(backend.models)
        try:
            if backend.kind == "ollama":
                version = await backend.upstream.get_json("/api/version")
                backend.version = str(version.get("version")) if isinstance(version, dict) else None
                if with_models:
                    self._apply_models(backend, _ollama_models(await backend.upstream.get_json("/api/tags")))
            else:
                models = _openai_models(await backend.upstream.get_json("/v1/models"))
                if with_models:
                    self._apply_models(backend, models)
            backend.healthy, backend.last_error = True, None
        except UpstreamError as exc:
            if backend.healthy or backend.last_error is None:
                log.warning("backend %s is down: %s", backend.name, exc.message)
            backend.healthy, backend.last_error = False, exc.message
        if backend.healthy and not was_healthy:
            log.info("backend %s is up (%d models)", backend.name, len(backend.models))
        if backend.healthy != was_healthy or set(backend.models) != old_models:
            self.on_change()

    @staticmethod
    def _apply_models(backend: Backend, found: list[ModelInfo]) -> None:
        if backend.config.models == "*":
            backend.set_models(found)
            return
        by_key = {model_key(info.name): info for info in found}
        backend.set_models([by_key.get(model_key(n), ModelInfo(n, {})) for n in backend.config.models])

    # -- merged listings ----------------------------------------------------------------
    def ollama_tags(self, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        """Every backend's models once; only `allowed` keys for a model-restricted credential."""
        seen: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            for key, info in backend.models.items():
                if key not in seen and (allowed is None or key in allowed):
                    seen[key] = info.raw if info.raw.get("details") else _synth_tag(key)
        return {"models": list(seen.values())}

    def openai_models(self, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        seen: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            for key, info in backend.models.items():
                if allowed is None or key in allowed:
                    seen.setdefault(key, _as_openai_model(info, backend))
        return {"object": "list", "data": list(seen.values())}

    def openai_model(self, name: str) -> dict[str, Any] | None:
        key = model_key(name)
        for backend in self.backends:
            info = backend.models.get(key)
            if info is not None:
                return {**_as_openai_model(info, backend), "id": name}
        return None

    def health(self) -> dict[str, Any]:
        backends = [
            {"name": b.name, "kind": b.kind, "healthy": b.healthy, "active": b.active,
             "max_concurrent": b.config.max_concurrent, "models": len(b.models), "error": b.last_error}
            for b in self.backends
        ]
        ok = any(b.healthy for b in self.backends)
        return {"status": "ok" if ok else "degraded", "backends": backends}


def _ollama_models(data: Any) -> list[ModelInfo]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise UpstreamError(502, "/api/tags: no models list")
    return [ModelInfo(m["name"], m) for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _openai_models(data: Any) -> list[ModelInfo]:
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise UpstreamError(502, "/v1/models: no data list")
    return [ModelInfo(m["id"], m) for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _synth_tag(key: str) -> dict[str, Any]:
    """An /api/tags entry for a model the backend did not describe (OpenAI-kind backends).
    Roo requires `details.family` and `details.parameter_size` to be strings."""
    return {
        "name": key, "model": key, "modified_at": _EPOCH, "size": 0, "digest": "",
        "details": {"parent_model": "", "format": "", "family": "", "families": [],
                    "parameter_size": "", "quantization_level": ""},
    }


def _as_openai_model(info: ModelInfo, backend: Backend) -> dict[str, Any]:
    if backend.kind == "openai" and info.raw.get("id"):
        return {"id": info.raw["id"], "object": "model", "created": info.raw.get("created", 0),
                "owned_by": info.raw.get("owned_by", "library")}
    created = _parse_created(info.raw.get("modified_at"))
    return {"id": info.name, "object": "model", "created": created, "owned_by": "library"}


def _parse_created(stamp: Any) -> int:
    if not isinstance(stamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")
