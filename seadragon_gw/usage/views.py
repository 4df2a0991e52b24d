"""The JSON shapes of the operations logs (seed 004's field names where it has them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..store.crashes import CrashRow
from ..store.missing_models import MissingModel
from ..store.usage import Timing, UsageGroup, UsageQuery


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _timing(t: Timing) -> dict[str, float | None]:
    return {"avg": t.avg, "p95": t.p95, "max": t.max}


def group_json(query: UsageQuery, group: UsageGroup) -> dict[str, Any]:
    head: dict[str, Any] = {} if query.group_by is None else {query.group_by: group.key}
    if query.group_by == "credential":
        head["key_id"] = group.key_id  # two API keys may share a name
    return {**head, "requests": group.requests, "errors": group.errors, "tokens_in": group.tokens_in,
            "tokens_out": group.tokens_out, "queue_wait_s": _timing(group.queue_wait_s),
            "upstream_s": _timing(group.upstream_s), "time_to_first_byte_s": {"avg": group.ttfb_avg_s}}


def usage_json(query: UsageQuery, groups: list[UsageGroup]) -> dict[str, Any]:
    return {"since": iso(query.since), "until": iso(query.until), "client": query.client, "model": query.model,
            "group_by": query.group_by, "groups": [group_json(query, g) for g in groups]}


def crash_json(row: CrashRow) -> dict[str, Any]:
    return {"timestamp": iso(row.ts), "error": row.error, "model": row.model, "request_id": row.request_id,
            "stack_trace": row.stack_trace, "kind": row.kind, "backend": row.backend, "route": row.route,
            "status": row.status}


def missing_json(entry: MissingModel) -> dict[str, Any]:
    return {"model_name": entry.model_name, "client_id": entry.client or None, "timestamp": iso(entry.last_seen),
            "count": entry.count, "first_seen": iso(entry.first_seen), "last_seen": iso(entry.last_seen)}
