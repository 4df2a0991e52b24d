"""The HTTP server's edges (issue 6, section 3): what one unauthenticated client can make the
gateway hold or parse.

Raw sockets for what an HTTP client library would refuse to send (oversized heads, slow heads,
stalled bodies, idle connections); httpx for the ordinary requests served meanwhile. Deadlines
are set small through the config, and every wait is a bounded wait for a condition.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from seadragon_gw.config import ConfigError, ServerConfig, parse_config
from seadragon_gw.secret_tokens import DISPLAY_PREFIX_LEN
from seadragon_gw.server import EdgeLimits, redact_target
from seadragon_gw.server.cap import ConnectionCap
from seadragon_gw.server.protocol import GatewayHttpProtocol
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat
from tests.support.server import ThreadedServer

WAIT_S = 10.0  # the bound on any wait for the server to act


# -- raw HTTP helpers ---------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str = "/api/version", method: str = "GET", fields: list[str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw", *(fields or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` responses with Content-Length bodies (status, body), leaving the connection open.
    Several may arrive in one read, so the bytes past one response belong to the next."""
    data, responses = b"", list[tuple[int, bytes]]()
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response head: {data!r}"
            data += chunk
        raw_head, _, data = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a response body"
            data += chunk
        responses.append((int(lines[0].split()[1]), data[:length]))
        data = data[length:]
    assert not data, f"bytes after the last response: {data!r}"
    return responses


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    return read_responses(sock, 1)[0]


def answer(data: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of the one whole response in `data`."""
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the server closed `sock` (EOF or reset) within `seconds`; bytes are discarded."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
    return False


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Records(logging.Handler):
    """Collects records of the gateway's and uvicorn's loggers (uvicorn's do not propagate)."""

    NAMES = ("", "uvicorn", "uvicorn.error", "uvicorn.access")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {self.format(r) if r.exc_info else ''}"
                         for r in self.records)


@contextlib.contextmanager
def recording() -> Iterator[Records]:
    """Attach after the server started: uvicorn's logging setup replaces handlers at start."""
    handler = Records()
    for name in Records.NAMES:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in Records.NAMES:
            logging.getLogger(name).removeHandler(handler)


def no_requests_in_flight(gw: RunningGateway) -> bool:
    """Whether uvicorn has no ASGI task left (read on the server's loop)."""

    async def idle() -> bool:
        assert gw.server.server is not None
        return not gw.server.server.server_state.tasks

    return gw.server.call(idle)


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["header_timeout_s", "body_timeout_s", "keepalive_s", "max_connections"])
@pytest.mark.parametrize("value", [0, -1])
def test_server_deadlines_and_cap_must_be_positive(key: str, value: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {key: value}})
    assert str(caught.value) == f"server.{key}: must be positive"


def test_server_edge_defaults() -> None:
    server = parse_config({}).server
    assert (server.header_timeout_s, server.body_timeout_s, server.keepalive_s, server.max_connections) == \
        (10.0, 30.0, 5.0, 1024)


# -- request head limits ------------------------------------------------------------------------


