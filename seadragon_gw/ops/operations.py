"""The operator's parts of one gateway, built together and hooked into the request lifecycle.

`Operations.build` subscribes the record observers (in-flight tracking, statistics, and the
Prometheus metrics unless `metrics.enabled` is off) and adds the in-flight admission hook,
so the gateway only builds this once and keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..backends.registry import Registry
from ..config import GatewayConfig
from ..lifecycle.service import RequestService
from ..queue.scheduler import Scheduler
from ..store.database import Database
from .health import HealthCheck
from .inflight import InFlight
from .metrics import GatewayMetrics
from .queue_view import QueueView
from .stats import RequestStats


@dataclass(eq=False)
class Operations:
    inflight: InFlight
    stats: RequestStats
    metrics: GatewayMetrics
    queue: QueueView
    health: HealthCheck

    @classmethod
    def build(cls, config: GatewayConfig, registry: Registry, scheduler: Scheduler, requests: RequestService,
              database: Database, clock: Callable[[], float]) -> Operations:
        """`clock` is the wall clock the recorder stamps records with."""
        inflight = InFlight()
        stats = RequestStats(config.stats, clock)
        metrics = GatewayMetrics(registry, scheduler, inflight)
        requests.checks.append(inflight)
        recorder = requests.recorder
        recorder.subscribe(inflight)
        recorder.subscribe(stats)
        if config.metrics.enabled:
            recorder.subscribe(metrics)
        return cls(inflight, stats, metrics, QueueView(config, registry, scheduler, inflight, stats),
                   HealthCheck(config.health, registry, scheduler, database, clock, requests))
