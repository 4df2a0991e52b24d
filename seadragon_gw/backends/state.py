"""A backend's lifecycle: one explicit state, one owner, validated transitions, events.

Every backend, plain or managed, is in exactly one `BackendState`. Only the registry changes
it (health checks, passive health from requests, add/drain/remove, and later the managed
process supervisor), always through `BackendLifecycle.move`, which refuses a transition the
table below does not allow. So "is it up, may it take work" is never two flags that disagree.

States of a backend the gateway only talks to: `unknown` (configured, never answered yet),
`up`, `down`, `draining` (finishing its work, taking no new), `removed` (gone for good).
A managed process adds `stopped`, `starting`, `stopping` and `crashed`; `up` is its `running`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GatewayError

log = logging.getLogger("seadragon_gw.backends")


class BackendState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    REMOVED = "removed"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    CRASHED = "crashed"


S = BackendState
_ALLOWED: dict[BackendState, frozenset[BackendState]] = {
    S.UNKNOWN: frozenset({S.UP, S.DOWN, S.DRAINING, S.REMOVED, S.STARTING, S.STOPPED}),
    S.UP: frozenset({S.DOWN, S.DRAINING, S.STOPPING, S.CRASHED}),
    S.DOWN: frozenset({S.UP, S.DRAINING, S.STOPPING, S.CRASHED, S.STOPPED}),
    S.DRAINING: frozenset({S.REMOVED, S.UP, S.DOWN, S.STOPPING, S.CRASHED}),
    S.STOPPED: frozenset({S.STARTING, S.REMOVED}),
    S.STARTING: frozenset({S.UP, S.CRASHED, S.STOPPING, S.DOWN}),
    S.STOPPING: frozenset({S.STOPPED, S.CRASHED}),
    S.CRASHED: frozenset({S.STARTING, S.STOPPED, S.REMOVED}),
    S.REMOVED: frozenset(),
}

# A dispatcher hands work to these; `down`/`unknown` ones only as a last resort (see
# Scheduler._may_serve), so a backend that came back is found by the next request.
MAY_TRY = frozenset({S.UP, S.DOWN, S.UNKNOWN})
# A managed backend in these is on its way up or down, so a request may wait for it; in
# NEEDS_START it is started on demand unless its `start` is `manual`.
MAY_QUEUE_MANAGED = frozenset({S.STARTING, S.STOPPING})
NEEDS_START = frozenset({S.STOPPED, S.CRASHED})


_TROUBLE = frozenset({S.DOWN, S.CRASHED})


class InvalidTransition(GatewayError):
    """A state change the lifecycle table does not allow: a bug or a race, never silent."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition, as observers see it."""

    backend: str
    old: BackendState
    new: BackendState
    reason: str
    at: float


StateListener = Callable[[StateChange], None]


class BackendLifecycle:
    """The state of one backend and the record of why it is in it."""

    def __init__(self, name: str, listeners: list[StateListener] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.state = BackendState.UNKNOWN
        self.reason = "not checked yet"
        self.since = clock()
        self._listeners = listeners if listeners is not None else []
        self._clock = clock

    def can_move(self, new: BackendState) -> bool:
        return new in _ALLOWED[self.state]

    def move(self, new: BackendState, reason: str) -> bool:
        """Change state; False (and nothing happens) if it already is `new`. Raises
        InvalidTransition for a change the table forbids."""
        old = self.state
        if new is old:
            self.reason = reason
            return False
        if new not in _ALLOWED[old]:
            raise InvalidTransition(f"backend {self.name}: cannot go from {old.value} to {new.value}")
        self.state, self.reason, self.since = new, reason, self._clock()
        change = StateChange(self.name, old, new, reason, self.since)
        level = logging.WARNING if new in _TROUBLE else logging.INFO
        log.log(level, "backend %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
        for listener in list(self._listeners):
            listener(change)
        return True