@pytest.fixture
def gw(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    return gateways.start([backend], server={"header_timeout_s": 5, "keepalive_s": 5})


def send_head(gw: RunningGateway, data: bytes) -> bytes:
    with connect(gw.server.port) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def test_100_header_fields_are_served_101_are_431(gw: RunningGateway) -> None:
    fields = [f"X-Field-{i}: {i}" for i in range(98)] + ["Connection: close"]  # + Host = 100
    status, _, body = answer(send_head(gw, head(fields=fields)))
    assert status == 200 and "version" in body

    data = send_head(gw, head(fields=[*fields, "X-One-More: 1"]))
    status, headers, body = answer(data)
    assert (status, body) == (431, {"error": "more than 100 header fields"})
    assert headers["connection"] == "close"


def test_header_field_over_8_kib_is_431(gw: RunningGateway) -> None:
    name = "X-Big"
    fits = f"{name}: {'a' * (8192 - len(name))}"  # name + value = 8192 bytes
    status, _, _ = answer(send_head(gw, head(fields=[fits, "Connection: close"])))
    assert status == 200

    status, _, body = answer(send_head(gw, head(fields=[fits + "a", "Connection: close"])))
    assert (status, body) == (431, {"error": "header field 'X-Big' larger than 8192 bytes"})


def head_of_size(size: int) -> bytes:
    """A GET head of exactly `size` bytes, in fields under 8 KiB each."""
    fields = ["Connection: close"]
    while len(head(fields=fields)) + 8000 < size:
        fields.append(f"X-Pad-{len(fields)}: " + "p" * 7980)
    fields.append("X-Last: ")
    fields[-1] += "l" * (size - len(head(fields=fields)))
    data = head(fields=fields)
    assert len(data) == size
    return data


def test_head_of_64_kib_is_served_one_byte_more_is_431(gw: RunningGateway) -> None:
    status, _, _ = answer(send_head(gw, head_of_size(64 * 1024)))
    assert status == 200

    status, _, body = answer(send_head(gw, head_of_size(64 * 1024 + 1)))
    assert (status, body) == (431, {"error": "request head larger than 65536 bytes"})


def test_150_mb_header_is_cut_off_early_and_others_are_served_meanwhile(gw: RunningGateway) -> None:
    total = 150 * 1024 * 1024
    chunk = b"a" * (1024 * 1024)
    attacker = connect(gw.server.port)
    attacker.sendall(head(fields=["X-Huge: "])[:-4] + b"a" * 30_000)  # a head under way, not past a limit
    sent = 30_000

    with httpx.Client(timeout=WAIT_S) as client:  # served while the attacker's head is open
        assert client.get(gw.url + "/api/version").status_code == 200

    cut_off = False
    try:
        while sent < total:
            attacker.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the server stopped reading and closed
        cut_off = True
    try:
        data = read_until_closed(attacker)
    except OSError:
        data = b""
    finally:
        attacker.close()
    assert cut_off, "the server read the whole 150 MB header"
    assert sent < 32 * 1024 * 1024  # the 64 KiB limit plus what the kernel's socket buffers hold
    if data:  # the answer may be lost to the reset when unread bytes were pending
        assert answer(data)[:3:2] == (431, {"error": "request head larger than 65536 bytes"})

    with httpx.Client(timeout=WAIT_S) as client:
        assert client.get(gw.url + "/api/version").status_code == 200


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET /api/version HTTP/1.1\r\nHost: gw\r\n"], ids=["nothing", "half a head"])
def test_head_must_arrive_within_header_timeout(gateways: GatewayFactory, backend: FakeBackend, sent: bytes) -> None:
    gw = gateways.start([backend], server={"header_timeout_s": 0.3})
    with connect(gw.server.port) as sock:
        opened = time.monotonic()
        sock.sendall(sent)
        assert read_until_closed(sock) == b""  # closed without an answer
        assert time.monotonic() - opened >= 0.3


def test_slow_head_is_closed_although_bytes_keep_coming(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"header_timeout_s": 0.3})
    with connect(gw.server.port) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /api/version HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(int(WAIT_S / 0.05)):
            try:
                sock.sendall(b"s")
            except OSError:
                closed = True
                break
            if closed_within(sock, 0.05):
                closed = True
                break
        assert closed
        assert time.monotonic() - opened >= 0.3


def test_kept_alive_connection_is_usable_then_closed_when_idle(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"keepalive_s": 0.3, "header_timeout_s": 5})
    with connect(gw.server.port) as sock:
        for _ in range(2):
            sock.sendall(head())
            assert read_response(sock)[0] == 200
        idle_since = time.monotonic()
        assert read_until_closed(sock) == b""
        # the server's idle timer starts when it sent the answer, a moment before this client read it;
        # uvloop timers run to the millisecond: the lower bound is the keep-alive less that slack
        assert time.monotonic() - idle_since >= 0.25


