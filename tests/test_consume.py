"""The lifecycle without an HTTP client (what async jobs and the WebSocket use): whole answers
and line-by-line answers through the same queue, slots and records as HTTP requests."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from seadragon_gw.auth.principal import Principal
from seadragon_gw.backends.upstream import StreamBroken
from seadragon_gw.gateway import Gateway
from seadragon_gw.lifecycle.consume import Forwarded, complete, lines
from seadragon_gw.lifecycle.route import INFERENCE
from seadragon_gw.records.record import RequestRecord
from tests.conftest import RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat

ALICE = Principal(kind="token", name="alice", priority=2)
HEADERS = [(b"content-type", b"application/json")]


async def _turns() -> None:
    """Two loop turns: a released slot is given back by its dispatcher on the next one."""
    for _ in range(2):
        await asyncio.sleep(0)


def _forwarded(payload: dict[str, Any]) -> Forwarded:
    return Forwarded("POST", "/api/chat", HEADERS, orjson.dumps(payload), payload)


def test_complete_returns_the_whole_answer_and_finishes_the_record(gw: RunningGateway) -> None:
    payload = chat("whole")

    async def run(g: Gateway) -> tuple[Any, RequestRecord, int]:
        record = g.recorder.start("job-1", "POST", "/api/chat")
        exchange = g.requests.admit(record, ALICE, INFERENCE["/api/chat"], payload)
        answer = await complete(exchange, _forwarded(payload))
        await _turns()
        return answer, record, g.registry.backends[0].active

    answer, record, active = gw.await_on_loop(run)
    body = orjson.loads(answer.body)
    assert answer.status == 200 and body["done"] is True and active == 0
    assert (record.outcome, record.status, record.backend) == ("ok", 200, "b0")
    assert (record.prompt_tokens, record.completion_tokens) == (body["prompt_eval_count"], body["eval_count"])


def test_lines_yields_each_ndjson_line_and_frees_the_slot_when_dropped(gw: RunningGateway) -> None:
    payload = chat("lines", stream=True)

    async def run(g: Gateway) -> tuple[list[Any], list[Any], str | None]:
        record = g.recorder.start("ws-1", "POST", "/api/chat")
        exchange = g.requests.admit(record, ALICE, INFERENCE["/api/chat"], payload)
        got = [orjson.loads(line) async for line in lines(exchange, _forwarded(payload))]
        second = g.requests.admit(g.recorder.start("ws-2", "POST", "/api/chat"), ALICE,
                                  INFERENCE["/api/chat"], payload)
        stream = lines(second, _forwarded(payload))
        first = orjson.loads(await anext(stream))
        await stream.aclose()  # the consumer stops early (socket closed)
        await _turns()
        return got, [first, g.registry.backends[0].active], second.record.outcome

    got, (first, active), outcome = gw.await_on_loop(run)
    assert [line["done"] for line in got] == [False] * (len(got) - 1) + [True]
    assert first["done"] is False and active == 0 and outcome == "client_gone"


def test_a_backend_error_status_raises_with_its_message(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.respond_status(500, {"error": "model exploded"})
    payload = chat("boom", stream=True)

    async def run(g: Gateway) -> str:
        exchange = g.requests.admit(g.recorder.start("x", "POST", "/api/chat"), ALICE, INFERENCE["/api/chat"], payload)
        with pytest.raises(StreamBroken) as caught:
            async for _ in lines(exchange, _forwarded(payload)):
                pass
        return caught.value.message + "|" + str(exchange.record.outcome)

    assert gw.await_on_loop(run) == "model exploded|upstream_error"
