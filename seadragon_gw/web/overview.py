"""What the admin page's overview shows, in one answer (`GET /api/admin/overview`).

The page polls every 2 s; one request that reads the in-memory figures (queue loads, request
statistics, health with its one `SELECT 1`, refusal counters) costs the gateway far less than
the four or five listings it would otherwise fetch, and the figures are of one moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from ..backends.registry import Registry
from ..ops.operations import Operations

_COUNTERS = frozenset({"seadragon_rate_limited", "seadragon_rejected"})


async def overview(ops: Operations, registry: Registry, metrics_on: bool,
                   clock: Callable[[], float]) -> dict[str, Any]:
    """Backends (with a managed one's profile) and health, the load and totals per model, the
    stats, and refusal counts."""
    report = await ops.health.report()
    health = report.as_json(True)
    profiles = {b.name: registry.profile_of(b) for b in registry.backends if b.managed}
    for backend in health["backends"]:
        backend["profile"] = profiles.get(backend["name"])
    models = []
    for load in ops.queue.loads():
        totals = ops.stats.totals(load.model)
        models.append({**load.as_json(), "processed": totals.processed, "failed": totals.failed,
                       "timed_out": totals.timeout})
    return {"time": clock(), "health": health, "stats": ops.queue.stats(), "models": models,
            "counts": refusal_counts(ops.metrics.families()) if metrics_on else None,
            "failed": sum(m["failed"] for m in models), "timed_out": sum(m["timed_out"] for m in models)}


def refusal_counts(families: Iterable[Metric]) -> dict[str, Any]:
    """Since the start: requests refused by a rate limit or quota (429), and those refused,
    cleared or timed out in the queue, by reason. Reads the counter families only (the
    histograms after them are never built)."""
    rate_limited = 0
    rejected: dict[str, int] = {}
    seen = set()
    for family in families:
        if family.name == "seadragon_rate_limited":
            rate_limited = int(sum(s.value for s in family.samples))
        elif family.name == "seadragon_rejected":
            for sample in family.samples:
                reason = sample.labels.get("reason", "other")
                rejected[reason] = rejected.get(reason, 0) + int(sample.value)
        if family.name in _COUNTERS:
            seen.add(family.name)
            if seen == _COUNTERS:
                break
    return {"rate_limited": rate_limited, "rejected": rejected}
