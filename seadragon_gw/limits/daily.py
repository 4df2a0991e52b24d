"""Requests and tokens per client for the current UTC day.

The day is the wall clock's `floor(epoch / 86400)`, so every count resets together at UTC
midnight (the clock is injectable: tests move it across midnight). Counts are kept for every
authenticated client, so `/auth/me` can show them; there is one per credential at most (API
key, user, token, whitelist entry), and all are dropped when the day changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

DAY_S = 86400.0
ClientKey = tuple[str, str | int]
"""(credential kind, the credential): an API key by its id (two keys may share a name, and
each has its own bucket and day), every other credential by its name, unique in its kind."""


def client_key(kind: str, name: str, key_id: int | None) -> ClientKey:
    return (kind, key_id) if kind == "apikey" and key_id is not None else (kind, name)


@dataclass(slots=True)
class DayCount:
    requests: int = 0
    tokens: int = 0


class DailyCounts:
    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._day = int(wall() // DAY_S)
        self._rolls_at = (self._day + 1) * DAY_S  # the wall clock's next midnight
        self._counts: dict[ClientKey, DayCount] = {}

    def of(self, key: ClientKey) -> DayCount:
        """Today's count for `key`, made on first use. (Per request: the day's compare is
        inline, `_roll` runs only when it fails.)"""
        now = self._wall()
        if not self._rolls_at - DAY_S <= now < self._rolls_at:
            self._roll(now)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = DayCount()
        return count

    def get(self, key: ClientKey) -> DayCount | None:
        now = self._wall()
        if not self._rolls_at - DAY_S <= now < self._rolls_at:
            self._roll(now)
        return self._counts.get(key)

    @property
    def resets_at(self) -> float:
        """The next UTC midnight, as epoch seconds."""
        return (self._day + 1) * DAY_S

    def seconds_left(self) -> float:
        now = self._wall()
        self._roll(now)
        return max(0.0, self.resets_at - now)

    def load(self, totals: Mapping[ClientKey, tuple[int, int]]) -> None:
        """Start today from counts read back from the usage log (after a restart)."""
        self._roll(self._wall())
        for key, (requests, tokens) in totals.items():
            count = self.of(key)
            count.requests = max(count.requests, requests)
            count.tokens = max(count.tokens, tokens)

    def _roll(self, now: float) -> None:
        """Drop every count once the day is over (callers compare first; this is the rest, at
        midnight). A wall clock set back into an earlier day rolls too (the counts were that
        day's)."""
        if self._rolls_at - DAY_S <= now < self._rolls_at:
            return
        day = int(now // DAY_S)
        if day != self._day:
            self._day, self._counts = day, {}
        self._rolls_at = (day + 1) * DAY_S
