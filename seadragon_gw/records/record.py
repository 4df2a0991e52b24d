"""What happened to one request, from arrival to its last byte.

A `RequestRecord` is created when a request arrives, filled in as it moves through the
lifecycle, and finished exactly once (`Recorder.finish`), which publishes it to observers:
metrics, the usage log and rate limiting hang on that one event.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "client_gone", "queue_timeout", "rejected", "upstream_error", "cleared"]

_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestIds:
    """Fresh request ids: 24 hex digits, a random per-process prefix and a counter.

    Unique, not secret (they are echoed and logged), so no system random call per request:
    `secrets.token_hex` was ~5% of the gateway's CPU per proxied request.
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._next = itertools.count(1).__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():012x}"


def request_id_from(header: bytes | None, ids: RequestIds | None = None) -> str:
    """The client's `X-Request-ID` when it is a sane token (so it can be logged and echoed
    safely), else a fresh one."""
    if header is not None:
        text = header.decode("latin-1").strip()
        if _SANE_ID.fullmatch(text):
            return text
    return ids.new() if ids is not None else secrets.token_hex(12)


@dataclass(slots=True, eq=False)
class RequestRecord:
    """Times are on the recorder's wall clock (seconds since the epoch)."""

    request_id: str
    method: str
    route: str
    received_at: float
    credential_kind: str | None = None
    credential_name: str | None = None
    key_id: int | None = None  # an API key's id: two keys may share a name
    client_id: str | None = None
    model: str | None = None
    priority: float | None = None
    effective_priority: float | None = None
    stream: bool = False
    queued_at: float | None = None
    granted_at: float | None = None
    first_byte_at: float | None = None
    finished_at: float | None = None
    status: int = 0
    bytes_out: int = 0
    outcome: Outcome | None = None
    error: str | None = None
    backend: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model_missing: bool = False  # refused: no backend serves the model (the missing-models log)
    profile: str | None = None  # the managed profile the request asked for (an OCR resolution)

    @property
    def queue_wait_s(self) -> float | None:
        if self.queued_at is None or self.granted_at is None:
            return None
        return self.granted_at - self.queued_at
