"""Failed-login throttling per username and per client address, decided before any hashing.

Each key (a lower-cased username, an address) may have at most `max_failures` failed or
in-flight attempts within `window_s`; the next attempt is refused with the time until the
oldest one leaves the window. Counting in-flight attempts keeps the limit exact under a
burst of concurrent requests. The number of keys tracked is bounded, so an attacker spraying
random usernames costs memory once, not forever.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from .errors import LoginThrottled

MAX_KEYS = 10_000
MAX_NAME = 64  # no username is longer; a longer one still counts, without costing memory


@dataclass
class _Window:
    failures: deque[float] = field(default_factory=deque)
    in_flight: int = 0


class Attempt:
    """One login attempt holding a place in both windows until it is settled: a failure
    unless marked `success()` or `void()` (nothing was checked, e.g. no hashing slot)."""

    def __init__(self) -> None:
        self.outcome: Literal["failure", "success", "void"] = "failure"

    def success(self) -> None:
        self.outcome = "success"

    def void(self) -> None:
        self.outcome = "void"


class LoginThrottle:
    def __init__(self, max_failures: int = 5, window_s: float = 60.0,
                 clock: Callable[[], float] | None = None, max_keys: int = MAX_KEYS) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    @property
    def tracked_keys(self) -> int:
        """Usernames and addresses with a failure in the window or an attempt in flight."""
        return len(self._windows)

    @contextlib.contextmanager
    def attempt(self, username: str, address: str) -> Iterator[Attempt]:
        """Admit one attempt (or raise `LoginThrottled`). A failure counts for both keys; a
        success clears the username's failures; a void attempt leaves no trace."""
        keys = (f"user:{username.lower()[:MAX_NAME]}", f"addr:{address[:MAX_NAME]}")
        self._admit(keys)
        attempt = Attempt()
        try:
            yield attempt
        finally:
            self._settle(keys, attempt.outcome)

    def _admit(self, keys: tuple[str, str]) -> None:
        now = self._clock()
        for key, what in zip(keys, ("this username", "this address"), strict=True):
            window = self._window(key, now)
            if len(window.failures) + window.in_flight >= self.max_failures:
                wait = window.failures[0] + self.window_s - now if window.failures else 1.0
                raise LoginThrottled(f"too many failed logins for {what}; try again later",
                                     retry_after_s=max(1.0, wait))
        for key in keys:
            self._window(key, now).in_flight += 1

    def _settle(self, keys: tuple[str, str], outcome: str) -> None:
        now = self._clock()
        for key in keys:
            window = self._window(key, now)
            window.in_flight = max(0, window.in_flight - 1)
            if outcome == "success" and key.startswith("user:"):
                window.failures.clear()
            elif outcome == "failure":
                window.failures.append(now)
            if not window.failures and not window.in_flight:
                del self._windows[key]

    def _window(self, key: str, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            self._evict()
        else:
            self._windows.move_to_end(key)
        while window.failures and window.failures[0] <= now - self.window_s:
            window.failures.popleft()
        return window

    def _evict(self) -> None:
        """Forget the least recently seen keys beyond `max_keys` (an in-flight one is kept:
        its attempt settles into a fresh window)."""
        while len(self._windows) > self._max_keys:
            self._windows.popitem(last=False)
