"""`/metrics` families for the process's garbage-collection pacer (seadragon_gw/gc_pacing.py):
how long full collections stalled the gateway, and how often their survivors were frozen and
thawed. Present under `seadragon-gw serve`, which runs the pacer (it only measures when
`server.gc_freeze_after_ms` is null)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..gc_pacing import GcStats


class GcCollector:
    def __init__(self, stats: GcStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats
        yield CounterMetricFamily("seadragon_gc_full_collections", "Full garbage collections (every request "
                                  "stalls while one runs)", value=stats.full_collections)
        yield CounterMetricFamily("seadragon_gc_full_collection_seconds", "Time spent in full garbage collections",
                                  value=stats.seconds)
        yield GaugeMetricFamily("seadragon_gc_longest_full_collection_seconds",
                                "The longest full garbage collection since start", value=stats.longest_s)
        yield CounterMetricFamily("seadragon_gc_freezes", "Times the survivors of a slow full collection "
                                  "(or of start-up, or of a thaw) were frozen", value=stats.freezes)
        yield CounterMetricFamily("seadragon_gc_thaws", "Times the frozen objects were collected again",
                                  value=stats.thaws)
