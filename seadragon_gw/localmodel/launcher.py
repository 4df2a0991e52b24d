"""`python -m seadragon_gw.localmodel serve --port P`: install what is missing, then become llama-server.

This is the command of the shipped config's managed `local` backend. The gateway owns the
process (its own process group, SIGTERM on the gateway's death), so the launcher does not wrap
llama-server but replaces itself with it (`exec`): the pid the gateway watches and signals is
the server's, and its exit code and stderr are the server's too. On a machine that has never
run it, the first start installs first (compiling llama.cpp, about 7 minutes on 2 cores; the
progress lines go to stderr, so into the backend's log and, if it fails, into the 502 a
waiting request gets); the managed backend's `start_timeout_s` allows for that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .installer import Progress, install
from .layout import Layout
from .probe import status
from .server import server_argv

Exec = Callable[[str, list[str]], object]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What the managed command passes: where to listen and how to split the CPU and context."""

    port: int
    host: str = "127.0.0.1"
    parallel: int = 2
    ctx: int = 4096
    threads: int = 0  # 0: half the cores (at least 1; 1 is steadier than 2 on a 2-core machine)
    alias: str = "gemma3:270m"


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def serve(options: ServeOptions, *, progress: Progress, execv: Exec = os.execv, layout: Layout | None = None,
          env: Mapping[str, str] | None = None) -> None:
    """Install if needed (raises InstallError / InstallImpossible), then exec llama-server."""
    if not status(layout).installed:
        progress("the local model is not installed yet: installing it before the first start")
        install(layout, progress=progress, env=env)
    argv = server_argv(options.port, options.host, options.parallel, options.ctx,
                       threads=options.threads or default_threads(), alias=options.alias, layout=layout)
    progress(f"starting llama-server on {options.host}:{options.port} as model {options.alias!r}")
    execv(argv[0], argv)
