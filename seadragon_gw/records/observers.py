"""Publishing finished request records to whoever listens, in-process.

Observers run synchronously on the event loop when a record finishes, so they must be quick
(count, append to a batch); anything slow (SQLite) belongs in the observer's own background
flush. One observer that raises is logged and does not stop the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from .record import Outcome, RequestIds, RequestRecord

log = logging.getLogger("seadragon_gw.requests")


class RecordObserver(Protocol):
    def request_finished(self, record: RequestRecord) -> None: ...


class Recorder:
    """Creates records and finishes each exactly once."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.ids = RequestIds()
        self._observers: list[RecordObserver] = []

    def subscribe(self, observer: RecordObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: RecordObserver) -> None:
        self._observers.remove(observer)

    def start(self, request_id: str, method: str, route: str) -> RequestRecord:
        return RequestRecord(request_id, method, route, self.clock())

    def finish(self, record: RequestRecord, outcome: Outcome, status: int, error: str | None = None) -> bool:
        """Close the record and publish it; False if it was finished already."""
        if record.finished_at is not None:
            return False
        record.finished_at = self.clock()
        record.outcome = outcome
        record.status = status
        record.error = error
        for observer in list(self._observers):
            try:
                observer.request_finished(record)
            except Exception:
                log.exception("request observer %r failed", observer)
        return True
