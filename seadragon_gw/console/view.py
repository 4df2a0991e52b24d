"""What the console shows, from the gateway's answers: one row per model, a health line.

Pure data and formatting (no I/O, no textual), so it is easy to test and to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BAR_WIDTH = 20


@dataclass(frozen=True)
class ModelRow:
    model: str
    backend: str | None  # the managed backend serving it (start/stop acts on this)
    status: str
    profile: str | None
    processing: int
    max_concurrent: int
    waiting: int

    @property
    def utilization(self) -> float:
        return self.processing / self.max_concurrent if self.max_concurrent else 0.0


@dataclass(frozen=True)
class Snapshot:
    health: str
    backends_up: int
    backends: int
    rows: list[ModelRow]
    error: str | None = None


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#######.............]  35%`: utilization as a bar."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {round(fraction * 100):3d}%"


def snapshot(health: dict[str, Any], queue: dict[str, Any], managed: list[dict[str, Any]]) -> Snapshot:
    by_model = {m: b for b in managed for m in b.get("models", [])}
    rows = []
    for load in queue.get("models", []):
        backend = by_model.get(load["model"])
        rows.append(ModelRow(load["model"], backend["name"] if backend else None,
                             backend["status"] if backend else "served", backend.get("profile") if backend else None,
                             load["processing"], load["max_concurrent"], load["waiting"]))
    listed = {r.model for r in rows}
    for backend in managed:  # a stopped managed backend whose models no load lists yet
        for model in backend.get("models", []) or [backend["name"]]:
            if model not in listed:
                rows.append(ModelRow(model, backend["name"], backend["status"], backend.get("profile"), 0, 0, 0))
    backends = health.get("backends", [])
    up = sum(1 for b in backends if b.get("state") == "up" or b.get("healthy"))
    return Snapshot(health.get("status", "unknown"), up, len(backends), rows)
