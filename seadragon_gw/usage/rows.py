"""What each log keeps of a finished request record (converted off the request path)."""

from __future__ import annotations

from ..model_names import model_key
from ..records.record import RequestRecord
from ..store.crashes import CrashRow
from ..store.usage import UsageRow

_NOT_ERRORS = frozenset({"ok", "client_gone"})


def credential_of(record: RequestRecord) -> str | None:
    """"kind:name" of the credential, None for a request refused before auth."""
    if record.credential_kind is None:
        return None
    return f"{record.credential_kind}:{record.credential_name}"


def client_of(record: RequestRecord) -> str | None:
    """The client's own name (X-Client-ID) when it gave one, else its credential."""
    return record.client_id or credential_of(record)


def _upstream_start(record: RequestRecord) -> float:
    """When the backend got the request: the slot grant, or arrival for unqueued routes."""
    return record.granted_at if record.granted_at is not None else record.received_at


def usage_row(record: RequestRecord) -> UsageRow:
    finished = record.finished_at if record.finished_at is not None else record.received_at
    outcome = record.outcome or "ok"
    upstream_s = ttfb_s = None
    if record.backend is not None:
        start = _upstream_start(record)
        upstream_s = max(0.0, finished - start)
        if record.first_byte_at is not None:
            ttfb_s = max(0.0, record.first_byte_at - start)
    return UsageRow(
        ts=finished, request_id=record.request_id, method=record.method, route=record.route,
        credential=credential_of(record), client=client_of(record),
        model=model_key(record.model) if record.model else None, backend=record.backend,
        status=record.status, outcome=outcome, is_error=outcome not in _NOT_ERRORS or record.status >= 400,
        stream=record.stream, queue_wait_s=record.queue_wait_s, ttfb_s=ttfb_s, upstream_s=upstream_s,
        tokens_in=record.prompt_tokens, tokens_out=record.completion_tokens, bytes_out=record.bytes_out,
        profile=record.profile, key_id=record.key_id)


def crash_row(record: RequestRecord) -> CrashRow:
    """A request a backend failed: refused, reset, broken mid-stream, 5xx, timed out."""
    error = record.error
    if error is None:
        where = f"backend '{record.backend}'" if record.backend else "the backend"
        error = f"{where} answered HTTP {record.status}"
    return CrashRow(ts=record.finished_at or record.received_at, kind="upstream_error", error=error,
                    model=record.model, request_id=record.request_id, backend=record.backend,
                    route=record.route, status=record.status)
