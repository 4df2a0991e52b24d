"""Reading a multipart/form-data body just far enough to route it, without reading its upload.

`/v1/audio/transcriptions` names its model in a form field of a multipart body that also carries
an audio file of any size. The gateway must know the model before it queues the request, and
must not hold the upload in memory to find it. `PartScanner` is fed the body's bytes as they
arrive and reports each part's name as it starts, and the value of small fields it was asked
to capture (only `model` here) as they end; it keeps no more than a delimiter's length of an
uninteresting part. The same scanner keeps watching the rest of the body while it streams
through, so a `model` field after the file cannot name another model than the one routed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInput

MAX_PART_HEADERS = 16 * 1024
MAX_FIELD_BYTES = 1024
_BOUNDARY = re.compile(rb'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_PARAM = re.compile(rb';\s*(name|filename)="([^"]*)"', re.IGNORECASE)


def boundary_of(content_type: bytes | None) -> bytes:
    """The boundary of a multipart/form-data body, or InvalidInput naming what is wrong."""
    if content_type is None or not content_type.lower().startswith(b"multipart/form-data"):
        raise InvalidInput("expected a multipart/form-data body (the audio file and its form fields)")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidInput("the multipart/form-data content type has no boundary")
    return match.group(1)


@dataclass(frozen=True, slots=True)
class Part:
    """A part that started: its form field name, and its file name if it is a file."""

    name: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class Field:
    """A captured small field that ended, with its value."""

    name: str
    value: str


Event = Part | Field


class PartScanner:
    def __init__(self, boundary: bytes, capture: frozenset[str]) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._capture = capture
        self._buffer = b"\r\n"  # the body's first delimiter has no line break before it
        self._in_headers = False
        self._after_delimiter = False
        self._field: str | None = None  # the captured part being read
        self._value = b""
        self.ended = False

    def feed(self, data: bytes) -> list[Event]:
        """The parts that started and the captured fields that ended in `data`."""
        self._buffer += data
        events: list[Event] = []
        while not self.ended and self._step(events):
            pass
        return events

    def _step(self, events: list[Event]) -> bool:
        """One piece of work on the buffer; False when more bytes are needed."""
        if self._after_delimiter:
            if len(self._buffer) < 2:
                return False
            self._after_delimiter = False
            if self._buffer.startswith(b"--"):
                self.ended = True
                return False
            self._buffer = self._buffer[2:]  # the line break before the part's headers
            self._in_headers = True
            return True
        if self._in_headers:
            return self._headers(events)
        return self._body(events)

    def _headers(self, events: list[Event]) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_PART_HEADERS:
                raise InvalidInput("a multipart part's headers are too long")
            return False
        head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
        self._in_headers = False
        params = {k.lower().decode(): v.decode("utf-8", "replace") for k, v in _PARAM.findall(head)}
        part = Part(params.get("name", ""), params.get("filename"))
        events.append(part)
        self._field = part.name if part.filename is None and part.name in self._capture else None
        self._value = b""
        return True

    def _body(self, events: list[Event]) -> bool:
        at = self._buffer.find(self._delimiter)
        if at < 0:
            keep = len(self._delimiter) - 1
            self._take(self._buffer[:-keep] if len(self._buffer) > keep else b"")
            self._buffer = self._buffer[-keep:] if len(self._buffer) > keep else self._buffer
            return False
        self._take(self._buffer[:at])
        self._buffer = self._buffer[at + len(self._delimiter):]
        if self._field is not None:
            events.append(Field(self._field, self._value.decode("utf-8", "replace").strip()))
            self._field = None
        self._after_delimiter = True
        return True

    def _take(self, data: bytes) -> None:
        if self._field is not None and data:
            self._value += data
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidInput(f"the multipart field '{self._field}' is longer than {MAX_FIELD_BYTES} bytes")
