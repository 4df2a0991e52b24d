"""Writes held to the end of the loop's turn while other requests are in progress
(seadragon_gw/write_batch.py), and the order they keep on each connection."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from seadragon_gw.server.protocol import GatewayHttpProtocol
from seadragon_gw.write_batch import WriteBatch
from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat
from tests.test_server_limits import chat_request, connect, read_responses, read_until_closed

WAIT_S = 10.0


@dataclass
class Transport:
    """What the batch needs of a transport: writes recorded, a closing flag."""

    written: list[bytes] = field(default_factory=list)
    closing: bool = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


def transports(n: int) -> list[Any]:
    return [Transport() for _ in range(n)]


# -- the batch alone ------------------------------------------------------------------------------


async def test_a_lone_write_leaves_at_once() -> None:
    batch, (t,) = WriteBatch(), transports(1)
    batch.write(t, b"one", asyncio.get_running_loop(), alone=True)
    assert t.written == [b"one"] and batch.held == []


async def test_writes_while_others_are_in_progress_leave_together_at_the_end_of_the_turn() -> None:
    loop = asyncio.get_running_loop()
    batch, (a, b, c) = WriteBatch(), transports(3)
    for transport, data in ((a, b"a"), (b, b"b"), (c, b"c")):
        batch.write(transport, data, loop, alone=False)
    assert (a.written, b.written, c.written) == ([], [], [])  # nothing yet: the turn goes on
    await asyncio.sleep(0)  # the loop runs what was ready: the batch's flush first
    assert (a.written, b.written, c.written) == ([b"a"], [b"b"], [b"c"]) and batch.held == []


async def test_a_lone_write_in_a_turn_that_holds_writes_waits_behind_them() -> None:
    """Order on a connection: the later write never overtakes the held one."""
    loop = asyncio.get_running_loop()
    batch, (t,) = WriteBatch(), transports(1)
    batch.write(t, b"first", loop, alone=False)
    batch.write(t, b"second", loop, alone=True)
    assert t.written == []
    await asyncio.sleep(0)
    assert t.written == [b"first", b"second"]
    batch.write(t, b"third", loop, alone=True)  # a new turn: at once again
    assert t.written == [b"first", b"second", b"third"]


async def test_a_held_write_whose_transport_closed_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    batch, (gone, live) = WriteBatch(), transports(2)
    batch.write(gone, b"lost", loop, alone=False)
    batch.write(live, b"kept", loop, alone=False)
    gone.closing = True
    await asyncio.sleep(0)
    assert (gone.written, live.written) == ([], [b"kept"])


async def test_an_early_flush_sends_what_is_held_and_the_scheduled_one_finds_nothing() -> None:
    loop = asyncio.get_running_loop()
    batch, (t,) = WriteBatch(), transports(1)
    batch.write(t, b"held", loop, alone=False)
    batch.flush()  # the server protocol does this when bytes arrive (see below)
    assert t.written == [b"held"]
    await asyncio.sleep(0)
    assert t.written == [b"held"]


# -- through the gateway ----------------------------------------------------------------------


@dataclass
class Spy:
    """Every `WriteBatch.write` call's `alone`, and whether it was held."""

    calls: list[tuple[bool, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def held(self) -> int:
        return sum(1 for _, held in self.calls if held)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    record = Spy()
    original = WriteBatch.write

    def write(self: WriteBatch, transport: Any, data: bytes, loop: asyncio.AbstractEventLoop, alone: bool) -> None:
        before = len(self.held)
        original(self, transport, data, loop, alone)
        with record.lock:
            record.calls.append((alone, len(self.held) > before))

    monkeypatch.setattr(WriteBatch, "write", write)
    yield record


def test_a_lone_request_and_its_answer_leave_at_once(gw: RunningGateway, spy: Spy) -> None:
    """One request in progress: the request to the backend and the answer to the client are
    written at once, as before the batch existed (no added latency)."""
    response = httpx.post(gw.url + "/api/chat", json=chat("alone"), headers=ALICE, timeout=WAIT_S)
    assert response.status_code == 200 and response.json()["done"] is True
    assert spy.calls == [(True, False), (True, False)]  # upstream request, then the answer


def test_with_another_request_in_progress_the_request_and_answer_are_held_and_arrive_whole(
        gateways: GatewayFactory, spy: Spy) -> None:
    """A stream parked at one backend keeps a second request company: that one's upstream
    request and its answer are held to the end of their turns, and both arrive complete."""
    with FakeBackend(models=["slow:latest"]) as slow, FakeBackend(models=["quick:latest"]) as quick:
        gw = gateways.start([slow, quick])
        slow.hold()
        with httpx.Client(base_url=gw.url, headers=ALICE, timeout=WAIT_S) as client:
            parked = threading.Thread(target=lambda: client.post("/api/chat", json=chat("parked", model="slow")))
            parked.start()
            try:
                slow.wait_waiting(1)
                spy.calls.clear()
                response = client.post("/api/chat", json=chat("company", model="quick"))
                assert response.status_code == 200 and response.json()["done"] is True
                assert spy.calls == [(False, True), (False, True)]
            finally:
                slow.release()
                parked.join(WAIT_S)


def test_pipelined_answers_on_many_busy_connections_stay_whole_and_in_order(
        gateways: GatewayFactory, spy: Spy) -> None:
    """Eight connections, each sending three chats in one write, all at once: every answer is
    complete, in the order its connection asked, though many left in held batches."""
    with FakeBackend() as fast:
        gw = gateways.start([{"name": "fast", "kind": "ollama", "url": fast.url, "max_concurrent": 8}])
        results: dict[int, list[str]] = {}

        def client(n: int) -> None:
            with connect(gw.server.port) as sock:
                sock.sendall(b"".join(chat_request([f"X-Request-ID: c{n}-r{r}"]) for r in range(3)))
                answers = read_responses(sock, 3)
                results[n] = [json.loads(body)["message"]["content"] if status == 200 else str(status)
                              for status, body in answers]

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
    assert len(results) == 8 and all(len(contents) == 3 and all(contents) for contents in results.values())
    assert spy.held > 0  # the connections were busy together: some writes waited for their turn's end


def server_protocol(gw: RunningGateway, client_port: int) -> GatewayHttpProtocol:
    """The server's protocol object of the connection whose client end is `client_port`."""
    assert gw.server.server is not None
    for protocol in gw.server.server.server_state.connections:
        if isinstance(protocol, GatewayHttpProtocol) and protocol.client and protocol.client[1] == client_port:
            return protocol
    raise AssertionError("no such connection")


def hold_on(gw: RunningGateway, protocol: GatewayHttpProtocol, data: bytes) -> None:
    """Put `data` in the server's batch for this connection, as a held answer is, without
    the turn's flush (so the next event on the connection is what must send it)."""

    async def hold() -> None:
        protocol.writes.held.append((protocol.transport, data))

    gw.server.call(hold)


def test_bytes_arriving_on_a_connection_send_its_held_answer_before_anything_they_cause(
        gw: RunningGateway) -> None:
    """A held answer, then a bad request on the same connection: the 400 comes after it."""
    with connect(gw.server.port) as sock:
        sock.sendall(chat_request(["X-Request-ID: first"]))
        assert read_responses(sock, 1)[0][0] == 200
        hold_on(gw, server_protocol(gw, sock.getsockname()[1]), b"HELD ANSWER\r\n")
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = read_until_closed(sock)
    assert data.startswith(b"HELD ANSWER\r\nHTTP/1.1 400 ")


def test_a_graceful_stop_sends_held_answers_before_it_closes_the_connection(gw: RunningGateway) -> None:
    with connect(gw.server.port) as sock:
        sock.sendall(chat_request(["X-Request-ID: first"]))
        assert read_responses(sock, 1)[0][0] == 200
        hold_on(gw, server_protocol(gw, sock.getsockname()[1]), b"HELD ANSWER")
        gw.server.stop()
        assert read_until_closed(sock) == b"HELD ANSWER"
