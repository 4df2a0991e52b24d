"""The usage log: one row per finished request, written in batches, aggregated in SQL.

Rows arrive through the usage log's write-behind batch (never from the request path); the
admin API reads them back grouped by client, model, day (UTC) or credential, with the queue
wait and upstream time aggregates computed by SQLite (p95 by nearest rank, with a window
function), so no request list is ever loaded into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from .database import Database

GroupBy = Literal["client", "model", "day", "credential"]

# Grouping expressions by name: the only SQL that is chosen by a caller, from this table. The
# second tells apart API keys that share a name (a credential's group is its name and key id).
_GROUP_SQL: dict[GroupBy | None, tuple[str, str]] = {
    None: ("NULL", "NULL"),
    "client": ("client", "NULL"),
    "model": ("model", "NULL"),
    "credential": ("credential", "key_id"),
    "day": ("date(ts, 'unixepoch')", "NULL"),
}


class UsageRow(NamedTuple):
    """One finished request's columns (the per-request log writes them as `UsageValues`, the
    same values in a plain tuple; a `UsageRow` may be inserted too, a little slower). `credential`
    is "kind:name" (`key_id` the API key's id: names are not unique); `client` the
    X-Client-ID, else the credential; `model` the routing key (`llama3` is `llama3:latest`).
    Times in seconds."""

    ts: float
    request_id: str
    method: str
    route: str
    credential: str | None
    client: str | None
    model: str | None
    backend: str | None
    status: int
    outcome: str
    is_error: bool
    stream: bool
    queue_wait_s: float | None
    ttfb_s: float | None
    upstream_s: float | None
    tokens_in: int | None
    tokens_out: int | None
    bytes_out: int
    profile: str | None = None  # the managed profile asked for (schema v5)
    key_id: int | None = None  # the API key's id (schema v6)


UsageValues = tuple[float, str, str, str, str | None, str | None, str | None, str | None, int, str, int, int,
                    float | None, float | None, float | None, int | None, int | None, int, str | None, int | None]
"""A `UsageRow`'s values as the usage log writes them per request: a plain tuple with 0/1 ints
for the two flags. sqlite3 binds that fastest: a NamedTuple's items are fetched through the
sequence protocol and a bool goes through the adapter lookup (a 20-column row: 2.8 us to
insert, 4.8 us as a NamedTuple with bools). A `UsageRow` is one too, bound the slower way."""

_COLUMNS = ", ".join(UsageRow._fields)
_INSERT = f"INSERT INTO usage_log ({_COLUMNS}) VALUES ({', '.join('?' * len(UsageRow._fields))})"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """`until` is exclusive; None bounds are open. `model` is a routing key."""

    since: float | None = None
    until: float | None = None
    client: str | None = None
    model: str | None = None
    group_by: GroupBy | None = None


@dataclass(frozen=True, slots=True)
class Demand:
    """How many requests for `model` (served by `backend`, asking for `profile`) there were."""

    model: str | None
    backend: str | None
    profile: str | None
    requests: int


@dataclass(frozen=True, slots=True)
class Timing:
    avg: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """`key_id`: grouped by credential, the API key's id (None for other credentials)."""

    key: str | None
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    queue_wait_s: Timing
    upstream_s: Timing
    ttfb_avg_s: float | None
    key_id: int | None = None


class UsageRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_many(self, rows: Sequence[UsageValues]) -> None:
        if not rows:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(_INSERT, rows)

    async def aggregate(self, query: UsageQuery) -> list[UsageGroup]:
        """One group per value of `query.group_by` (one overall group without it)."""
        where, params = _where(query)
        group, sub = _GROUP_SQL[query.group_by]
        rows = await self._db.fetchall(
            f"SELECT {group} AS grp, {sub} AS sub, COUNT(*) AS requests, SUM(is_error) AS errors, "
            "COALESCE(SUM(tokens_in), 0) AS tokens_in, COALESCE(SUM(tokens_out), 0) AS tokens_out, "
            "AVG(queue_wait_s) AS qw_avg, MAX(queue_wait_s) AS qw_max, AVG(upstream_s) AS up_avg, "
            "MAX(upstream_s) AS up_max, AVG(ttfb_s) AS ttfb_avg "
            f"FROM usage_log {where} GROUP BY grp, sub ORDER BY grp, sub", params)
        queue_p95 = await self._p95(group, sub, "queue_wait_s", where, params)
        upstream_p95 = await self._p95(group, sub, "upstream_s", where, params)
        return [UsageGroup(
            key=None if r["grp"] is None else str(r["grp"]), requests=r["requests"], errors=r["errors"] or 0,
            tokens_in=r["tokens_in"], tokens_out=r["tokens_out"],
            queue_wait_s=Timing(r["qw_avg"], queue_p95.get((r["grp"], r["sub"])), r["qw_max"]),
            upstream_s=Timing(r["up_avg"], upstream_p95.get((r["grp"], r["sub"])), r["up_max"]),
            ttfb_avg_s=r["ttfb_avg"], key_id=r["sub"]) for r in rows]

    async def _p95(self, group: str, sub: str, column: str, where: str,
                   params: list[object]) -> dict[tuple[object, object], float]:
        """Nearest-rank 95th percentile of `column` per group: the smallest value whose rank
        is at least 95 % of the group's count."""
        present = f"{where} AND {column} IS NOT NULL" if where else f"WHERE {column} IS NOT NULL"
        rows = await self._db.fetchall(
            "SELECT grp, sub, MIN(v) AS p95 FROM ("
            f" SELECT grp, sub, v, ROW_NUMBER() OVER (PARTITION BY grp, sub ORDER BY v) AS rn,"
            f" COUNT(*) OVER (PARTITION BY grp, sub) AS n"
            f" FROM (SELECT {group} AS grp, {sub} AS sub, {column} AS v FROM usage_log {present})"
            ") WHERE rn * 100 >= n * 95 GROUP BY grp, sub", params)
        return {(r["grp"], r["sub"]): r["p95"] for r in rows}

    async def day_totals(self, since: float) -> dict[tuple[str, int | None], tuple[int, int]]:
        """Per credential ("kind:name" and an API key's id) since `since`: requests that passed
        admission (not refused before queueing) and prompt + completion tokens: what the
        daily quotas count."""
        rows = await self._db.fetchall(
            "SELECT credential, key_id, SUM(outcome != 'rejected') AS requests, "
            "COALESCE(SUM(COALESCE(tokens_in, 0) + COALESCE(tokens_out, 0)), 0) AS tokens "
            "FROM usage_log WHERE ts >= ? AND credential IS NOT NULL GROUP BY credential, key_id", (since,))
        return {(r["credential"], r["key_id"]): (int(r["requests"] or 0), int(r["tokens"])) for r in rows}

    async def demand(self, windows: Sequence[tuple[float, float]]) -> list[Demand]:
        """Requests per model, backend and profile that finished in any of `windows` (each
        `[since, until)`), refusals left out: what auto_switch reads of past days' same hour."""
        if not windows:
            return []
        where = " OR ".join("(ts >= ? AND ts < ?)" for _ in windows)
        rows = await self._db.fetchall(
            f"SELECT model, backend, profile, COUNT(*) AS n FROM usage_log WHERE ({where}) "
            "AND outcome != 'rejected' GROUP BY model, backend, profile ORDER BY model, backend, profile",
            [bound for window in windows for bound in window])
        return [Demand(r["model"], r["backend"], r["profile"], int(r["n"])) for r in rows]

    async def prune(self, before: float) -> int:
        result = await self._db.execute("DELETE FROM usage_log WHERE ts < ?", (before,))
        return result.rowcount


def _where(query: UsageQuery) -> tuple[str, list[object]]:
    terms: list[str] = []
    params: list[object] = []
    for sql, value in (("ts >= ?", query.since), ("ts < ?", query.until), ("client = ?", query.client),
                       ("model = ?", query.model)):
        if value is not None:
            terms.append(sql)
            params.append(value)
    return ("WHERE " + " AND ".join(terms)) if terms else "", params
