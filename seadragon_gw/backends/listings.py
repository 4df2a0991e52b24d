"""Merged model listings over all backends, in the Ollama and OpenAI shapes.

A model served by several backends is listed once; a model-restricted credential sees only
the models it may use.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..model_names import model_key
from .backend import Backend, ModelInfo


def ollama_tags(backends: Iterable[Backend], allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """Every backend's models once; only `allowed` keys for a model-restricted credential."""
    seen: dict[str, dict[str, Any]] = {}
    for backend in backends:
        for key, info in backend.models.items():
            if key not in seen and (allowed is None or key in allowed):
                seen[key] = info.raw if info.raw.get("details") else _synth_tag(key)
    return {"models": list(seen.values())}


def openai_models(backends: Iterable[Backend], allowed: frozenset[str] | None = None) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    for backend in backends:
        for key, info in backend.models.items():
            if allowed is None or key in allowed:
                seen.setdefault(key, _as_openai_model(info, backend))
    return {"object": "list", "data": list(seen.values())}


def openai_model(backends: Iterable[Backend], name: str) -> dict[str, Any] | None:
    key = model_key(name)
    for backend in backends:
        info = backend.models.get(key)
        if info is not None:
            return {**_as_openai_model(info, backend), "id": name}
    return None


def ollama_models(data: Any) -> list[ModelInfo] | None:
    """The models of an /api/tags answer, or None if it is not one."""
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    return [ModelInfo(m["name"], m) for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]


def openai_models_of(data: Any) -> list[ModelInfo] | None:
    """The models of a /v1/models answer, or None if it is not one."""
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
