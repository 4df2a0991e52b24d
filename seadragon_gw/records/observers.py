"""Publishing finished request records to whoever listens, in-process.

Observers run on the event loop, so they must be quick (count, append to a batch); anything
slow (SQLite) belongs in the observer's own background flush. One observer that raises is
logged and does not stop the others.

They hear finished records in batches, not one by one: `finish` queues the record, and after
the callbacks that were ready before it (`call_soon`) `publish` hands every observer the
whole batch in turn. Run in the middle of each request's own code, the observers (metrics,
usage log, limits, stats) found their code and data cold every time; run back to back over
the batch, they do not. With the operator features on, that is 119 -> 110 us of CPU per
proxied request (off: 103 -> 97; bench/RESULTS.md). The delay is about one turn of the loop:
a request or admin read that arrives after a request has finished runs its code in a task
step queued after the publish, and finds it counted.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, clock: Callable[[], float] = time.time,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the one the records finish on (the gateway's). Without it each batch asks
        asyncio for the running loop, which in Python 3.11 costs a getpid() system call."""
        self.clock = clock
        self.ids = RequestIds()
        self._loop = loop
        self._observers: list[RecordObserver] = []
        self._finished: list[RequestRecord] = []  # finished, not yet published

    def subscribe(self, observer: RecordObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: RecordObserver) -> None:
        self._observers.remove(observer)

    def start(self, request_id: str, method: str, route: str) -> RequestRecord:
        return RequestRecord(request_id, method, route, self.clock())

    def finish(self, record: RequestRecord, outcome: Outcome, status: int, error: str | None = None) -> bool:
        """Close the record and queue it for the observers (at once without a running loop);
        False if it was finished already."""
        if record.finished_at is not None:
            return False
        record.finished_at = self.clock()
        record.outcome = outcome
        record.status = status
        record.error = error
        finished = self._finished
        finished.append(record)
        if len(finished) == 1:  # the first of a batch: publish once the loop has run what is ready
            loop = self._loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop (a synchronous caller)
                    self.publish()
                    return True
            loop.call_soon(self.publish)
        return True

    def publish(self) -> None:
        """Hand every record finished since the last call to the observers, each observer the
        whole batch in turn. (Also called before the gateway writes its logs for the last time.)"""
        records = self._finished
        if not records:
            return
        self._finished = []
        for observer in list(self._observers):
            heard = observer.request_finished
            for record in records:
                try:
                    heard(record)
                except Exception:
                    log.exception("request observer %r failed", observer)
