"""Gauges read at scrape time: queue depth per model, backend up and in-flight.

These are state, not events, so nothing is counted on the request path: a scrape reads the
scheduler's queues and the backends as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from ..backends.registry import Registry
from ..queue.scheduler import Scheduler
from .inflight import InFlight


class LiveGauges:
    """A prometheus-client collector over one gateway's queues and backends. Labels are model
    keys with a queue or a request in progress (so only routed, served models) and
    configured backend names."""

    def __init__(self, registry: Registry, scheduler: Scheduler, inflight: InFlight) -> None:
        self._registry = registry
        self._scheduler = scheduler
        self._inflight = inflight

    def collect(self) -> Iterable[Metric]:
        yield from self._queue()
        yield from self._backends()

    def _queue(self) -> Iterable[Metric]:
        depth: Counter[str] = Counter()
        for (model, _kind), queue in self._scheduler.queues.items():
            depth[model] += len(queue)
        waiting = GaugeMetricFamily("seadragon_queue_waiting", "Requests waiting in the queue, per model",
                                    labels=["model"])
        for model, count in sorted(depth.items()):
            waiting.add_metric([model], count)
        processing = GaugeMetricFamily("seadragon_queue_processing",
                                       "Requests holding a backend slot, per model", labels=["model"])
        for model, count in sorted(self._inflight.processing().items()):
            processing.add_metric([model], count)
        return (waiting, processing)

    def _backends(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("seadragon_backend_up", "1 if the backend is up (takes work), else 0",
                               labels=["backend"])
        in_flight = GaugeMetricFamily("seadragon_backend_in_flight", "Backend slots in use", labels=["backend"])
        slots = GaugeMetricFamily("seadragon_backend_max_concurrent", "Backend slots configured",
                                  labels=["backend"])
        for backend in self._registry.backends:
            up.add_metric([backend.name], 1 if backend.healthy else 0)
            in_flight.add_metric([backend.name], backend.active)
            slots.add_metric([backend.name], backend.config.max_concurrent)
        return (up, in_flight, slots)