def test_idle_kept_alive_connections_are_closed_by_the_sweep_without_a_timer_per_request(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    """uvicorn made and cancelled a keep-alive timer for every request; the sweep does its job."""
    gw = gateways.start([backend], server={"keepalive_s": 0.3, "header_timeout_s": 5})
    with connect(gw.server.port) as sock:
        sock.sendall(head())
        assert read_response(sock)[0] == 200
        assert gw.server.server is not None
        (protocol,) = gw.server.server.server_state.connections
        assert isinstance(protocol, GatewayHttpProtocol) and protocol.timeout_keep_alive_task is None
        assert read_until_closed(sock) == b""


def test_a_connection_answered_before_its_body_was_in_is_still_closed_when_idle(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    """A forwarded route refuses a bad credential before it reads the body: the rest of the
    body arrives after the answer, and the connection is then idle like any other (before the
    sweep kept it, nothing would have closed it)."""
    gw = gateways.start([backend], server={"keepalive_s": 0.3, "header_timeout_s": 5})
    with connect(gw.server.port) as sock:
        sock.sendall(head("/api/chat", "POST", ["Authorization: Bearer wrong", "Content-Length: 11"]) + b'{"mod')
        assert read_response(sock)[0] == 401
        sock.sendall(b'el":1}')  # the body's last 6 bytes: nothing more
        assert not closed_within(sock, 0.1)  # kept alive ...
        assert closed_within(sock, 3.0)  # ... then closed as idle


class BodyReader:
    """An ASGI app that reads the whole body and answers 200, recording what `receive` gave."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            for step in ("startup", "shutdown"):
                await receive()
                await send({"type": f"lifespan.{step}.complete"})
            return
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def body_reader() -> Iterator[tuple[BodyReader, ThreadedServer]]:
    app = BodyReader()
    with ThreadedServer(app, server=ServerConfig(body_timeout_s=0.3, header_timeout_s=5)) as server:
        yield app, server


def test_stalled_body_is_closed_and_the_app_sees_a_disconnect(
        body_reader: tuple[BodyReader, ThreadedServer]) -> None:
    app, server = body_reader
    with connect(server.port) as sock:
        stalled_at = time.monotonic()
        sock.sendall(head("/upload", "POST", ["Content-Length: 100"]) + b"x" * 10)
        assert read_until_closed(sock) == b""
        assert time.monotonic() - stalled_at >= 0.3
    wait_for(lambda: app.events[-1:] == ["http.disconnect"], "the app to see the disconnect")


def test_body_with_gaps_shorter_than_body_timeout_is_served() -> None:
    with ThreadedServer(BodyReader(), server=ServerConfig(body_timeout_s=1.0, header_timeout_s=5)) as server, \
            connect(server.port) as sock:
        sock.sendall(head("/upload", "POST", ["Content-Length: 60"]))
        for _ in range(6):  # 1.2 s in all, longer than body_timeout_s, but never silent for 1 s
            time.sleep(0.2)  # the client's pace, not a wait for the server
            sock.sendall(b"y" * 10)
        assert read_response(sock) == (200, b"ok")


def test_body_bytes_do_not_count_as_head(body_reader: tuple[BodyReader, ThreadedServer]) -> None:
    """A 200 KB body sent with its head in one write: the head room covers the head only."""
    _, server = body_reader
    with connect(server.port) as sock:
        sock.sendall(head("/upload", "POST", ["Content-Length: 200000"]) + b"z" * 200_000)
        assert read_response(sock) == (200, b"ok")


def test_pipelined_requests_are_all_served(body_reader: tuple[BodyReader, ThreadedServer]) -> None:
    _, server = body_reader
    one = head("/upload", "POST", ["Content-Length: 3"]) + b"abc"
    with connect(server.port) as sock:
        sock.sendall(one * 3)
        assert read_responses(sock, 3) == [(200, b"ok")] * 3


# -- connection cap -----------------------------------------------------------------------------


def cap_warnings(records: Records) -> list[str]:
    return [r.getMessage() for r in records.records if r.name == "seadragon_gw.server" and r.levelno == logging.WARNING]


def test_connections_beyond_the_cap_are_refused_with_one_warning(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"max_connections": 2, "header_timeout_s": 30, "keepalive_s": 30})
    with recording() as records:
        held = [connect(gw.server.port) for _ in range(2)]
        for sock in held:  # a whole request each: the server has surely counted them
            sock.sendall(head())
            assert read_response(sock)[0] == 200
        for _ in range(3):
            with connect(gw.server.port) as sock:
                status, headers, body = answer(read_until_closed(sock))
            assert (status, body) == (503, {"error": "too many open connections (limit 2)"})
            assert headers["connection"] == "close"
        assert cap_warnings(records) == [
            "2 connections are open (server.max_connections): new connections are refused with 503 until some close"]

        for sock in held:
            sock.close()
        held = []

        def one_more_is_served() -> bool:
            with connect(gw.server.port) as sock:
                sock.sendall(head(fields=["Connection: close"]))
                data = read_until_closed(sock)
            return answer(data)[0] == 200

        wait_for(one_more_is_served, "the closed connections to be forgotten")
        held = [connect(gw.server.port) for _ in range(2)]
        for sock in held:
            sock.sendall(head())
            assert read_response(sock)[0] == 200
        with connect(gw.server.port) as sock:
            assert answer(read_until_closed(sock))[0] == 503
        assert len(cap_warnings(records)) == 2  # the cap was left and reached again
        for sock in held:
            sock.close()


def test_cap_warning_comes_again_only_after_the_count_fell_by_a_tenth(caplog: pytest.LogCaptureFixture) -> None:
    """Under a flood held at the cap every close lets one connection in: no WARNING per turn."""
    limits = EdgeLimits(max_connections=1000)
    cap = ConnectionCap(limits.max_connections, limits.rearm_connections)
    with caplog.at_level(logging.WARNING, "seadragon_gw.server"):
        for _ in range(3):
            cap.refused()
        cap.closed(999)
        cap.refused()
        cap.closed(901)
        cap.refused()
        assert len(caplog.records) == 1
        cap.closed(900)
        cap.refused()
        assert len(caplog.records) == 2


# -- access log ---------------------------------------------------------------------------------


def test_access_log_never_shows_a_full_api_key(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"access_log": True, "log_level": "info"})
    with recording() as records, httpx.Client(base_url=gw.url, timeout=WAIT_S) as client:
        created = client.post("/api/admin/apikeys", json={"name": "leaky"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        revoked = client.delete(f"/api/admin/apikeys/{key}", headers=ADMIN)
        assert (revoked.status_code, revoked.json()) == (
            400, {"error": "key: give the key's id or its display prefix, never the key itself"})
        assert client.get("/api/version", params={"token": "tok-alice", "key": key}).status_code == 200

    access = [r.getMessage() for r in records.records if r.name == "uvicorn.access"]
    prefix = key[:DISPLAY_PREFIX_LEN]
    assert any(f"DELETE /api/admin/apikeys/{prefix}... HTTP/1.1" in line for line in access), access
    assert any("/api/version?token=[redacted]&key=[redacted]" in line for line in access), access
    text = records.text()
    assert "tok-alice" not in text
    tail = key[DISPLAY_PREFIX_LEN:]
    assert not [tail[i:i + 6] for i in range(len(tail) - 5) if tail[i:i + 6] in text]


@pytest.mark.parametrize(("target", "logged"), [
    ("/api/admin/apikeys/sdk-" + "k" * 43, "/api/admin/apikeys/sdk-kkkkkkkk..."),
    ("/api/admin/apikeys/sdk-kkkkkkkk", "/api/admin/apikeys/sdk-kkkkkkkk"),  # a display prefix stays
    ("/auth/register/sdr-" + "r" * 43 + "/x", "/auth/register/sdr-rrrrrrrr.../x"),
    ("/v1/models?api_key=abc&n=1", "/v1/models?api_key=[redacted]&n=1"),
    ("/v1/models?Access_Token=abc", "/v1/models?Access_Token=[redacted]"),
    ("/v1/models?tok%65n=abc", "/v1/models?tok%65n=[redacted]"),
    ("/v1/models?q=%73dk-" + "k" * 20, "/v1/models?q=sdk-kkkkkkkk..."),
    ("/api/tags\nFAKE LOG LINE", "/api/tags\\nFAKE LOG LINE"),
    ("/api/chat", "/api/chat"),
])
def test_redact_target(target: str, logged: str) -> None:
    assert redact_target(target) == logged


# -- client leaving mid-body --------------------------------------------------------------------


@pytest.mark.parametrize(("path", "headers", "length"), [
    ("/api/chat", ALICE, 1_000_000),
    ("/auth/token", {}, 60_000),  # under the 64 KiB limit of /auth/*: the body is being read
    ("/api/admin/apikeys", ADMIN, 60_000),
])
def test_client_leaving_mid_body_is_not_an_error(
        gateways: GatewayFactory, backend: FakeBackend, path: str, headers: dict[str, str], length: int) -> None:
    gw = gateways.start([backend])
    fields = [f"{k}: {v}" for k, v in headers.items()]
    with recording() as records:
        with connect(gw.server.port) as sock:
            sock.sendall(head(path, "POST", ["Content-Type: application/json", f"Content-Length: {length}", *fields]))
            sock.sendall(b'{"model": "' + b"m" * (length // 2))
            wait_for(lambda: not no_requests_in_flight(gw), "the request to reach the app")
        wait_for(lambda: no_requests_in_flight(gw), "the request to end")
    errors = [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, records.text()[:2000]


def test_requests_keep_working_after_all_of_it(gw: RunningGateway) -> None:
    """The limits change nothing for an ordinary client: keep-alive, bodies, streaming."""
    with httpx.Client(base_url=gw.url, timeout=WAIT_S) as client:
        for _ in range(3):
            response = client.post("/api/chat", headers=ALICE, json=chat("hi"))
            assert response.status_code == 200, response.text
        assert client.get("/api/version").status_code == 200


def test_refused_heads_do_not_block_the_loop(gw: RunningGateway) -> None:
    """Many oversized heads in parallel threads; ordinary requests are served throughout."""
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), connect(gw.server.port) as sock:
                sock.sendall(head(fields=["X-Big: " + "b" * 70_000]))
                read_until_closed(sock)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=gw.url, timeout=WAIT_S) as client:
            for _ in range(20):
                assert client.get("/api/version").status_code == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)


# -- answers written in one piece (server/direct.py DirectBody.whole) ---------------------------


def chat_request(fields: list[str], version: str = "1.1") -> bytes:
    body = json.dumps({"model": "llama3", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    lines = [f"POST /api/chat HTTP/{version}", "Host: gw", "Authorization: Bearer tok-alice",
             "Content-Type: application/json", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1")


def test_pipelined_forwarded_answers_come_whole_and_in_order(gw: RunningGateway) -> None:
    """Three non-stream chats sent in one write: three complete answers, each with its own
    request id and content-length, in the order asked, and the connection kept open."""
    with connect(gw.server.port) as sock:
        sock.sendall(b"".join(chat_request([f"X-Request-ID: pipe-{n}"]) for n in range(3)))
        answers = read_responses(sock, 3)
        assert [status for status, _ in answers] == [200, 200, 200]
        assert all(json.loads(body)["done"] is True for _, body in answers)
        sock.sendall(chat_request(["X-Request-ID: pipe-3"]))
        raw = b""
        while b"pipe-3" not in raw:
            raw += sock.recv(65536)
    assert b"x-request-id: pipe-3\r\n" in raw


@pytest.mark.parametrize("version, fields", [("1.0", []), ("1.1", ["Connection: close"])])
def test_a_forwarded_answer_to_a_closing_client_says_close_once_and_closes(
        gw: RunningGateway, version: str, fields: list[str]) -> None:
    with connect(gw.server.port) as sock:
        sock.sendall(chat_request(["X-Request-ID: closing", *fields], version))
        data = read_until_closed(sock)
    status, headers, body = answer(data)
    assert (status, body["done"], headers["x-request-id"]) == (200, True, "closing")
    assert data.lower().count(b"\r\nconnection: close\r\n") == 1
    assert int(headers["content-length"]) == len(data.partition(b"\r\n\r\n")[2])


def test_an_error_answer_is_whole_with_its_headers(gw: RunningGateway) -> None:
    """A refusal from the forwarded route (unknown model): JSON error, its length, the request id."""
    body = b'{"model": "no-such-model", "messages": []}'
    with connect(gw.server.port) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer tok-alice\r\n"
                     b"X-Request-ID: err-1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        status, headers, error = answer(read_until_closed(sock))
    assert status == 404 and "no-such-model" in error["error"]
    assert headers["x-request-id"] == "err-1" and headers["content-type"] == "application/json; charset=utf-8"


# -- nothing of a finished request is left for the garbage collector ---------------------------


def test_finished_requests_leave_no_reference_cycles(gw: RunningGateway) -> None:
    """A request's objects are freed when it ends, not by the cyclic garbage collector: uvicorn's
    request cycle, its scope and the server's `DirectBody` refer to one another until the app
    returns. Left to the collector, they made it run every ~65 requests (bench/RESULTS.md). With
    `DEBUG_SAVEALL` every object the collector would have freed stays in `gc.garbage`."""
    with httpx.Client(base_url=gw.url, timeout=WAIT_S, headers={"Authorization": "Bearer tok-alice"}) as client:
        client.get("/api/version")  # the connection and anything made once are there before
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for n in range(5):
                assert client.post("/api/chat", json=chat(f"whole-{n}")).status_code == 200
                assert client.post("/api/chat", json=chat(f"stream-{n}", stream=True)).status_code == 200
                assert client.post("/v1/chat/completions", json=chat(f"sse-{n}", stream=True)).status_code == 200
                assert client.post("/api/chat", json=chat("missing", model="no-such-model")).status_code == 404
                assert client.get("/api/tags").status_code == 200  # through Starlette's routing
            gc.collect()
            left = sorted({type(obj).__qualname__ for obj in gc.garbage
                           if type(obj).__module__.startswith(("uvicorn", "seadragon_gw", "starlette"))})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert left == []


def test_header_names_in_any_case_while_the_shared_lower_case_names_stay_bounded(gw: RunningGateway) -> None:
    """The protocol shares each header name's lower-cased form between requests (a waiting
    request keeps its headers); a client sending endless new names cannot grow that table."""
    assert gw.server.server is not None
    protocol = gw.server.server.config.http_protocol_class
    assert issubclass(protocol, GatewayHttpProtocol)
    shared = protocol.header_names
    for spelling in ("X-Request-Id", "x-request-id", "X-REQUEST-ID", "x-ReQuEsT-iD"):
        response = httpx.get(gw.url + "/api/version", headers={spelling: f"id-{len(spelling)}-{spelling[2]}"})
        assert response.headers["x-request-id"] == f"id-{len(spelling)}-{spelling[2]}"
    with connect(gw.server.port) as sock:
        for n in range(300):
            sock.sendall(head(fields=[f"X-Junk-{n}: {n}"]))
            assert read_response(sock)[0] == 200
    assert len(shared) == 256
    response = httpx.get(gw.url + "/api/version", headers={"X-rEqUeSt-Id": "late-spelling"})
    assert response.headers["x-request-id"] == "late-spelling"  # past the bound: lower-cased per request


def test_request_targets_are_parsed_right_and_the_shared_table_stays_bounded(
        gw: RunningGateway, backend: FakeBackend) -> None:
    """The protocol keeps each request target's parsed path and query for later connections
    (a bounded table, as for header names): the same target gives the same answer every
    time, a percent-encoded path is decoded, and endless new targets cannot grow the table."""
    assert gw.server.server is not None
    protocol = gw.server.server.config.http_protocol_class
    assert issubclass(protocol, GatewayHttpProtocol)
    with httpx.Client(base_url=gw.url, timeout=WAIT_S, headers=ALICE) as client:
        for _ in range(2):  # parsed, then from the table
            assert client.post("/api/chat?trace=1", json=chat("q")).status_code == 200
            assert backend.inference_requests()[-1].query == "trace=1"
            assert client.post("/api/ollama/%63hat", json=chat("encoded")).json()["done"] is True
        for n in range(300):
            assert client.get(f"/api/version?n={n}").status_code == 200
        assert len(protocol.targets) == 256
        assert client.post("/api/chat?late=2", json=chat("late")).status_code == 200  # past the bound
        assert backend.inference_requests()[-1].query == "late=2"
