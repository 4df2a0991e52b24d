"""What the native `/api/show` answers for a model only an OpenAI-kind backend serves.

Ollama's clients ask `/api/show` before they use a model: Roo Code calls it for every listed
model on every chat turn, requires `details.family` and `details.parameter_size` as strings and
`model_info` as a mapping, reads the context length from any `model_info` key containing
`context_length`, and hides models whose `capabilities` lack "tools". An OpenAI-kind backend
has no such route, so the answer is made from its `/v1/models` entry: llama.cpp's server puts
`meta.n_ctx_train` and `meta.n_params` there, vLLM `max_model_len`.
"""

from __future__ import annotations

from typing import Any

from .backend import ModelInfo


def parameter_size(count: object) -> str:
    """`268098176` -> "268.10M", as Ollama writes sizes; "" when unknown."""
    if not isinstance(count, (int, float)) or isinstance(count, bool) or count <= 0:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(int(count))


def context_length(raw: dict[str, Any]) -> int | None:
    meta = raw.get("meta")
    for value in (raw.get("max_model_len"), meta.get("n_ctx_train") if isinstance(meta, dict) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def show_answer(info: ModelInfo, family: str = "openai-compatible") -> dict[str, Any]:
    """An `/api/show` body for a model known only from an OpenAI `/v1/models` entry."""
    raw = info.raw
    found = raw.get("meta")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    model_info: dict[str, Any] = {"general.architecture": family}
    length = context_length(raw)
    if length is not None:
        model_info[f"{family}.context_length"] = length
    if isinstance(meta.get("n_params"), int):
        model_info["general.parameter_count"] = meta["n_params"]
    return {
        "modelfile": "", "parameters": "", "template": "",
        "details": {"parent_model": "", "format": "gguf" if meta else "", "family": family, "families": [family],
                    "parameter_size": parameter_size(meta.get("n_params")), "quantization_level": ""},
        "model_info": model_info,
        "capabilities": ["completion", "tools"],
    }
