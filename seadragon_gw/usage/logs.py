"""The operations logs: usage, crashes, missing models. One record observer feeds all three.

`request_finished` runs on the loop for every finished request and only appends to in-memory
batches (`WriteBatch`); SQLite is written in the background every `usage.flush_s` and pruned
every `usage.prune_s` to `usage.retention_days`. Reads (the admin API) first write what is
pending, so an operator sees the request that just finished.

- usage log: every finished request (`usage.enabled: false` turns only this one off);
- crash log: requests a backend failed (outcome `upstream_error`), backends going down or
  crashing (registry state listener), and the gateway's internal errors with their traceback;
- missing models: requests for a model no backend serves (`record.model_missing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable

from ..backends.registry import Registry
from ..backends.state import BackendState, StateChange
from ..config import UsageConfig
from ..model_names import model_key
from ..records.observers import Recorder
from ..records.record import RequestRecord
from ..store.bundle import Store
from ..store.crashes import CrashRow
from ..store.missing_models import MissingModel
from ..store.usage import UsageGroup, UsageQuery, UsageValues
from .batch import WriteBatch
from .rows import client_of, crash_row, usage_row

log = logging.getLogger("seadragon_gw.usage")
DAY_S = 86400.0
MAX_TRACE_CHARS = 20000
MAX_ERROR_CHARS = 1000
_DOWN = frozenset({BackendState.DOWN, BackendState.CRASHED})


class OpsLogs:
    def __init__(self, store: Store, config: UsageConfig, clock: Callable[[], float] = time.time) -> None:
        self.enabled = config.enabled
        self.config = config
        self._store = store
        self._clock = clock
        every, most = config.flush_s, config.max_batch
        self._usage: WriteBatch[UsageValues] = WriteBatch(
            "usage log", store.usage.insert_many, interval_s=every, max_items=most)
        self._crashes: WriteBatch[CrashRow] = WriteBatch(
            "crash log", store.crashes.insert_many, interval_s=every, max_items=most)
        self._missing: WriteBatch[RequestRecord] = WriteBatch(
            "missing-models log", self._write_missing, interval_s=every, max_items=most)
        self._pruning: asyncio.Task[None] | None = None

    def attach(self, recorder: Recorder, registry: Registry) -> None:
        """Hear every finished request and every backend state change."""
        recorder.subscribe(self)
        registry.listeners.append(self.backend_changed)

    # -- feeding (on the loop, quick) -------------------------------------------------------
    def request_finished(self, record: RequestRecord) -> None:
        if self.enabled:
            # The row, not the record: a tuple of plain values, which the garbage collector
            # stops tracking, where thousands of records waiting for the write (up to a
            # quarter of usage.max_batch) would be walked by every collection; the record is
            # freed at once.
            self._usage.add(usage_row(record))
        if record.outcome == "upstream_error":
            self._crashes.add(crash_row(record))
        elif record.model_missing:
            self._missing.add(record)

    def backend_changed(self, change: StateChange) -> None:
        """Registry listener: a backend going down or crashing is a crash-log entry."""
        if change.new in _DOWN:
            error = f"backend {change.backend}: {change.old.value} -> {change.new.value} ({change.reason})"
            self._crashes.add(CrashRow(ts=self._clock(), kind="backend_down", error=error, backend=change.backend))

    def internal_error(self, exc: BaseException, *, request_id: str | None, route: str | None) -> None:
        """An exception in the gateway itself: kept with its traceback for the operator (the
        client got a plain 500 "internal error")."""
        trace = "".join(traceback.format_exception(exc))
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._crashes.add(CrashRow(ts=self._clock(), kind="internal_error", error=error[:MAX_ERROR_CHARS],
                                   request_id=request_id, route=route, status=500,
                                   stack_trace=trace[-MAX_TRACE_CHARS:]))

    # -- background -------------------------------------------------------------------------
    def start(self) -> None:
        for batch in self._batches():
            batch.start()
        if self._pruning is None:
            self._pruning = asyncio.create_task(self._prune_loop(), name="usage-prune")

    async def close(self) -> None:
        """Stop pruning and write everything still pending (before the store closes)."""
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
            self._pruning = None
        for batch in self._batches():
            await batch.close()

    def pending(self) -> dict[str, int]:
        """Records waiting to be written, per log (bounded by `usage.max_batch` each)."""
        return {batch.name: batch.pending for batch in self._batches()}

    async def flush(self) -> None:
        for batch in self._batches():
            await batch.flush()

    async def prune(self) -> int:
        """Drop what is older than `usage.retention_days`; returns the rows removed."""
        before = self._clock() - self.config.retention_days * DAY_S
        store = self._store
        removed = 0
        for repo in (store.usage, store.crashes, store.missing_models):
            removed += await repo.prune(before)
        return removed

    async def _prune_loop(self) -> None:
        while True:
            try:
                removed = await self.prune()
            except Exception as exc:  # the database may be read-only or gone: try next time
                log.debug("usage log: pruning failed: %s", exc)
            else:
                if removed:
                    log.info("usage log: pruned %d row(s) older than %g days", removed, self.config.retention_days)
            await asyncio.sleep(self.config.prune_s)

    def _batches(self) -> tuple[WriteBatch[UsageValues], WriteBatch[CrashRow], WriteBatch[RequestRecord]]:
        return self._usage, self._crashes, self._missing

    async def _write_missing(self, records: list[RequestRecord]) -> None:
        """One row per (model, client) with its count, however many requests asked."""
        seen: dict[tuple[str, str], MissingModel] = {}
        for record in records:
            name = record.model or ""
            when = record.finished_at or record.received_at
            key = (model_key(name), client_of(record) or "")
            old = seen.get(key)
            count, first = (old.count + 1, min(old.first_seen, when)) if old else (1, when)
            seen[key] = MissingModel(key[0], key[1], name, count, first, when)
        await self._store.missing_models.add_many(list(seen.values()))

    # -- reading (the admin API) ------------------------------------------------------------
    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        await self.flush()
        return await self._store.usage.aggregate(query)

    async def crashes(self, limit: int) -> list[CrashRow]:
        await self._crashes.flush()
        return await self._store.crashes.recent(limit)

    async def missing_models(self, limit: int) -> list[MissingModel]:
        await self._missing.flush()
        return await self._store.missing_models.recent(limit)

    async def today(self) -> dict[tuple[str, int | None], tuple[int, int]]:
        """Requests and tokens per credential ("kind:name", API key id) since the last UTC
        midnight (daily quotas)."""
        if not self.enabled:
            return {}
        midnight = (self._clock() // DAY_S) * DAY_S
        return await self._store.usage.day_totals(midnight)
