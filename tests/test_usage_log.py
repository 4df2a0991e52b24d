"""The usage log through a real gateway: every finished request in SQLite, aggregated per
client, model, day and credential, against the requests the test sent.

The wall clock is the test's (noon UTC, 2027-01-15), so days, retention and the queue-wait
and upstream figures are exact; the log is written every 50 ms (`usage.flush_s`) and a read
writes what is pending first.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from seadragon_gw.gateway import Clocks
from seadragon_gw.usage.batch import WriteBatch
from tests.conftest import ADMIN, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import GatewayClient, wait_until
from tests.support.identity import Admin, bearer

NOON = 1_800_014_400.0  # 2027-01-15T12:00:00Z
DAY = 86_400.0
FAST_USAGE = {"flush_s": 0.05}
ALICE, BOB, CAROL = bearer("tok-alice"), bearer("tok-bob"), bearer("tok-carol")


def chat(model: str = "llama3") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}


class Logged:
    def __init__(self, gateways: GatewayFactory, backend: FakeBackend, **usage: Any) -> None:
        self.wall = FakeClock(NOON)
        self.backend = backend
        self.gw: RunningGateway = gateways.start([backend], clocks=Clocks(wall=self.wall),
                                                 usage={**FAST_USAGE, **usage})
        self.url = self.gw.url

    def send(self, headers: dict[str, str], model: str = "llama3", path: str = "/api/chat",
             status: int = 200) -> None:
        body = chat(model) if path == "/api/chat" else {"model": model, "messages": chat()["messages"]}
        response = httpx.post(self.url + path, json=body, headers=headers, timeout=10)
        assert response.status_code == status, response.text

    def usage(self, **params: str) -> httpx.Response:
        return httpx.get(self.url + "/api/admin/usage", params=params, headers=ADMIN)

    def groups(self, **params: str) -> list[dict[str, Any]]:
        response = self.usage(**params)
        assert response.status_code == 200, response.text
        groups: list[dict[str, Any]] = response.json()["groups"]
        return groups

    def counts(self, group_by: str, **params: str) -> dict[str, tuple[int, int, int, int]]:
        """group -> (requests, errors, tokens in, tokens out)."""
        return {g[group_by]: (g["requests"], g["errors"], g["tokens_in"], g["tokens_out"])
                for g in self.groups(group_by=group_by, **params)}

    def recorded(self, n: int) -> None:
        """Wait until `n` requests are in the log (a record is finished just after its answer)."""
        poll(lambda: sum(g["requests"] for g in self.groups()) == n, what=f"{n} requests in the usage log")


@pytest.fixture
def logged(gateways: GatewayFactory, backend: FakeBackend) -> Logged:
    return Logged(gateways, backend)


def send_the_mix(logged: Logged) -> None:
    """alice: 2 answers, 1 unknown model, 1 backend 500; bob as client 'ide': 1 on another
    model; carol: 1 OpenAI chat. The fake backend counts 1 prompt and 3 completion tokens."""
    logged.send(ALICE)
    logged.send(ALICE)
    logged.send({**BOB, "X-Client-ID": "ide"}, model="qwen2.5:7b")
    logged.send(ALICE, model="nope", status=404)
    logged.send(CAROL, path="/v1/chat/completions")
    logged.backend.respond_status(500, {"error": "boom"})
    logged.send(ALICE, status=500)
    logged.backend.respond_status(None)
    logged.recorded(6)


def test_usage_grouped_by_each_key_matches_the_requests_sent(logged: Logged) -> None:
    send_the_mix(logged)
    assert logged.counts("client") == {"ide": (1, 0, 1, 3), "token:alice": (4, 2, 2, 6), "token:carol": (1, 0, 1, 3)}
    assert logged.counts("credential") == {"token:alice": (4, 2, 2, 6), "token:bob": (1, 0, 1, 3),
                                           "token:carol": (1, 0, 1, 3)}
    assert logged.counts("model") == {"llama3:latest": (4, 1, 3, 9), "nope:latest": (1, 1, 0, 0),
                                      "qwen2.5:7b": (1, 0, 1, 3)}
    assert logged.counts("day") == {"2027-01-15": (6, 2, 4, 12)}
    overall = logged.groups()
    assert [(g["requests"], g["errors"], g["tokens_in"], g["tokens_out"]) for g in overall] == [(6, 2, 4, 12)]
    assert "client" not in overall[0]


def test_usage_by_credential_tells_two_api_keys_named_alike_apart(logged: Logged) -> None:
    admin = Admin(logged.url)
    first, second = (admin.create_key("ci") for _ in range(2))
    for key, n in ((first, 2), (second, 1)):
        for _ in range(n):
            logged.send({"X-API-Key": key["key"]})
    logged.send(ALICE)
    logged.recorded(4)
    groups = {(g["credential"], g["key_id"]): g["requests"] for g in logged.groups(group_by="credential")}
    assert groups == {("apikey:ci", first["id"]): 2, ("apikey:ci", second["id"]): 1, ("token:alice", None): 1}


def test_usage_filters_by_time_client_and_model(logged: Logged) -> None:
    send_the_mix(logged)
    logged.wall.advance(DAY)
    logged.send(ALICE, model="llama3:latest")
    logged.recorded(7)
    assert logged.counts("day") == {"2027-01-15": (6, 2, 4, 12), "2027-01-16": (1, 0, 1, 3)}
    assert logged.counts("day", since="2027-01-16") == {"2027-01-16": (1, 0, 1, 3)}
    assert logged.counts("day", since="2027-01-16T00:00:00+00:00") == {"2027-01-16": (1, 0, 1, 3)}
    assert logged.counts("day", until=str(int(NOON + DAY))) == {"2027-01-15": (6, 2, 4, 12)}  # until is exclusive
    assert logged.counts("model", client="token:alice", model="llama3") == {"llama3:latest": (4, 1, 3, 9)}
    assert logged.counts("client", model="LLAMA3:latest", since=str(NOON)) == {
        "token:alice": (4, 1, 3, 9), "token:carol": (1, 0, 1, 3)}
    body = logged.usage(group_by="model", client="ide").json()
    assert (body["client"], body["group_by"], body["since"]) == ("ide", "model", None)


def test_queue_wait_and_upstream_time_aggregates(logged: Logged, backend: FakeBackend) -> None:
    """A is served at once and held 2 s (wall clock) at the backend; B waits those 2 s in the queue."""
    client = GatewayClient(logged.url, BOB)
    try:
        backend.hold()
        first = client.submit("/api/chat", chat())
        backend.wait_waiting(1)
        second = client.submit("/api/chat", chat())
        wait_until(lambda: logged.gw.waiting() == 1, "the second request to queue")
        logged.wall.advance(2.0)
        backend.release()
        assert first.result(10).status_code == second.result(10).status_code == 200
    finally:
        client.close()
    logged.recorded(2)
    (group,) = logged.groups(group_by="credential")
    assert group["credential"] == "token:bob"
    assert group["queue_wait_s"] == {"avg": 1.0, "p95": 2.0, "max": 2.0}
    assert group["upstream_s"] == {"avg": 1.0, "p95": 2.0, "max": 2.0}
    assert group["time_to_first_byte_s"] == {"avg": 1.0}


@pytest.mark.parametrize(("params", "message"), [
    ({"since": "yesterday"}, "since: must be an ISO 8601 time or epoch seconds, got 'yesterday'"),
    ({"until": "-5"}, "until: must be an ISO 8601 time or epoch seconds, got '-5'"),
    ({"since": "2027-01-16", "until": "2027-01-15"}, "since: must be before until"),
    ({"group_by": "user"}, "group_by: must be one of client, model, day, credential, got 'user'"),
    ({"colour": "blue"}, "colour: unknown query parameter (allowed: client, group_by, model, since, until)"),
])
def test_bad_usage_parameters_are_400_naming_the_parameter(logged: Logged, params: dict[str, str],
                                                           message: str) -> None:
    assert native_error(logged.usage(**params), 400) == message


def test_usage_needs_an_admin(logged: Logged) -> None:
    response = httpx.get(logged.url + "/api/admin/usage", headers=ALICE)
    assert native_error(response, 403) == "forbidden: this route needs an admin credential"
    assert native_error(httpx.get(logged.url + "/api/admin/usage"), 401).startswith("unauthorized")


def test_old_rows_are_pruned_in_the_background(gateways: GatewayFactory, backend: FakeBackend) -> None:
    logged = Logged(gateways, backend, retention_days=1, prune_s=0.05)
    logged.send(ALICE)
    logged.recorded(1)
    logged.wall.advance(2 * DAY)
    logged.send(ALICE)
    poll(lambda: logged.counts("day") == {"2027-01-17": (1, 0, 1, 3)}, what="the two-day-old row pruned")


def test_usage_off_logs_nothing(gateways: GatewayFactory, backend: FakeBackend) -> None:
    logged = Logged(gateways, backend, enabled=False)
    logged.send(ALICE)
    logged.send(ALICE)
    assert logged.groups(group_by="client") == []
    assert logged.gw.on_loop(lambda g: g.logs.pending()["usage log"]) == 0


def test_a_database_gone_keeps_a_bounded_batch_and_warns_once(
        gateways: GatewayFactory, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.usage")
    logged = Logged(gateways, backend, max_batch=3)
    Path(logged.gw.config.resolve_path(logged.gw.config.database)).unlink()
    for _ in range(5):
        logged.send(ALICE)  # the answers are not held up by the log
    poll(lambda: logged.gw.on_loop(lambda g: g.logs.pending()["usage log"]) == 3, what="3 records kept")
    warnings = [r.getMessage() for r in caplog.records if r.name == "seadragon_gw.usage"
                and r.levelno == logging.WARNING]
    assert warnings == ["usage log: cannot write to the database (database file was deleted or replaced; "
                        "restart the gateway); keeping up to 3 record(s) in memory, dropping the oldest beyond that"]


async def test_the_batch_drops_the_oldest_and_reports_the_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.usage")
    written: list[list[int]] = []
    failing = True

    async def write(items: list[int]) -> None:
        if failing:
            raise OSError("disk on fire")
        written.append(items)

    batch: WriteBatch[int] = WriteBatch("test log", write, interval_s=3600, max_items=3)
    for i in range(2):
        batch.add(i)
    await batch.flush()  # fails: kept
    for i in range(2, 5):
        batch.add(i)
    await batch.flush()  # fails again: no second warning
    failing = False
    await batch.flush()
    await asyncio.sleep(0)
    assert written == [[2, 3, 4]]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "test log: cannot write to the database (disk on fire); keeping up to 3 record(s) in memory, "
                    "dropping the oldest beyond that"),
        ("INFO", "test log: writing again (2 record(s) dropped while the database was unavailable)"),
    ]


async def test_a_working_database_loses_nothing_however_fast_items_arrive() -> None:
    """More than `max_items` arrive within one interval: the batch writes early (at a quarter of
    the bound) instead of dropping the oldest, every item once, in order."""
    written: list[list[int]] = []
    wrote = asyncio.Event()

    async def write(items: list[int]) -> None:
        await asyncio.sleep(0)  # the write takes a loop turn, as SQLite's thread does
        written.append(items)
        wrote.set()

    batch: WriteBatch[int] = WriteBatch("test log", write, interval_s=3600, max_items=100)
    batch.start()
    try:
        for i in range(1000):
            batch.add(i)
            if i % 10 == 9:
                await asyncio.sleep(0)  # requests finish between loop turns
        assert batch.dropped == 0
        wrote.clear()
        while written == [] or sum(map(len, written)) < 1000 - batch.pending:
            await asyncio.wait_for(wrote.wait(), 5)
            wrote.clear()
    finally:
        await batch.close()
    assert [i for items in written for i in items] == list(range(1000))
    assert all(len(items) <= 100 for items in written)


async def test_a_failing_database_is_retried_at_the_interval_not_at_every_item() -> None:
    attempts: list[int] = []
    failing = True

    async def write(items: list[int]) -> None:
        attempts.append(len(items))
        if failing:
            raise OSError("disk on fire")

    batch: WriteBatch[int] = WriteBatch("test log", write, interval_s=3600, max_items=8)
    batch.start()
    try:
        for i in range(2):
            batch.add(i)
        for _ in range(10):
            await asyncio.sleep(0)
        assert attempts == [2]  # the early write at a quarter of the bound; it fails
        for i in range(2, 40):
            batch.add(i)
            await asyncio.sleep(0)
        assert attempts == [2]  # failing: the next try waits for the interval
        assert batch.pending == 8 and batch.dropped == 32  # 40 added, the newest 8 kept
    finally:
        failing = False
        await batch.close()
    assert attempts == [2, 8]  # closing writes what is left


def test_a_usage_row_holds_each_field_of_its_record_in_its_column() -> None:
    """usage_row builds the tuple positionally (for speed): every field lands in its own column."""
    from seadragon_gw.records.record import RequestRecord
    from seadragon_gw.store.usage import UsageRow
    from seadragon_gw.usage.rows import usage_row

    record = RequestRecord("gw-7", "POST", "/api/chat", 100.0, credential_kind="apikey", credential_name="ci",
                           key_id=9, client_id="cline", model="Llama3", stream=True, queued_at=100.5,
                           granted_at=101.0, first_byte_at=101.25, finished_at=103.0, status=200, bytes_out=512,
                           outcome="ok", backend="b0", prompt_tokens=11, completion_tokens=22, profile="base")
    assert usage_row(record) == UsageRow(
        ts=103.0, request_id="gw-7", method="POST", route="/api/chat", credential="apikey:ci", client="cline",
        model="llama3:latest", backend="b0", status=200, outcome="ok", is_error=False, stream=True,
        queue_wait_s=0.5, ttfb_s=0.25, upstream_s=2.0, tokens_in=11, tokens_out=22, bytes_out=512,
        profile="base", key_id=9)
    refused = RequestRecord("gw-8", "GET", "/api/tags", 50.0, status=401, outcome="rejected")
    assert usage_row(refused) == UsageRow(
        ts=50.0, request_id="gw-8", method="GET", route="/api/tags", credential=None, client=None, model=None,
        backend=None, status=401, outcome="rejected", is_error=True, stream=False, queue_wait_s=None, ttfb_s=None,
        upstream_s=None, tokens_in=None, tokens_out=None, bytes_out=0, profile=None, key_id=None)
    # What sqlite3 binds without its slow paths (store/usage.py UsageValues): a plain tuple, no bools.
    for row in (usage_row(record), usage_row(refused)):
        assert type(row) is tuple and not any(isinstance(value, bool) for value in row)
