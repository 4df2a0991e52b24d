"""What the registry needs from a managed backend's process supervisor, and what it offers it.

The supervisor itself lives in `seadragon_gw.managed` (a layer above this one); the registry
gets one per managed backend from a `SupervisorFactory` handed to it by whoever builds the
gateway, the same way the scheduler is reached through `DispatchPool`, so this package never
imports `managed`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import GatewayError
from .backend import Backend


@dataclass(frozen=True, slots=True)
class SupervisorHooks:
    """What a supervisor tells the registry: is work waiting for this backend (restart after
    a crash?), its start failed (answer the waiting requests), it is ready (list its models),
    and `start`: the supervisor's own restarts go through the registry (an exclusive group
    may have to wait for another member)."""

    work_waiting: Callable[[Backend], bool]
    start_failed: Callable[[Backend, GatewayError], None]
    became_ready: Callable[[Backend], None]
    start: Callable[[Backend], object]


class Supervisor(Protocol):
    """`profile` is the live process's profile; `next_profile` the one the next start uses
    (the registry sets it to switch); `started_at` is wall-clock time while it runs."""

    profile: str | None
    next_profile: str | None
    started_at: float | None
    restarts: int

    @property
    def pid(self) -> int | None: ...

    @property
    def log_path(self) -> Path: ...

    def ensure_started(self, now: bool = False) -> asyncio.Task[None] | None: ...

    async def stop(self, graceful: bool = True, reason: str = "stopped") -> None: ...


class SupervisorFactory(Protocol):
    def __call__(self, backend: Backend, port: int, hooks: SupervisorHooks) -> Supervisor: ...


def free_port(host: str) -> int:
    """A port nothing listens on now (for `port: auto`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
