"""Prometheus metrics of one gateway, counted from finished request records.

The record observer runs on the event loop for every request, so it only adds to plain
numbers: per label combination a few ints and floats, and bucket counts found with `bisect`
(C). prometheus-client's own Counter and Histogram take a lock per increment and walk
Python code per observation; at three histograms and three counters a request that was
several microseconds, the largest part of the operator features' cost per request. The
numbers become metric families only when `/metrics` is scraped (`_Collector`). Each gateway
has its own `CollectorRegistry` (never the library's global one), so two gateways in one
process, as in the tests, never share a count.

Label values are bounded: `route` is a known route template (else "other"), `model` a model
some backend serves (else "other"), `status` an HTTP status, `priority` one of four classes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from ..backends.registry import Registry
from ..lifecycle.route import INFERENCE
from ..model_names import model_key
from ..queue.scheduler import Scheduler
from ..records.record import RequestRecord
from .inflight import InFlight
from .live_gauges import LiveGauges
from .stats import priority_class

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"
ROUTES = frozenset({*INFERENCE, "/api/show", "/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete",
                    "/api/chat/completions", "/api/completions"})
BLOBS_PREFIX, BLOBS_ROUTE = "/api/blobs/", "/api/blobs/{digest}"
REFUSED = frozenset({"rejected", "cleared", "queue_timeout"})

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_MODEL_CACHE_LIMIT = 1024


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return BLOBS_ROUTE if path.startswith(BLOBS_PREFIX) else OTHER


class _Histogram:
    """Bucket counts (not cumulative), a sum and a count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(total)))
        return out

    def add(self, other: _Histogram) -> None:
        """Count `other`'s observations here too (same bounds)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum


class _Times:
    """The three time histograms of one (model, priority class): one lookup per request, the
    observations inline (`bisect` is C). The upstream ones are shown per model only; they are
    summed over the classes when scraped."""

    __slots__ = ("wait", "first_byte", "duration")

    def __init__(self) -> None:
        self.wait = _Histogram(WAIT_BUCKETS)
        self.first_byte = _Histogram(FIRST_BYTE_BUCKETS)
        self.duration = _Histogram(DURATION_BUCKETS)

    def observe(self, record: RequestRecord, granted: float) -> None:
        queued = record.queued_at
        if queued is not None:
            wait = self.wait
            wait.counts[bisect.bisect_left(WAIT_BUCKETS, granted - queued)] += 1
            wait.sum += granted - queued
        if record.backend is None:
            return
        first = record.first_byte_at
        if first is not None:
            first_byte = self.first_byte
            first_byte.counts[bisect.bisect_left(FIRST_BYTE_BUCKETS, first - granted)] += 1
            first_byte.sum += first - granted
        finished = record.finished_at
        if finished is not None:
            duration = self.duration
            duration.counts[bisect.bisect_left(DURATION_BUCKETS, finished - granted)] += 1
            duration.sum += finished - granted


class _Series:
    """What one (route, model, status, priority class, outcome) combination has counted."""

    __slots__ = ("requests", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.requests = 0
        self.tokens_in = 0
        self.tokens_out = 0


class GatewayMetrics:
    """The record observer behind `/metrics`, and the registry it renders."""

    def __init__(self, registry: Registry, scheduler: Scheduler, inflight: InFlight) -> None:
        self._backends = registry
        self._series: dict[tuple[str, str, int, str, str], _Series] = {}
        self._times: dict[tuple[str, str], _Times] = {}
        self._models: dict[str | None, str] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.registry.register(LiveGauges(registry, scheduler, inflight))

    def request_finished(self, record: RequestRecord) -> None:
        model = self._models.get(record.model)
        if model is None:
            model = self._model_label(record.model)
        pclass = priority_class(record.priority)
        label = (route_label(record.route), model, record.status, pclass, record.outcome or "ok")
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = _Series()
        series.requests += 1
        if record.prompt_tokens:
            series.tokens_in += record.prompt_tokens
        if record.completion_tokens:
            series.tokens_out += record.completion_tokens
        granted = record.granted_at
        if granted is None:
            return
        key = (model, pclass)
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = _Times()
        times.observe(record, granted)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def families(self) -> Iterable[Metric]:
        """The counted numbers as metric families (at scrape time)."""
        requests = CounterMetricFamily("seadragon_requests", "Finished requests",
                                       labels=["route", "model", "status", "priority"])
        tokens = CounterMetricFamily("seadragon_tokens", "Tokens in (prompt) and out (completion)",
                                     labels=["model", "direction"])
        limited = CounterMetricFamily("seadragon_rate_limited", "Requests refused by a rate limit or quota (429)",
                                      labels=["route"])
        refused = CounterMetricFamily("seadragon_rejected", "Requests refused, cleared or timed out in the queue",
                                      labels=["route", "reason"])
        by_request: dict[tuple[str, ...], int] = {}
        by_tokens: dict[tuple[str, str], int] = {}
        by_limit: dict[str, int] = {}
        by_refusal: dict[tuple[str, str], int] = {}
        for (route, model, status, pclass, outcome), series in self._series.items():
            key = (route, model, str(status), pclass)
            by_request[key] = by_request.get(key, 0) + series.requests
            for direction, count in (("in", series.tokens_in), ("out", series.tokens_out)):
                if count:
                    by_tokens[(model, direction)] = by_tokens.get((model, direction), 0) + count
            if status == 429:
                by_limit[route] = by_limit.get(route, 0) + series.requests
            if outcome in REFUSED:
                by_refusal[(route, outcome)] = by_refusal.get((route, outcome), 0) + series.requests
        for labels, value in by_request.items():
            requests.add_metric(list(labels), value)
        for (model, direction), value in by_tokens.items():
            tokens.add_metric([model, direction], value)
        for route, value in by_limit.items():
            limited.add_metric([route], value)
        for (route, reason), value in by_refusal.items():
            refused.add_metric([route, reason], value)
        yield from (requests, tokens, limited, refused)
        waits: dict[tuple[str, ...], _Histogram] = {}
        first_bytes: dict[tuple[str, ...], _Histogram] = {}
        durations: dict[tuple[str, ...], _Histogram] = {}
        for (model, pclass), times in self._times.items():
            if sum(times.wait.counts):
                waits[(model, pclass)] = times.wait
            _merge(first_bytes, (model,), times.first_byte)
            _merge(durations, (model,), times.duration)
        yield _histogram_family("seadragon_queue_wait_seconds", "Time from entering the queue to a slot",
                                ["model", "priority"], waits)
        yield _histogram_family("seadragon_upstream_first_byte_seconds",
                                "Time from the slot to the backend's first byte", ["model"], first_bytes)
        yield _histogram_family("seadragon_upstream_duration_seconds", "Time from the slot to the request's end",
                                ["model"], durations)

    def _model_label(self, name: str | None) -> str:
        """The model key when some backend serves it: a client's garbage names all read "other".
        Remembered per name (bounded; forgotten when full, so a model served later shows up)."""
        label = OTHER
        if name is not None:
            key = model_key(name)
            if any(key in backend.models for backend in self._backends.backends):
                label = key
        if len(self._models) >= _MODEL_CACHE_LIMIT:
            self._models.clear()
        if label != OTHER:
            self._models[name] = label
        return label


class _Collector:
    """Hands the counted numbers to prometheus-client when it renders a scrape."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.families()


def _merge(table: dict[tuple[str, ...], _Histogram], key: tuple[str, ...], histogram: _Histogram) -> None:
    """Add `histogram` to `table[key]` (a copy made on first use); an empty one adds nothing."""
    if not sum(histogram.counts):
        return
    total = table.get(key)
    if total is None:
        total = table[key] = _Histogram(histogram.bounds)
    total.add(histogram)


def _histogram_family(name: str, doc: str, labels: list[str], series: dict[tuple[str, ...], _Histogram]
                      ) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in series.items():
        family.add_metric(list(values), histogram.buckets(), histogram.sum)
    return family
