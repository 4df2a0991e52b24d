"""What each log keeps of a finished request record."""

from __future__ import annotations

from ..model_names import model_key
from ..records.record import RequestRecord
from ..store.crashes import CrashRow
from ..store.usage import UsageValues

_NOT_ERRORS = frozenset({"ok", "client_gone"})


def credential_of(record: RequestRecord) -> str | None:
    """"kind:name" of the credential, None for a request refused before auth."""
    if record.credential_kind is None:
        return None
    return f"{record.credential_kind}:{record.credential_name}"


def client_of(record: RequestRecord) -> str | None:
    """The client's own name (X-Client-ID) when it gave one, else its credential."""
    return record.client_id or credential_of(record)


def usage_row(record: RequestRecord) -> UsageValues:
    """The row of one finished record (`UsageRow`'s fields, as `UsageValues`). Runs once per
    request, when the record finishes (the row waits for the batch's write; the record does
    not): the credential string is made once (it is the client too without an X-Client-ID)."""
    finished = record.finished_at if record.finished_at is not None else record.received_at
    outcome = record.outcome or "ok"
    upstream_s = ttfb_s = None
    if record.backend is not None:
        start = record.granted_at if record.granted_at is not None else record.received_at
        upstream_s = finished - start if finished > start else 0.0
        first = record.first_byte_at
        if first is not None:
            ttfb_s = first - start if first > start else 0.0
    credential = credential_of(record)
    model = record.model
    status = record.status
    return (finished, record.request_id, record.method, record.route, credential, record.client_id or credential,
            model_key(model) if model else None, record.backend, status, outcome,
            0 if outcome in _NOT_ERRORS and status < 400 else 1, 1 if record.stream else 0, record.queue_wait_s,
            ttfb_s, upstream_s, record.prompt_tokens, record.completion_tokens, record.bytes_out, record.profile,
            record.key_id)


def crash_row(record: RequestRecord) -> CrashRow:
    """A request a backend failed: refused, reset, broken mid-stream, 5xx, timed out."""
    error = record.error
    if error is None:
        where = f"backend '{record.backend}'" if record.backend else "the backend"
        error = f"{where} answered HTTP {record.status}"
    return CrashRow(ts=record.finished_at or record.received_at, kind="upstream_error", error=error,
                    model=record.model, request_id=record.request_id, backend=record.backend,
                    route=record.route, status=record.status)
