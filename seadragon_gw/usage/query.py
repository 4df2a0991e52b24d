"""Reading the admin API's query parameters for the operations logs, with errors that name them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast, get_args

from ..errors import InvalidInput
from ..model_names import model_key
from ..store.usage import GroupBy, UsageQuery

USAGE_PARAMS = frozenset({"since", "until", "client", "model", "group_by"})
GROUPS: tuple[str, ...] = get_args(GroupBy)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def reject_unknown(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown query parameter (allowed: {', '.join(sorted(allowed))})")


def parse_time(name: str, text: str) -> float:
    """Epoch seconds (`1700000000`, `1700000000.5`) or ISO 8601 (`2025-01-31`,
    `2025-01-31T12:00:00Z`, with an offset); a time without an offset is UTC."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"{name}: must be an ISO 8601 time or epoch seconds, got {text!r}")
        return value
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: must be an ISO 8601 time or epoch seconds, got {text[:64]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_usage_query(params: Mapping[str, str]) -> UsageQuery:
    reject_unknown(params, USAGE_PARAMS)
    since = parse_time("since", params["since"]) if "since" in params else None
    until = parse_time("until", params["until"]) if "until" in params else None
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since: must be before until")
    group = params.get("group_by")
    if group is not None and group not in GROUPS:
        raise InvalidInput(f"group_by: must be one of {', '.join(GROUPS)}, got {group[:64]!r}")
    model = params.get("model")
    return UsageQuery(since=since, until=until, client=params.get("client") or None,
                      model=model_key(model) if model else None, group_by=cast("GroupBy | None", group))


def parse_limit(params: Mapping[str, str]) -> int:
    """`limit` (1..1000, default 100): how many entries, newest first."""
    reject_unknown(params, frozenset({"limit"}))
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {text[:64]!r}")
    return int(text)
