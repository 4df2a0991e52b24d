"""The SDK without I/O: requests as data, plans as generators, answers parsed once.

Every operation is a *plan*: a generator that yields steps (`Call`: send this request;
`Sleep`: wait this long) and gets the `Reply` of each call back. The sync and the async
client only differ in how they carry out a step (`sync.py`, `aio.py`), so login, token
refresh, job polling and error parsing are written once, here and in `operations.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from .errors import GatewayError, StreamError, error_for

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One HTTP request. `auth`: send the client's credential (and renew it on a 401);
    `stream`: leave a 2xx answer open for reading line by line."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: bool = True
    stream: bool = False

    def with_headers(self, extra: Mapping[str, str]) -> Call:
        return replace(self, headers={**self.headers, **extra})


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass
class Reply:
    """An answer: status, headers (lower-case names), body; `stream` is the transport's open
    response for a 2xx answer to a streaming call (its body is then not read yet)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    stream: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Step = Call | Sleep
Plan = Generator[Step, "Reply | None", T]


def send(call: Call) -> Generator[Step, Reply | None, Reply]:
    """Yield one call and return its reply (a plan's `yield from send(call)`)."""
    reply = yield call
    assert reply is not None, "the transport answers every Call with a Reply"
    return reply


def wait(seconds: float) -> Generator[Step, Reply | None, None]:
    yield Sleep(seconds)


def message_of(body: bytes) -> str:
    """The server's error text from either error shape, else the body itself."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip() or "no message"
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return error
    return body.decode("utf-8", "replace")


def check(reply: Reply) -> Reply:
    """The reply if it is a success, else its typed error."""
    if reply.ok:
        return reply
    retry = reply.headers.get("retry-after")
    raise error_for(reply.status, message_of(reply.body), request_id=reply.headers.get("x-request-id"),
                    retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
                    body=reply.body)


def json_of(reply: Reply) -> Any:
    check(reply)
    try:
        return orjson.loads(reply.body) if reply.body else None
    except orjson.JSONDecodeError:
        raise GatewayError(reply.status, f"the answer is not JSON: {reply.body[:200]!r}",
                           request_id=reply.headers.get("x-request-id"), body=reply.body) from None


# -- streams ----------------------------------------------------------------------------
class End:
    """A decoder's answer for the stream's last line (SSE's `[DONE]`)."""


SKIP: Any = None
END = End()
Decoder = Callable[[str], Any]


def ndjson_line(line: str) -> Any:
    """One NDJSON line as an object; an in-band `{"error": ...}` raises StreamError."""
    if not line.strip():
        return SKIP
    item = orjson.loads(line)
    if isinstance(item, dict) and "error" in item and len(item) == 1:
        raise StreamError(200, message_of(line.encode()))
    return item


def sse_line(line: str) -> Any:
    """One SSE line: a `data:` event's JSON, END at `[DONE]`, SKIP for comments and blanks."""
    if not line.startswith("data:"):
        return SKIP  # blank separators, ": queued" keep-alives, event names
    data = line[5:].strip()
    if data == "[DONE]":
        return END
    item = orjson.loads(data)
    if isinstance(item, dict) and "error" in item and "choices" not in item:
        raise StreamError(200, message_of(data.encode()))
    return item


@dataclass(frozen=True)
class StreamPlan:
    """A stream: the plan that opens it (its last reply is open) and how to read a line."""

    open: Plan[Reply]
    decode: Decoder
