"""Prometheus metrics of one gateway, counted from finished request records.

Each gateway has its own `CollectorRegistry` (never the library's global one), so two
gateways in one process, as in the tests, never share a count. The record observer runs on
the event loop for every request, so it stays cheap: prometheus-client's `labels()` lookup
(validation, a lock, a dict keyed by a fresh tuple) is done once per label combination and
the children are kept in a dict, so a request costs one dict lookup plus the increments.

Label values are bounded: `route` is a known route template (else "other"), `model` a model
some backend serves (else "other"), `status` an HTTP status, `priority` one of four classes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return BLOBS_ROUTE if path.startswith(BLOBS_PREFIX) else OTHER


class _Series:
    """The children one label combination updates. The request counter is made at once; the
    others when first used, so a combination that never waits or counts tokens (a 404) shows
    no empty series."""

    __slots__ = ("_metrics", "_model", "_pclass", "requests", "rate_limited", "refused", "_wait", "_first_byte",
                 "_duration", "_tokens_in", "_tokens_out")

    def __init__(self, metrics: GatewayMetrics, route: str, model: str, status: int, pclass: str,
                 outcome: str) -> None:
        self._metrics, self._model, self._pclass = metrics, model, pclass
        self.requests = metrics.requests.labels(route, model, str(status), pclass)
        self.rate_limited = metrics.rate_limited.labels(route) if status == 429 else None
        self.refused = metrics.refused.labels(route, outcome) if outcome in REFUSED else None
        self._wait: Histogram | None = None
        self._first_byte: Histogram | None = None
        self._duration: Histogram | None = None
        self._tokens_in: Counter | None = None
        self._tokens_out: Counter | None = None

    def wait(self) -> Histogram:
        if self._wait is None:
            self._wait = self._metrics.queue_wait.labels(self._model, self._pclass)
        return self._wait

    def first_byte(self) -> Histogram:
        if self._first_byte is None:
            self._first_byte = self._metrics.first_byte.labels(self._model)
        return self._first_byte

    def duration(self) -> Histogram:
        if self._duration is None:
            self._duration = self._metrics.duration.labels(self._model)
        return self._duration

    def tokens_in(self) -> Counter:
        if self._tokens_in is None:
            self._tokens_in = self._metrics.tokens.labels(self._model, "in")
        return self._tokens_in

    def tokens_out(self) -> Counter:
        if self._tokens_out is None:
            self._tokens_out = self._metrics.tokens.labels(self._model, "out")
        return self._tokens_out


class GatewayMetrics:
    """The record observer behind `/metrics`, and the registry it renders."""

    def __init__(self, registry: Registry, scheduler: Scheduler, inflight: InFlight) -> None:
        self._backends = registry
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("seadragon_requests", "Finished requests", ["route", "model", "status", "priority"],
                                registry=reg)
        self.queue_wait = Histogram("seadragon_queue_wait_seconds", "Time from entering the queue to a slot",
                                    ["model", "priority"], buckets=WAIT_BUCKETS, registry=reg)
        self.first_byte = Histogram("seadragon_upstream_first_byte_seconds",
                                    "Time from the slot to the backend's first byte", ["model"],
                                    buckets=FIRST_BYTE_BUCKETS, registry=reg)
        self.duration = Histogram("seadragon_upstream_duration_seconds",
                                  "Time from the slot to the request's end", ["model"],
                                  buckets=DURATION_BUCKETS, registry=reg)
        self.tokens = Counter("seadragon_tokens", "Tokens in (prompt) and out (completion)",
                              ["model", "direction"], registry=reg)
        self.rate_limited = Counter("seadragon_rate_limited", "Requests refused by a rate limit or quota (429)",
                                    ["route"], registry=reg)
        self.refused = Counter("seadragon_rejected", "Requests refused, cleared or timed out in the queue",
                               ["route", "reason"], registry=reg)
        reg.register(LiveGauges(registry, scheduler, inflight))
        self._series: dict[tuple[str, str, int, str, str], _Series] = {}

    def request_finished(self, record: RequestRecord) -> None:
        outcome = record.outcome or "ok"
        label = (route_label(record.route), self._model_label(record.model), record.status,
                 priority_class(record.priority), outcome)
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = _Series(self, *label)
        series.requests.inc()
        if series.rate_limited is not None:
            series.rate_limited.inc()
        if series.refused is not None:
            series.refused.inc()
        _observe_times(series, record)
        if record.prompt_tokens:
            series.tokens_in().inc(record.prompt_tokens)
        if record.completion_tokens:
            series.tokens_out().inc(record.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _model_label(self, name: str | None) -> str:
        """The model key when some backend serves it: a client's garbage names all read "other"."""
        if name is None:
            return OTHER
        key = model_key(name)
        for backend in self._backends.backends:
            if key in backend.models:
                return key
        return OTHER


def _observe_times(series: _Series, record: RequestRecord) -> None:
    granted = record.granted_at
    if granted is None:
        return
    if record.queued_at is not None:
        series.wait().observe(granted - record.queued_at)
    if record.backend is None:
        return
    if record.first_byte_at is not None:
        series.first_byte().observe(record.first_byte_at - granted)
    if record.finished_at is not None:
        series.duration().observe(record.finished_at - granted)
