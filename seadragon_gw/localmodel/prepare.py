"""`./run.sh`'s start-up decision: install the built-in local model now, or leave it for later.

The shipped config has two backends: the machine's Ollama and a managed `local` llama.cpp for
`gemma3:270m`, installed on first use. On a fresh machine with no Ollama, that first use is
the user's first chat, and a `curl` that hangs silently for seven minutes while llama.cpp
compiles is not what anyone expects; they expect `./run.sh` to do the installing, in the
terminal they are watching, as it installs the gateway itself. So when no other backend
answers with a model, the install runs here, before the gateway starts, with its duration
said up front. Where Ollama answers with models nothing is installed: the launcher still
installs on a first request for `gemma3:270m`, if one ever comes. Nothing here stops the
gateway from starting: a failed or impossible install is reported and the gateway starts
anyway (the `local` backend then answers its requests with the reason).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config import BackendConfig, GatewayConfig
from .installer import InstallError, InstallImpossible, Progress, install
from .layout import Layout
from .probe import status

LAUNCHER_MODULE = "seadragon_gw.localmodel"
PROBE_TIMEOUT_S = 2.0

Probe = Callable[[BackendConfig], int | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """What start-up did, in words for the console ("" when there is nothing to say)."""

    installed_now: bool
    message: str


def uses_local_model(backend: BackendConfig) -> bool:
    """A managed backend whose command runs this package's launcher."""
    return backend.managed is not None and LAUNCHER_MODULE in backend.managed.command


def prepare(config: GatewayConfig, *, progress: Progress, probe: Probe | None = None,
            layout: Layout | None = None, env: Mapping[str, str] | None = None) -> Decision:
    """Install the local model now if the config uses it and no other backend has a model."""
    local = [b for b in config.backends if uses_local_model(b)]
    if not local:
        return Decision(False, "")
    if status(layout).installed:
        return Decision(False, "")
    probe = probe or count_models
    for backend in config.backends:
        if backend.managed is None:
            found = probe(backend)
            if found:
                return Decision(False, f"backend '{backend.name}' at {backend.url} answers with {found} models: "
                                       f"the local model is installed only if a request asks for "
                                       f"{_models_of(local)}")
    progress(f"no other backend answers with a model: installing the built-in local model "
             f"({_models_of(local)}: llama.cpp's server and Gemma 3 270M) before the gateway starts; "
             f"compiling llama.cpp takes about 7 minutes on 2 cores the first time, later starts find it "
             f"in place")
    try:
        install(layout, progress=progress, env=env)
    except InstallImpossible as exc:
        return Decision(False, f"the local model cannot be installed here: {exc}")
    except InstallError as exc:
        return Decision(False, f"installing the local model failed (the gateway starts anyway): {exc}")
    return Decision(True, "the local model is installed")


def _models_of(backends: list[BackendConfig]) -> str:
    names = [m for b in backends if isinstance(b.models, list) for m in b.models]
    return ", ".join(names) or "its model"


def count_models(backend: BackendConfig) -> int | None:
    """How many models a backend lists (None: it does not answer)."""
    path = "/api/tags" if backend.kind == "ollama" else "/v1/models"
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
    request = urllib.request.Request(backend.url.rstrip("/") + path, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for a local server
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    listed = body.get("models" if backend.kind == "ollama" else "data") if isinstance(body, dict) else None
    return len(listed) if isinstance(listed, list) else None
