"""`model_key`: the routing key that makes `llama3` and `llama3:latest` one model."""

from __future__ import annotations

import pytest

from seadragon_gw.model_names import model_key


@pytest.mark.parametrize(("name", "key"), [
    ("llama3", "llama3:latest"),
    ("llama3:latest", "llama3:latest"),
    ("qwen2.5:7b", "qwen2.5:7b"),
    ("LLama3", "llama3:latest"),
    ("Qwen2.5:7B-Instruct", "qwen2.5:7b-instruct"),
    ("  llama3  ", "llama3:latest"),
    ("library/llama3", "library/llama3:latest"),
    ("registry.local:5000/team/llama3", "registry.local:5000/team/llama3:latest"),
    ("registry.local:5000/team/llama3:8b", "registry.local:5000/team/llama3:8b"),
    ("localhost:11434/llama3", "localhost:11434/llama3:latest"),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "hf.co/bartowski/llama-3.2-1b-instruct-gguf:latest"),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/llama-3.2-1b-instruct-gguf:q4_k_m"),
    ("hf.co/unsloth/gemma-3-4b-it-GGUF:IQ4_XS", "hf.co/unsloth/gemma-3-4b-it-gguf:iq4_xs"),
])
def test_model_key(name: str, key: str) -> None:
    assert model_key(name) == key


def test_forms_of_one_model_share_a_key() -> None:
    assert len({model_key(n) for n in ("llama3", "llama3:latest", "LLAMA3", "Llama3:Latest")}) == 1


def test_different_tags_are_different_models() -> None:
    assert model_key("llama3:8b") != model_key("llama3:70b") != model_key("llama3")


def test_idempotent() -> None:
    for name in ("llama3", "hf.co/u/m:Q4", "host:5000/m"):
        assert model_key(model_key(name)) == model_key(name)
