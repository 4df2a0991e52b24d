"""The queue as operators and callers see it: load per model, who waits, clearing, stats.

Read-only views over the scheduler, the backends and the request statistics, shaped as the
JSON the routes answer, plus the one write: answering every waiting request at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..auth.principal import Principal
from ..backends.registry import Registry
from ..config import GatewayConfig
from ..errors import NotFound
from ..queue.errors import QueueCleared
from ..queue.scheduler import Scheduler, WaitingRequest
from .inflight import InFlight
from .stats import RequestStats, WaitSummary

log = logging.getLogger("seadragon_gw.queue")


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """One model's queue: waiting (all its queues), processing, slots of the backends serving it."""

    model: str
    waiting: int
    processing: int
    max_concurrent: int

    @property
    def utilization(self) -> float:
        return self.processing / self.max_concurrent if self.max_concurrent else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "waiting": self.waiting, "processing": self.processing,
                "max_concurrent": self.max_concurrent}


def _mine(waiting: WaitingRequest, principal: Principal) -> bool:
    record = waiting.record
    if record is None:
        return False
    if principal.key_id is not None:  # API keys by id: two keys may share a name
        return record.key_id == principal.key_id
    return (record.credential_kind, record.credential_name) == (principal.kind, principal.name)


def waiting_json(waiting: WaitingRequest, full: bool) -> dict[str, Any]:
    """A waiting request; `full` (for admins) adds who sent it and its priorities."""
    record = waiting.record
    item: dict[str, Any] = {"request_id": record.request_id if record else None, "model": waiting.model,
                            "position": waiting.position, "waited_s": round(waiting.waited_s, 3)}
    if full:
        item.update({"credential": {"kind": record.credential_kind if record else None,
                                    "name": record.credential_name if record else None},
                     "client_id": record.client_id if record else None, "priority": waiting.priority,
                     "effective_priority": round(waiting.effective_priority, 4)})
    return item


class QueueView:
    def __init__(self, config: GatewayConfig, registry: Registry, scheduler: Scheduler, inflight: InFlight,
                 stats: RequestStats) -> None:
        self.config = config
        self._registry = registry
        self._scheduler = scheduler
        self._inflight = inflight
        self._stats = stats

    # -- load ---------------------------------------------------------------------------
    def loads(self) -> list[ModelLoad]:
        """Every model a backend serves, or that has waiting or running requests."""
        waiting = self._waiting_by_model()
        processing = self._inflight.processing()
        models = {m for b in self._registry.backends for m in b.models} | set(waiting) | set(processing)
        return [self._load(m, waiting, processing) for m in sorted(models)]

    def load(self, key: str) -> ModelLoad | None:
        waiting, processing = self._waiting_by_model(), self._inflight.processing()
        if not self._registry.serving((key, None)) and not waiting[key] and not processing[key]:
            return None
        return self._load(key, waiting, processing)

    def _load(self, key: str, waiting: Counter[str], processing: Counter[str]) -> ModelLoad:
        slots = sum(b.config.max_concurrent for b in self._registry.serving((key, None)))
        return ModelLoad(key, waiting[key], processing[key], slots)

    def _waiting_by_model(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (model, _kind), queue in self._scheduler.queues.items():
            counts[model] += len(queue)
        return counts

    # -- answers ------------------------------------------------------------------------
    def status(self, principal: Principal) -> dict[str, Any]:
        """`GET /api/queue/status`: the load per model, and the caller's own waiting requests
        (an admin's: everyone's, with who and priorities)."""
        full = principal.is_admin
        waiting = [w for w in self._scheduler.waiting_requests() if full or _mine(w, principal)]
        return {"models": [load.as_json() for load in self.loads()],
                "waiting": [waiting_json(w, full) for w in waiting]}

    def model_detail(self, name: str, key: str) -> dict[str, Any]:
        """`GET /api/admin/queue/{model}`: seed 004's fields, plus recent waits per class."""
        load = self.load(key)
        if load is None:
            raise NotFound(f"model '{name}' not found")
        totals = self._stats.totals(key)
        return {"model": name, "processing": load.processing, "waiting": load.waiting,
                "max_concurrent": load.max_concurrent, "max_waiting": self.config.queue.max_waiting,
                "total_processed": totals.processed, "total_failed": totals.failed,
                "total_timeout": totals.timeout, "utilization": round(load.utilization, 4),
                "wait_seconds": self._waits(key)}

    def stats(self) -> dict[str, Any]:
        """`GET /api/admin/stats` (seed 001), from measurements over the stats windows."""
        overall, by_class = self._stats.summaries(None)
        return {"queue_length": self._scheduler.waiting(),
                "active_requests": self._scheduler.processing(),
                "requests_per_minute": round(self._stats.requests_per_minute(), 3),
                "average_wait_time": round(overall.mean, 4) if overall.mean is not None else 0.0,
                "wait_seconds": self._waits_json(by_class)}

    def _waits(self, key: str | None) -> dict[str, Any]:
        return self._waits_json(self._stats.waits_by_class(key))

    def _waits_json(self, by_class: dict[str, WaitSummary]) -> dict[str, Any]:
        return {"window_s": self._stats.config.window_s, **{c: s.as_json() for c, s in by_class.items()}}

    def clear(self, name: str | None, key: str | None, who: Principal) -> int:
        """Answer every waiting request (of one model) with "queue cleared"; running ones go on."""
        if key is not None and self.load(key) is None:
            raise NotFound(f"model '{name}' not found")
        cleared = self._scheduler.reject_waiting(key, QueueCleared())
        log.warning("queue cleared by %s %s: %d waiting request(s)%s", who.kind, who.name, cleared,
                    f" for model '{name}'" if name else "")
        return cleared
