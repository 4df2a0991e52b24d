"""Which models the requests holding backend slots are for: the `processing` figures.

The scheduler counts slots per backend (`Backend.active`), but one backend serves many
models and only a request's record says which one it is for. So this follows each admitted
request: as an admission check (run after routing, before queueing; it never refuses) it
starts following the record, and as a record observer it lets go when the record finishes.
A followed record is processing once it entered a queue and was granted its slot.
"""

from __future__ import annotations

from collections import Counter

from ..auth.principal import Principal
from ..model_names import model_key
from ..records.record import RequestRecord


class InFlight:
    """Admitted, unfinished records; at most the requests the gateway holds open."""

    def __init__(self) -> None:
        self._records: set[RequestRecord] = set()

    def check(self, record: RequestRecord, principal: Principal) -> None:
        self._records.add(record)

    def request_finished(self, record: RequestRecord) -> None:
        self._records.discard(record)

    def processing(self) -> Counter[str]:
        """Requests holding a slot, per model key."""
        counts: Counter[str] = Counter()
        for record in self._records:
            if record.granted_at is not None and record.queued_at is not None and record.model is not None:
                counts[model_key(record.model)] += 1
        return counts
