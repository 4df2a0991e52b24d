"""The command line that starts the installed `llama-server` (the caller owns the process)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .layout import MODEL_ALIAS, Layout
from .probe import status


class NotInstalled(Exception):
    """`server_argv` needs a finished install; the message says how to get one."""


def server_argv(port: int, host: str = "127.0.0.1", parallel: int = 4, ctx: int = 4096, *,
                threads: int = 1, n_predict: int = 256, alias: str = MODEL_ALIAS, embeddings: bool = True,
                extra: Sequence[str] = (), layout: Layout | None = None) -> list[str]:
    """argv for an OpenAI-compatible llama-server with Gemma 3 270M on host:port.

    `ctx` is the total context, split across the `parallel` slots; `threads` defaults to 1, which
    is steadier than 2 on a 2-core machine; `n_predict` caps requests that send no max_tokens.
    The server answers `/health` with 503 while it loads and 200 once it is ready.
    """
    current = status(layout)
    if current.server is None or not current.installed:
        raise NotInstalled("llama.cpp's server is not installed: run `.venv/bin/python -m "
                           "seadragon_gw.localmodel install`\n  " + "\n  ".join(current.lines()))
    return build_argv(current.server, current.layout, port, host, parallel, ctx, threads=threads,
                      n_predict=n_predict, alias=alias, embeddings=embeddings, extra=extra)


def build_argv(binary: Path, layout: Layout, port: int, host: str = "127.0.0.1", parallel: int = 4,
               ctx: int = 4096, *, threads: int = 1, n_predict: int = 256, alias: str = MODEL_ALIAS,
               embeddings: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """`server_argv` without the install check (the installer's own smoke test uses it)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    if parallel < 1 or threads < 1 or ctx < parallel:
        raise ValueError(f"need parallel >= 1, threads >= 1 and ctx >= parallel "
                         f"(got parallel={parallel}, threads={threads}, ctx={ctx})")
    argv = [str(binary), "-m", str(layout.model), "--host", host, "--port", str(port),
            "-c", str(ctx), "-np", str(parallel), "-t", str(threads), "-n", str(n_predict), "-a", alias,
            "--chat-template-file", str(layout.template), "--no-webui", "--offline",
            # No weight repacking: on CPUs that report AMX inside VMs that do not grant it (seen
            # on Firecracker), the repacked AMX kernels die with SIGILL on the first request.
            "--no-repack"]
    if embeddings:
        argv += ["--embeddings", "--pooling", "mean"]
    return argv + list(extra)
