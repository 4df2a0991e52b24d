"""Async jobs through a real gateway: submission (POST /api/jobs, `Prefer: respond-async`, seed
003's text-generation task), results and metadata, ownership, cancelling, the aging queue,
webhooks, retention and bad input."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from seadragon_gw.gateway import Clocks
from seadragon_gw.jobs.request import STREAM_FORCED
from seadragon_gw.lifecycle.route import INFERENCE
from tests.conftest import ADMIN, ALICE, FakeClock, GatewayFactory, RunningGateway
from tests.support.checks import native_error, openai_error
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, markers, wait_until
from tests.support.server import ThreadedServer, free_port

BOB = {"Authorization": "Bearer tok-bob"}
CAROL = {"Authorization": "Bearer tok-carol"}
ROUTES = ", ".join(INFERENCE)
NOT_A_JOB = f"cannot run as a job: only inference routes can ({ROUTES})"


def job(marker: str, route: str = "/api/chat", **extra: Any) -> dict[str, Any]:
    return {"route": route, "body": chat(marker, stream=None), **extra}


def submit(gw: RunningGateway, body: dict[str, Any], headers: dict[str, str] = ALICE) -> str:
    response = httpx.post(f"{gw.url}/api/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def read(gw: RunningGateway, job_id: str, headers: dict[str, str] = ALICE) -> dict[str, Any]:
    response = httpx.get(f"{gw.url}/api/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def finished(gw: RunningGateway, job_id: str, headers: dict[str, str] = ALICE, timeout: float = 5) -> dict[str, Any]:
    """The job once it has ended (a bounded poll)."""
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(read(gw, job_id, headers))
        return seen["status"] in ("completed", "failed", "cancelled")

    wait_until(ended, f"job {job_id} to end", timeout)
    return seen


def status_of(gw: RunningGateway, job_id: str) -> str:
    return str(read(gw, job_id)["status"])


# -- submitting and reading -------------------------------------------------------------
def test_a_job_is_answered_202_queued_with_its_location_and_completes_with_metadata(
        gw: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.post(f"{gw.url}/api/jobs", json=job("first"), headers=ALICE)
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"request_id", "status"} and body["status"] == "queued"
    job_id = body["request_id"]
    assert len(job_id) >= 22 and response.headers["location"] == f"/api/jobs/{job_id}"

    done = finished(gw, job_id)
    assert done["status"] == "completed" and done["error"] is None
    assert done["result"]["done"] is True and done["result"]["message"]["role"] == "assistant"
    meta = done["metadata"]
    assert meta["worker_id"] == "b0" and meta["http_status"] == 200 and meta["attempts"] == 1
    assert meta["model_info"] == {"name": "llama3", "route": "/api/chat",
                                  "prompt_tokens": done["result"]["prompt_eval_count"],
                                  "completion_tokens": done["result"]["eval_count"]}
    assert meta["processing_time"] >= 0 and meta["queue_wait"] >= 0
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    (sent,) = backend.inference_requests()
    assert sent.json is not None and sent.json["stream"] is False and markers(backend) == ["first"]
    assert "authorization" not in sent.headers


def test_the_job_is_in_the_database_before_the_202(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    job_id = submit(gw, job("durable"))
    database = sqlite3.connect(Path(gw.config.base_dir) / "gw.db")  # another connection: committed rows only
    try:
        row = database.execute("SELECT route, model, owner_kind, owner_name, status FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
    finally:
        database.close()
    assert row is not None and row[:4] == ("/api/chat", "llama3", "token", "alice")
    assert row[4] in ("queued", "processing")
    backend.release()
    assert finished(gw, job_id)["status"] == "completed"


def test_prefer_respond_async_on_inference_routes_answers_202_and_keeps_the_route(
        gw: RunningGateway, backend: FakeBackend) -> None:
    prefer = {**ALICE, "Prefer": "wait=5, respond-async"}
    native = httpx.post(f"{gw.url}/api/chat", json=chat("native", stream=None), headers=prefer)
    assert native.status_code == 202 and native.headers["preference-applied"] == "respond-async"
    assert native.json() == {"request_id": native.json()["request_id"], "status": "queued"}
    assert native.headers["location"] == f"/api/jobs/{native.json()['request_id']}"
    assert native.headers["x-request-id"]

    openai = httpx.post(f"{gw.url}/api/chat/completions", json=chat("alias", stream=True), headers=prefer)
    assert openai.status_code == 202
    assert openai.json() == {"request_id": openai.json()["request_id"], "status": "queued", "stream": False,
                             "warning": STREAM_FORCED}

    done = finished(gw, native.json()["request_id"])
    assert done["route"] == "/api/chat" and done["result"]["message"]["content"]
    alias = finished(gw, openai.json()["request_id"])
    assert alias["route"] == "/v1/chat/completions" and alias["result"]["object"] == "chat.completion"
    assert alias["stream"] is False and alias["warning"] == STREAM_FORCED
    assert sorted((r.path, (r.json or {})["stream"]) for r in backend.inference_requests()) == [
        ("/api/chat", False), ("/v1/chat/completions", False)]


def test_prefer_respond_async_is_ignored_where_there_is_no_job_to_make(gw: RunningGateway) -> None:
    prefer = {**ALICE, "Prefer": "respond-async"}
    shown = httpx.post(f"{gw.url}/api/show", json={"model": "llama3"}, headers=prefer)
    assert shown.status_code == 200 and "preference-applied" not in shown.headers
    direct = httpx.post(f"{gw.url}/api/chat", json=chat("sync"), headers={**ALICE, "Prefer": "return=minimal"})
    assert direct.status_code == 200 and direct.json()["done"] is True


def test_prefer_respond_async_errors_keep_the_routes_error_shape(gateways: GatewayFactory,
                                                                  backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"max_body_bytes": 2048})
    prefer = {**ALICE, "Prefer": "respond-async"}
    missing = httpx.post(f"{gw.url}/v1/chat/completions", json={"messages": []}, headers=prefer)
    assert openai_error(missing, 400) == "model is required"
    assert native_error(httpx.post(f"{gw.url}/api/chat", json={"model": "llama3", "stream": "yes"},
                                   headers=prefer), 400) == "stream must be a boolean"
    big = httpx.post(f"{gw.url}/api/chat", json=chat("x" * 4000), headers=prefer)
    assert native_error(big, 413) == "request body too large (limit 2048 bytes)"
    nobody = httpx.post(f"{gw.url}/api/chat", json=chat("anon"), headers={"Prefer": "respond-async"})
    assert nobody.status_code == 401
    assert backend.inference_requests() == []


def test_a_streaming_job_is_forced_to_a_whole_answer_and_says_so(gw: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.post(f"{gw.url}/api/jobs", headers=ALICE,
                          json={"route": "/api/generate", "body": {"model": "llama3", "prompt": "hi", "stream": True}})
    assert response.status_code == 202
    assert response.json() == {"request_id": response.json()["request_id"], "status": "queued", "stream": False,
                               "warning": STREAM_FORCED}
    done = finished(gw, response.json()["request_id"])
    assert done["status"] == "completed" and done["result"]["done"] is True and done["result"]["response"]
    assert backend.inference_requests()[0].json == {"model": "llama3", "prompt": "hi", "stream": False}


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "message"), [
    ({"route": "/api/nope", "body": {}}, f"unknown route '/api/nope': a job runs one of {ROUTES}"),
    ({"route": "/api/tags", "body": {}}, f"route '/api/tags' {NOT_A_JOB}"),
    ({"route": "/api/pull", "body": {"model": "x"}}, f"route '/api/pull' {NOT_A_JOB}"),
    ({"route": "/api/jobs", "body": {}}, f"route '/api/jobs' {NOT_A_JOB}"),
    ({"body": {}}, f"route is required: the path of an inference route ({ROUTES})"),
    ({"route": "/api/chat", "body": "hello"}, "body must be a JSON object: the request the route takes"),
    ({"route": "/api/chat", "body": {"messages": []}}, "model is required"),
    ({"route": "/api/chat", "body": {"model": 3}}, "model must be a non-empty string"),
    ({"route": "/api/chat", "body": {"model": "llama3", "stream": 1}}, "stream must be a boolean"),
    ({"route": "/api/chat", "body": {"model": "llama3"}, "priority": 1},
     'unknown field \'priority\' (a job is {"route", "body", "callback_url"})'),
    ({"route": "/api/chat", "body": {"model": "llama3"}, "callback_url": "http://127.0.0.1:9/x"},
     "callback_url: webhooks are off on this gateway (jobs.callback_hosts is empty)"),
])
def test_bad_job_requests_are_400_with_a_clear_message(gw: RunningGateway, backend: FakeBackend,
                                                       body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{gw.url}/api/jobs", json=body, headers=ALICE)
    assert native_error(response, 400) == message
    assert backend.inference_requests() == []


def test_job_bodies_over_the_limit_are_413_and_need_a_credential(gateways: GatewayFactory,
                                                                  backend: FakeBackend) -> None:
    gw = gateways.start([backend], server={"max_body_bytes": 2048})
    big = httpx.post(f"{gw.url}/api/jobs", json=job("y" * 3000), headers=ALICE)
    assert native_error(big, 413) == "request body too large (limit 2048 bytes)"
    assert native_error(httpx.post(f"{gw.url}/api/jobs", content=b"{nope", headers=ALICE), 400) == \
        "invalid JSON in request body"
    assert native_error(httpx.post(f"{gw.url}/api/jobs", json=job("anon")), 401)
    assert native_error(httpx.get(f"{gw.url}/api/jobs/whatever"), 401)


def test_a_job_for_a_model_no_backend_serves_fails_with_the_reason(gw: RunningGateway, backend: FakeBackend) -> None:
    job_id = submit(gw, {"route": "/api/chat", "body": chat("lost", model="nope", stream=None)})
    done = finished(gw, job_id)
    assert (done["status"], done["error"], done["result"]) == ("failed", "model 'nope' not found", None)
    assert backend.inference_requests() == []


def test_a_backend_error_fails_the_job_with_the_backends_message(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.respond_status(500, {"error": "out of memory"})
    done = finished(gw, submit(gw, job("oom")))
    assert (done["status"], done["error"]) == ("failed", "out of memory")
    assert done["result"] == {"error": "out of memory"} and done["metadata"]["http_status"] == 500


# -- who may see a job --------------------------------------------------------------------
def test_only_the_owner_or_an_admin_sees_or_cancels_a_job_and_others_get_404(
        gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    job_id = submit(gw, job("mine"))
    other_id = job_id[:-1] + ("y" if job_id.endswith("x") else "x")  # differs from job_id in its last letter
    for method in ("GET", "DELETE"):
        foreign = httpx.request(method, f"{gw.url}/api/jobs/{job_id}", headers=BOB)
        assert native_error(foreign, 404) == f"job '{job_id}' not found"
        unknown = httpx.request(method, f"{gw.url}/api/jobs/{other_id}", headers=ALICE)
        assert native_error(unknown, 404) == f"job '{other_id}' not found"
        task = httpx.request(method, f"{gw.url}/api/v1/tasks/{job_id}", headers=BOB)
        assert native_error(task, 404) == f"job '{job_id}' not found"
    assert read(gw, job_id, ADMIN)["request_id"] == job_id
    assert httpx.get(f"{gw.url}/api/jobs", headers=BOB).json() == {"jobs": []}
    assert [j["request_id"] for j in httpx.get(f"{gw.url}/api/jobs?all=1", headers=ADMIN).json()["jobs"]] == [job_id]
    everyone = httpx.get(f"{gw.url}/api/jobs?all=true", headers=ALICE)
    assert native_error(everyone, 403) == "only an admin may list every owner's jobs"
    backend.release()
    assert finished(gw, job_id)["status"] == "completed"


def test_jobs_list_the_callers_own_newest_first_filtered_by_status(gw: RunningGateway) -> None:
    first, second = submit(gw, job("one")), submit(gw, job("two"))
    finished(gw, first), finished(gw, second)
    submit(gw, job("bob's"), BOB)
    listed = httpx.get(f"{gw.url}/api/jobs", headers=ALICE).json()["jobs"]
    assert [j["request_id"] for j in listed] == [second, first]
    assert all("result" not in j and j["status"] == "completed" for j in listed)
    limited = httpx.get(f"{gw.url}/api/jobs?status=completed&limit=1", headers=ALICE).json()["jobs"]
    assert [j["request_id"] for j in limited] == [second]
    assert httpx.get(f"{gw.url}/api/jobs?status=failed", headers=ALICE).json() == {"jobs": []}
    bad_status = httpx.get(f"{gw.url}/api/jobs?status=done", headers=ALICE)
    assert native_error(bad_status, 400) == "status must be one of queued, processing, completed, failed, cancelled"
    assert native_error(httpx.get(f"{gw.url}/api/jobs?limit=0", headers=ALICE), 400) == \
        "limit must be between 1 and 1000"
    assert native_error(httpx.get(f"{gw.url}/api/jobs?limit=x", headers=ALICE), 400) == \
        "limit must be a positive integer"


# -- cancelling ---------------------------------------------------------------------------
def test_cancelling_a_queued_job_keeps_it_from_ever_running(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    running = submit(gw, job("running"))
    backend.wait_waiting(1)
    queued = submit(gw, job("queued"))
    assert status_of(gw, queued) == "queued" and status_of(gw, running) == "processing"
    cancelled = httpx.delete(f"{gw.url}/api/jobs/{queued}", headers=ALICE)
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["error"]) == ("cancelled", "cancelled")
    again = httpx.delete(f"{gw.url}/api/jobs/{queued}", headers=ALICE)
    assert native_error(again, 409) == f"job '{queued}' has ended already (cancelled)"
    backend.release()
    assert finished(gw, running)["status"] == "completed"
    assert markers(backend) == ["running"] and gw.drained()
    assert native_error(httpx.delete(f"{gw.url}/api/jobs/{running}", headers=ALICE), 409) == \
        f"job '{running}' has ended already (completed)"


def test_cancelling_a_running_job_cancels_it_upstream_and_frees_its_slot(
        gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    running = submit(gw, job("long"))
    backend.wait_waiting(1)
    cancelled = httpx.delete(f"{gw.url}/api/jobs/{running}", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    backend.wait_disconnects(1)
    wait_until(gw.drained, "the slot to be free")
    backend.release()
    assert finished(gw, submit(gw, job("next")))["status"] == "completed"
    assert read(gw, running)["status"] == "cancelled"


# -- the aging queue ------------------------------------------------------------------------
def test_jobs_wait_in_the_same_queue_by_priority_and_age_from_their_submission(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    clock = FakeClock()
    gw = gateways.start([backend], clock=clock, jobs={"admit_window": 1})
    backend.hold()
    first = submit(gw, job("c0"), CAROL)  # priority 3, holds the only slot
    backend.wait_waiting(1)
    windowed = submit(gw, job("c1"), CAROL)  # in the scheduler's queue
    held_back = submit(gw, job("c2"), CAROL)  # beyond the window: in the jobs index
    wait_until(lambda: gw.waiting() == 1, "one job in the scheduler's queue")
    clock.advance(30 * 60)  # 30 min at 0.1/min: the carol jobs are at effective priority 0
    with httpx.Client(base_url=gw.url, headers=BOB, timeout=10) as client:
        done = threading.Event()
        answer: list[httpx.Response] = []

        def bob() -> None:
            answer.append(client.post("/api/chat", json=chat("bob")))
            done.set()

        threading.Thread(target=bob, daemon=True).start()
        wait_until(lambda: gw.waiting() == 2, "bob's request in the queue")
        backend.release()
        for job_id in (first, windowed, held_back):
            assert finished(gw, job_id, CAROL)["status"] == "completed"
        assert done.wait(5) and answer[0].status_code == 200
    # c2 entered the queue only after c1 got its slot, yet with its submission time: ahead of bob
    assert markers(backend) == ["c0", "c1", "c2", "bob"]


def test_a_better_priority_job_overtakes_queued_jobs_beyond_the_window(gateways: GatewayFactory,
                                                                        backend: FakeBackend) -> None:
    gw = gateways.start([backend], jobs={"admit_window": 1})
    backend.hold()
    ids = [submit(gw, job(f"a{i}")) for i in range(4)]  # a0 runs, a1 waits in the queue, a2 a3 in the index
    backend.wait_waiting(1)
    urgent = submit(gw, job("bob"), BOB)
    backend.release()
    for job_id in [*ids, urgent]:
        assert finished(gw, job_id, ADMIN)["status"] == "completed"
    assert markers(backend) == ["a0", "a1", "bob", "a2", "a3"]


def test_a_job_that_waits_past_its_queue_timeout_fails(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], jobs={"queue_timeout_s": 0.3})
    backend.hold()
    running = submit(gw, job("slow"))
    backend.wait_waiting(1)
    waiting = finished(gw, submit(gw, job("late")))
    assert (waiting["status"], waiting["error"]) == (
        "failed", "timed out after 0.3s waiting in the queue for model 'llama3'")
    backend.release()
    assert finished(gw, running)["status"] == "completed"
    assert markers(backend) == ["slow"]


# -- seed 003 -------------------------------------------------------------------------------
def test_seed_003_text_generation_is_a_generate_job_read_as_a_task(gw: RunningGateway, backend: FakeBackend) -> None:
    response = httpx.post(f"{gw.url}/api/v1/inference/text-generation", headers=ALICE,
                          json={"model_name": "llama3", "prompt": "Once", "max_length": 20, "temperature": 0.5})
    assert response.status_code == 202
    task = response.json()
    assert set(task) == {"task_id", "status", "result", "error", "metadata"}
    assert (task["status"], task["result"]) == ("queued", None)
    assert response.headers["location"] == f"/api/v1/tasks/{task['task_id']}"
    wait_until(lambda: httpx.get(f"{gw.url}/api/v1/tasks/{task['task_id']}", headers=ALICE).json()["status"]
               == "completed", "the task to complete")
    done = httpx.get(f"{gw.url}/api/v1/tasks/{task['task_id']}", headers=ALICE).json()
    assert done["result"]["generated_text"] and done["result"]["done_reason"] == "stop"
    assert done["metadata"]["worker_id"] == "b0" and done["metadata"]["model_info"]["name"] == "llama3"
    assert done["metadata"]["processing_time"] >= 0
    (sent,) = backend.inference_requests()
    assert (sent.path, sent.json) == ("/api/generate", {"model": "llama3", "prompt": "Once", "stream": False,
                                                        "options": {"num_predict": 20, "temperature": 0.5}})
    assert read(gw, task["task_id"])["result"]["response"] == done["result"]["generated_text"]


@pytest.mark.parametrize(("body", "message"), [
    ({"prompt": "x"}, "model_name is required (a model name)"),
    ({"model_name": "llama3"}, "prompt is required (a string)"),
    ({"model_name": "llama3", "prompt": "x", "max_length": 0}, "max_length must be a positive integer"),
    ({"model_name": "llama3", "prompt": "x", "temperature": "hot"}, "temperature must be a number of 0 or more"),
    ({"model_name": "llama3", "prompt": "x", "top_k": 3}, "unknown field 'top_k'"),
])
def test_seed_003_bad_tasks_are_400(gw: RunningGateway, body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{gw.url}/api/v1/inference/text-generation", json=body, headers=ALICE)
    assert native_error(response, 400) == message


# -- webhooks -------------------------------------------------------------------------------
class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST, answers with scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.posts.append((scope["path"], orjson.loads(body)))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = [(b"content-length", b"0"), (b"location", b"/elsewhere")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, ThreadedServer]]:
    hook = Receiver([])
    with ThreadedServer(hook) as server:
        yield hook, server


WEBHOOKS = {"callback_hosts": ["127.0.0.1"], "callback_backoff_s": 0.01, "callback_attempts": 3}


def test_a_webhook_gets_the_finished_job_retried_until_it_is_taken(
        gateways: GatewayFactory, backend: FakeBackend, receiver: tuple[Receiver, ThreadedServer]) -> None:
    hook, server = receiver
    hook.statuses[:] = [500, 503]
    gw = gateways.start([backend], jobs=WEBHOOKS)
    job_id = submit(gw, job("hooked", callback_url=f"{server.url}/hook?token=abc"))
    wait_until(lambda: read(gw, job_id)["callback_state"] == "delivered", "the webhook to be delivered")
    assert [path for path, _ in hook.posts] == ["/hook"] * 3
    delivered = hook.posts[-1][1]
    assert delivered["request_id"] == job_id and delivered["status"] == "completed"
    assert delivered["result"]["done"] is True and delivered["callback_url"] == f"{server.url}/hook?token=abc"


def test_a_webhook_never_follows_a_redirect_and_gives_up_after_its_attempts(
        gateways: GatewayFactory, backend: FakeBackend, receiver: tuple[Receiver, ThreadedServer]) -> None:
    hook, server = receiver
    hook.statuses[:] = [307, 307, 307]
    gw = gateways.start([backend], jobs=WEBHOOKS)
    job_id = submit(gw, job("moved", callback_url=f"{server.url}/hook"))
    wait_until(lambda: read(gw, job_id)["callback_state"] == "failed", "the webhook to give up")
    assert [path for path, _ in hook.posts] == ["/hook"] * 3


@pytest.mark.parametrize(("url", "message"), [
    ("http://localhost:9/hook", "callback_url host 'localhost' is not one of jobs.callback_hosts"),
    ("http://127.0.0.1@evil.example/hook", "callback_url must not carry a user name or password"),
    ("http://evil.example#@127.0.0.1/hook", "callback_url host 'evil.example' is not one of jobs.callback_hosts"),
    ("http://user:pw@127.0.0.1/hook", "callback_url must not carry a user name or password"),
    ("ftp://127.0.0.1/hook", "callback_url must be an http:// or https:// URL"),
    ("http://127.0.0.1.evil.example/", "callback_url host '127.0.0.1.evil.example' is not one of jobs.callback_hosts"),
    ("http://127.0.0.1/a b", "callback_url must be a URL of at most 2048 characters without spaces"),
    (17, "callback_url must be a URL string"),
])
def test_webhooks_go_only_to_listed_hosts(gateways: GatewayFactory, backend: FakeBackend, url: Any,
                                          message: str) -> None:
    gw = gateways.start([backend], jobs=WEBHOOKS)
    response = httpx.post(f"{gw.url}/api/jobs", json=job("ssrf", callback_url=url), headers=ALICE)
    assert native_error(response, 400) == message
    assert backend.inference_requests() == []


# -- retention ------------------------------------------------------------------------------
def test_ended_jobs_are_pruned_after_the_retention_and_open_ones_never(gateways: GatewayFactory,
                                                                       backend: FakeBackend) -> None:
    wall = FakeClock(1_700_000_000.0)
    gw = gateways.start([backend], clocks=Clocks(wall=wall), jobs={"retention_hours": 24, "prune_s": 0.02})
    old = submit(gw, job("old"))
    assert finished(gw, old)["finished_at"] == wall.now
    wall.advance(23 * 3600)
    backend.hold()
    young = submit(gw, job("young"))  # stays open (running) while the clock moves on
    backend.wait_waiting(1)
    wall.advance(2 * 3600)  # `old` ended 25 h ago
    wait_until(lambda: httpx.get(f"{gw.url}/api/jobs/{old}", headers=ALICE).status_code == 404, "the old job pruned")
    assert status_of(gw, young) == "processing"
    backend.release()
    assert finished(gw, young)["status"] == "completed"


# -- the admission window -----------------------------------------------------------------
def test_only_the_window_of_jobs_waits_in_the_scheduler_and_has_a_task(gateways: GatewayFactory,
                                                                         backend: FakeBackend) -> None:
    gw = gateways.start([backend], jobs={"admit_window": 2})
    backend.hold()
    ids = [submit(gw, job(f"w{i}")) for i in range(10)]
    backend.wait_waiting(1)

    def job_tasks(_: Any) -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("job:"))

    wait_until(lambda: gw.waiting() == 2, "two jobs in the scheduler's queue")
    assert gw.on_loop(lambda g: g.jobs.runner.waiting()) == 7
    assert gw.on_loop(job_tasks) == 3  # the running one and the window, none for the other seven
    backend.release()
    for job_id in ids:
        assert finished(gw, job_id)["status"] == "completed"
    assert markers(backend) == [f"w{i}" for i in range(10)]


def test_jobs_that_find_the_queue_full_wait_and_enter_later(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = gateways.start([backend], queue={"max_waiting": 1}, jobs={"retry_s": 0.02})
    backend.hold()
    ids = [submit(gw, job(f"f{i}")) for i in range(4)]  # f0 runs, f1 fills the queue, f2 f3 wait
    backend.wait_waiting(1)
    assert gw.waiting() == 1 and [status_of(gw, i) for i in ids[1:]] == ["queued"] * 3
    backend.release()
    for job_id in ids:
        assert finished(gw, job_id)["status"] == "completed"
    assert markers(backend) == ["f0", "f1", "f2", "f3"]


def test_many_jobs_submitted_at_once_are_each_written_and_run_once(gw: RunningGateway, backend: FakeBackend) -> None:
    async def burst() -> list[str]:
        async with httpx.AsyncClient(base_url=gw.url, headers=ALICE, timeout=20) as client:
            answers = await asyncio.gather(*(client.post("/api/jobs", json=job(f"b{i}")) for i in range(40)))
        assert {a.status_code for a in answers} == {202}
        return [a.json()["request_id"] for a in answers]

    ids = asyncio.run(burst())
    assert len(set(ids)) == 40
    for job_id in ids:
        assert finished(gw, job_id, timeout=20)["status"] == "completed"
    assert sorted(markers(backend)) == sorted(f"b{i}" for i in range(40))


def test_a_job_whose_backend_cannot_be_reached_waits_and_runs_once_it_is_back(gateways: GatewayFactory) -> None:
    port = free_port()
    with FakeBackend(port=port) as first:
        gw = gateways.start([first], jobs={"retry_s": 0.02})
    job_id = submit(gw, job("patient"))  # the backend is gone: connection refused
    wait_until(lambda: read(gw, job_id)["metadata"]["attempts"] >= 1 and status_of(gw, job_id) == "queued",
               "a refused attempt")
    with FakeBackend(port=port) as back:
        done = finished(gw, job_id)
        assert done["status"] == "completed" and done["metadata"]["attempts"] >= 2
        assert markers(back) == ["patient"]


def test_queue_clear_fails_the_jobs_waiting_beyond_the_window_too(gateways: GatewayFactory,
                                                                  backend: FakeBackend) -> None:
    gw = gateways.start([backend], jobs={"admit_window": 1})
    backend.hold()
    ids = [submit(gw, job(f"c{i}")) for i in range(4)]  # c0 runs, c1 in the scheduler, c2 c3 in the index
    backend.wait_waiting(1)
    wait_until(lambda: gw.waiting() == 1, "one job in the scheduler's queue")
    response = httpx.post(gw.url + "/api/queue/clear", headers=ADMIN)
    assert response.json() == {"cleared": 3, "model": None}
    for job_id in ids[1:]:
        ended = finished(gw, job_id)
        assert (ended["status"], ended["error"]) == ("failed", "queue cleared by an administrator")
    backend.release()
    assert finished(gw, ids[0])["status"] == "completed"
    assert markers(backend) == ["c0"]
