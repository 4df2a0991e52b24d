"""The recorder publishes finished records in batches: after the loop has run what was ready,
each observer hearing the whole batch in turn; at once where no loop runs; every record once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from seadragon_gw.records.observers import Recorder
from seadragon_gw.records.record import RequestRecord


class Heard:
    """An observer that writes down what it heard, in one log shared by several observers."""

    def __init__(self, name: str, log: list[tuple[str, str]], fail_on: str | None = None) -> None:
        self.name = name
        self.log = log
        self.fail_on = fail_on

    def request_finished(self, record: RequestRecord) -> None:
        if record.request_id == self.fail_on:
            raise RuntimeError("observer bug")
        self.log.append((self.name, record.request_id))


def recorder_with(*names: str, fail_on: str | None = None) -> tuple[Recorder, list[tuple[str, str]]]:
    recorder = Recorder(clock=lambda: 100.0)
    log: list[tuple[str, str]] = []
    for name in names:
        recorder.subscribe(Heard(name, log, fail_on if name == "a" else None))
    return recorder, log


async def test_records_finished_in_one_turn_are_heard_after_it_each_observer_the_whole_batch() -> None:
    recorder, log = recorder_with("a", "b")
    for request_id in ("r1", "r2", "r3"):
        assert recorder.finish(recorder.start(request_id, "POST", "/api/chat"), "ok", 200)
    assert log == []  # nothing yet: the batch is published once the loop has run what was ready
    await asyncio.sleep(0)
    assert log == [("a", "r1"), ("a", "r2"), ("a", "r3"), ("b", "r1"), ("b", "r2"), ("b", "r3")]
    recorder.finish(recorder.start("r4", "POST", "/api/chat"), "ok", 200)
    await asyncio.sleep(0)
    assert log[6:] == [("a", "r4"), ("b", "r4")]  # the next batch, and nothing heard twice


def test_without_a_running_loop_a_record_is_published_at_once() -> None:
    recorder, log = recorder_with("a")
    recorder.finish(recorder.start("r1", "GET", "/api/tags"), "ok", 200)
    assert log == [("a", "r1")]


async def test_a_record_is_finished_once_and_heard_once() -> None:
    recorder, log = recorder_with("a")
    record = recorder.start("r1", "POST", "/api/chat")
    assert recorder.finish(record, "ok", 200)
    assert not recorder.finish(record, "upstream_error", 502, "late")
    await asyncio.sleep(0)
    assert log == [("a", "r1")]
    assert (record.outcome, record.status, record.error, record.finished_at) == ("ok", 200, None, 100.0)


async def test_publish_hands_over_what_is_pending_now_and_the_scheduled_turn_adds_nothing() -> None:
    recorder, log = recorder_with("a")
    recorder.finish(recorder.start("r1", "POST", "/api/chat"), "ok", 200)
    recorder.publish()  # the gateway's close does this before the logs write the last time
    assert log == [("a", "r1")]
    await asyncio.sleep(0)
    assert log == [("a", "r1")]


async def test_an_observer_that_raises_is_logged_and_everyone_hears_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    recorder, log = recorder_with("a", "b", fail_on="r2")
    with caplog.at_level(logging.ERROR, logger="seadragon_gw.requests"):
        for request_id in ("r1", "r2", "r3"):
            recorder.finish(recorder.start(request_id, "POST", "/api/chat"), "ok", 200)
        await asyncio.sleep(0)
    assert log == [("a", "r1"), ("a", "r3"), ("b", "r1"), ("b", "r2"), ("b", "r3")]
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request observer")]
    assert len(failures) == 1 and failures[0].endswith("failed")


async def test_a_recorder_given_its_loop_publishes_on_it() -> None:
    log: list[tuple[str, str]] = []
    recorder = Recorder(clock=lambda: 100.0, loop=asyncio.get_running_loop())
    recorder.subscribe(Heard("a", log))
    recorder.finish(recorder.start("r1", "POST", "/api/chat"), "ok", 200)
    assert log == []
    await asyncio.sleep(0)
    assert log == [("a", "r1")]
