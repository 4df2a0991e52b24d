"""Sliding-window request statistics for the admin queue and stats endpoints.

One record observer feeds it: it runs on the event loop for every finished request, so a
record costs a few appends and counter increments; the sorting for percentiles happens when
an administrator asks. Memory stays bounded whatever the traffic: wait samples are kept per
model in fixed-length deques (a model busier than that keeps its newest waits), models past
`max_models` count only towards the totals of all models, and request counts are bucketed
per second.

Times are the recorder's wall clock, the one records are stamped with; `clock` must be it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..config import StatsConfig
from ..model_names import model_key
from ..records.record import RequestRecord

PRIORITY_CLASSES = ("high", "normal", "low")


def priority_class(priority: float | None) -> str:
    """The class of a base priority (lower numbers are served first), matching `X-Priority`'s
    high=1, normal=2, low=3: at most 1 is high, at most 2 normal, anything else low; "none"
    for a request refused before it was authenticated."""
    if priority is None:
        return "none"
    if priority <= 1:
        return "high"
    return "normal" if priority <= 2 else "low"


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted, non-empty values: always one of the values."""
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class WaitSummary:
    """Queue waits in seconds: how many, median, 95th percentile and mean (None when none)."""

    count: int
    p50: float | None
    p95: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> WaitSummary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 95), sum(ordered) / len(ordered))

    def as_json(self) -> dict[str, float | int | None]:
        return {"count": self.count, "p50": self.p50, "p95": self.p95, "mean": self.mean}


@dataclass(slots=True)
class ModelTotals:
    """Since the gateway started: answered by a backend, failed upstream, timed out queued."""

    processed: int = 0
    failed: int = 0
    timeout: int = 0


class WaitSamples:
    """The newest `limit` waits as (granted at, priority class, seconds)."""

    __slots__ = ("_items",)

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[float, str, float]] = deque(maxlen=limit)

    def add(self, at: float, pclass: str, wait: float) -> None:
        self._items.append((at, pclass, wait))

    def since(self, start: float) -> list[tuple[str, float]]:
        """Samples from `start` on. Old ones are dropped from the front first; records finish
        out of grant order (a long stream), so the rest is filtered too."""
        items = self._items
        while items and items[0][0] < start:
            items.popleft()
        return [(pclass, wait) for at, pclass, wait in items if at >= start]


class RateWindow:
    """Counts of events per whole second, for the last `window_s` seconds."""

    __slots__ = ("_window", "_buckets")

    def __init__(self, window_s: float) -> None:
        self._window = window_s
        self._buckets: deque[list[int]] = deque(maxlen=math.ceil(window_s) + 2)

    def add(self, at: float) -> None:
        second = math.floor(at)
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
            return
        buckets.append([second, 1])

    def count(self, now: float) -> int:
        """Events in the seconds that overlap (now - window, now]."""
        start = now - self._window
        buckets = self._buckets
        while buckets and buckets[0][0] + 1 <= start:
            buckets.popleft()
        return sum(n for second, n in buckets if second + 1 > start)


class ModelStats:
    """Totals and recent waits of one model (or of all of them)."""

    __slots__ = ("totals", "waits")

    def __init__(self, samples: int) -> None:
        self.totals = ModelTotals()
        self.waits = WaitSamples(samples)

    def add(self, record: RequestRecord, pclass: str) -> None:
        outcome = record.outcome
        if outcome == "ok":
            self.totals.processed += 1
        elif outcome == "upstream_error":
            self.totals.failed += 1
        elif outcome == "queue_timeout":
            self.totals.timeout += 1
        if record.granted_at is not None and record.queued_at is not None:
            self.waits.add(record.granted_at, pclass, record.granted_at - record.queued_at)


class RequestStats:
    """The record observer behind `/api/admin/stats` and `/api/admin/queue/{model}`."""

    def __init__(self, config: StatsConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._rate = RateWindow(config.rate_window_s)
        self._all = ModelStats(config.samples_per_model)
        self._models: dict[str, ModelStats] = {}

    def request_finished(self, record: RequestRecord) -> None:
        """Every request counts towards the rate; only queued ones (inference that reached a
        model's queue) towards totals and waits, so refused garbage names never make a model."""
        finished = record.finished_at
        self._rate.add(finished if finished is not None else self._clock())
        if record.queued_at is None or record.model is None:
            return
        pclass = priority_class(record.priority)
        self._all.add(record, pclass)
        key = model_key(record.model)
        model = self._models.get(key)
        if model is None:
            if len(self._models) >= self.config.max_models:
                return
            model = self._models[key] = ModelStats(self.config.samples_per_model)
        model.add(record, pclass)

    # -- reading (admin requests) -------------------------------------------------------
    def totals(self, key: str) -> ModelTotals:
        model = self._models.get(key)
        return model.totals if model is not None else ModelTotals()

    def waits_by_class(self, key: str | None = None) -> dict[str, WaitSummary]:
        """Wait summaries per priority class over the window, for one model key or all."""
        return self.summaries(key)[1]

    def waits(self) -> WaitSummary:
        """Every model's and class's waits over the window together."""
        return self.summaries(None)[0]

    def summaries(self, key: str | None = None) -> tuple[WaitSummary, dict[str, WaitSummary]]:
        """All waits over the window together, and per priority class, for one model key or
        all, from one pass over the samples (the admin page asks every 2 s per open page, and
        a full window holds thousands under load)."""
        model = self._all if key is None else self._models.get(key)
        grouped: dict[str, list[float]] = {c: [] for c in PRIORITY_CLASSES}
        every: list[float] = []
        if model is not None:
            for pclass, wait in model.waits.since(self._window_start()):
                every.append(wait)
                values = grouped.get(pclass)
                if values is not None:
                    values.append(wait)
        return WaitSummary.of(every), {c: WaitSummary.of(values) for c, values in grouped.items()}

    def requests_per_minute(self) -> float:
        """Finished requests over the rate window, scaled to one minute."""
        return self._rate.count(self._clock()) * 60.0 / self.config.rate_window_s

    def _window_start(self) -> float:
        return self._clock() - self.config.window_s
