"""tokens.json authentication: anonymous reads, hot reload, both formats, priorities, no token in logs."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, ALICE, TOKENS, GatewayFactory, RunningGateway
from tests.support.checks import native_error, openai_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.shared import SharedGateways, module_gateways

CHAT_BODY = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}


shared = module_gateways("auth")


@pytest.fixture
def shared_gw(shared: SharedGateways) -> RunningGateway:
    """A gateway for tests that leave tokens.json alone (the others use `gw`, their own)."""
    shared.fresh()
    return shared.get()


@pytest.fixture
def gw(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    """A gateway of its own that looks at tokens.json every 20 ms (`auth.tokens_check_s`)."""
    return gateways.start([backend], auth={"tokens_check_s": 0.02})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rewrite_tokens(path: Path, content: str) -> None:
    """Write the file and move its mtime forward, so the change is seen even on coarse clocks."""
    before = path.stat().st_mtime
    path.write_text(content)
    os.utime(path, (before + 2, before + 2))


def ps_status(gw: RunningGateway, token: str) -> int:
    return httpx.get(gw.url + "/api/ps", headers=bearer(token)).status_code


# ------------------------------------------------------------------ anonymous access


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version"),
    ("GET", "/api/tags"), ("HEAD", "/api/tags"),
])
def test_anonymous_read_allowed(shared_gw: RunningGateway, method: str, path: str) -> None:
    assert httpx.request(method, shared_gw.url + path).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/chat", CHAT_BODY),
    ("POST", "/api/generate", {"model": "llama3", "prompt": "hi"}),
    ("POST", "/api/embed", {"model": "nomic-embed-text", "input": "hi"}),
    ("POST", "/api/show", {"model": "llama3"}),
    ("GET", "/api/ps", None),
])
def test_anonymous_refused_on_native_user_routes(shared: SharedGateways, shared_gw: RunningGateway,
                                                 method: str, path: str, body: dict | None) -> None:
    native_error(httpx.request(method, shared_gw.url + path, json=body), 401)
    assert shared.backend.inference_requests() == []


@pytest.mark.parametrize("path", ["/v1/models", "/api/models", "/v1/models/llama3"])
def test_anonymous_refused_on_openai_models(shared_gw: RunningGateway, path: str) -> None:
    openai_error(httpx.get(shared_gw.url + path), 401)


def test_anonymous_read_can_be_turned_off(shared: SharedGateways) -> None:
    gw = shared.get(auth={"anonymous_read": False})
    native_error(httpx.get(gw.url + "/api/tags"), 401)
    assert httpx.get(gw.url + "/api/tags", headers=ALICE).status_code == 200


# ------------------------------------------------------------------ tokens.json


def test_both_file_formats(gateways: GatewayFactory, backend: FakeBackend) -> None:
    tokens = {"plain": "tok-plain", "rich": {"token": "tok-rich", "priority": 1, "admin": True}}
    gw = gateways.start([backend], tokens=tokens)
    assert ps_status(gw, "tok-plain") == 200
    assert ps_status(gw, "tok-rich") == 200
    pull = {"model": "phi3", "stream": False}
    native_error(httpx.post(gw.url + "/api/pull", json=pull, headers=bearer("tok-plain")), 403)
    assert httpx.post(gw.url + "/api/pull", json=pull, headers=bearer("tok-rich")).status_code == 200


def test_hot_reload_add_and_remove(gw: RunningGateway) -> None:
    assert ps_status(gw, "tok-dave") == 401
    rewrite_tokens(gw.tokens_path, json.dumps({**TOKENS, "dave": "tok-dave"}))
    poll(lambda: ps_status(gw, "tok-dave") == 200, what="added token accepted")
    assert ps_status(gw, "tok-alice") == 200
    rewrite_tokens(gw.tokens_path, json.dumps(TOKENS))
    poll(lambda: ps_status(gw, "tok-dave") == 401, what="removed token refused")
    assert ps_status(gw, "tok-alice") == 200


def test_broken_file_keeps_last_good_set_and_logs_once(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.auth")
    assert ps_status(gw, "tok-alice") == 200
    rewrite_tokens(gw.tokens_path, '{"alice": "tok-alice", "eve": "tok-eve-secret",')

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "seadragon_gw.auth" and r.levelno >= logging.ERROR]

    poll(lambda: ps_status(gw, "tok-alice") == 200 and errors(), what="an error about the broken file")

    async def check_again() -> None:  # what the next lookups' periodic checks do, without waiting
        gw.gateway.auth.tokens.reload_if_changed()

    for _ in range(3):
        gw.server.call(check_again)
        assert ps_status(gw, "tok-alice") == 200 and ps_status(gw, "tok-bob") == 200
        assert ps_status(gw, "tok-eve-secret") == 401
    (error,) = errors()
    text = error.getMessage()
    assert "tokens" in text
    for secret in ("tok-alice", "tok-eve-secret", "tok-bob", "tok-admin"):
        assert secret not in text


def test_token_priority_reaches_the_queue(shared: SharedGateways, shared_gw: RunningGateway) -> None:
    gw, backend = shared_gw, shared.backend
    def chat(user: str) -> httpx.Response:
        body = {**CHAT_BODY, "messages": [{"role": "user", "content": user}]}
        return httpx.post(gw.url + "/api/chat", json=body, headers=bearer(f"tok-{user}"), timeout=10)

    backend.hold()
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(chat, "alice")
        backend.wait_waiting(1)
        queued = [pool.submit(chat, user) for user in ("carol", "bob")]
        poll(lambda: gw.waiting() == 2, what="two queued requests")
        priorities = gw.on_loop(lambda g: sorted(w.priority for w in g.scheduler.waiting_requests()))
        assert priorities == [1, 3]  # bob 1, carol 3, from tokens.json
        backend.release()
        assert [f.result(10).status_code for f in (first, *queued)] == [200, 200, 200]
    order = [r.json["messages"][0]["content"] for r in backend.inference_requests()]
    assert order == ["alice", "bob", "carol"]


# ------------------------------------------------------------------ never log a token


def test_tokens_never_logged(gateways: GatewayFactory, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateways.start([backend])
    wrong = "tok-wrong-very-secret"
    with httpx.Client(timeout=10) as client:
        client.post(gw.url + "/api/chat", json=CHAT_BODY, headers=ALICE)
        client.post(gw.url + "/v1/chat/completions", json=CHAT_BODY, headers=ALICE)
        client.post(gw.url + "/api/pull", json={"model": "phi3", "stream": False}, headers=ADMIN)
        client.post(gw.url + "/api/pull", json={"model": "phi3"}, headers=ALICE)
        assert client.get(gw.url + "/api/ps", headers=bearer(wrong)).status_code == 401
        assert client.get(gw.url + "/v1/models", headers=bearer(wrong)).status_code == 401
        rewrite_tokens(gw.tokens_path, json.dumps({**TOKENS, "dave": "tok-dave"}))
        poll(lambda: client.get(gw.url + "/api/ps", headers=bearer("tok-dave")).status_code == 200,
             what="reloaded tokens")
    assert caplog.records, "expected some log records (at least the tokens file load)"
    secrets = [wrong, "tok-dave", *(v if isinstance(v, str) else v["token"] for v in TOKENS.values())]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for secret in secrets:
            assert secret not in text, f"token leaked in a log record from {record.name}"
    assert not any(secret in caplog.text for secret in secrets)


def auth_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "seadragon_gw.auth" and r.levelno == level]


def reported(gw: RunningGateway, caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """The file is looked at when a token is looked up: make one lookup, then look at the log."""
    ps_status(gw, "tok-carol")
    return auth_records(caplog, level)


def me(gw: RunningGateway, token: str) -> httpx.Response:
    return httpx.get(gw.url + "/auth/me", headers=bearer(token))


def test_two_users_with_the_same_token_are_refused_naming_both(
        gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.auth")
    rewrite_tokens(gw.tokens_path, json.dumps({**TOKENS, "dave": "tok-dave", "mallory": "tok-alice"}))
    (error,) = poll(lambda: reported(gw, caplog, logging.ERROR), what="the duplicate to be reported")
    assert error.getMessage() == (f"tokens file {gw.tokens_path}: entries 'alice' and 'mallory' have the same "
                                  "token; keeping the last good set")
    assert me(gw, "tok-alice").json()["name"] == "alice"  # the last good set, whole
    assert ps_status(gw, "tok-dave") == 401


def test_a_json_error_names_its_line_and_column(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.auth")
    rewrite_tokens(gw.tokens_path, '{\n  "alice": "tok-alice",\n  "eve": \n}\n')
    (error,) = poll(lambda: reported(gw, caplog, logging.ERROR), what="the syntax error to be reported")
    assert error.getMessage() == (f"tokens file {gw.tokens_path}: invalid JSON at line 4 column 1: "
                                  "Expecting value; keeping the last good set")
    assert ps_status(gw, "tok-bob") == 200


def test_a_user_listed_twice_is_refused(gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.auth")
    rewrite_tokens(gw.tokens_path, '{"alice": "tok-alice", "alice": "tok-other"}')
    (error,) = poll(lambda: reported(gw, caplog, logging.ERROR), what="the repeated user to be reported")
    assert "user 'alice' is listed twice" in error.getMessage()
    assert ps_status(gw, "tok-other") == 401 and ps_status(gw, "tok-bob") == 200


def test_a_deleted_file_revokes_its_tokens_with_one_warning(
        gw: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.auth")
    assert ps_status(gw, "tok-alice") == 200
    gw.tokens_path.unlink()
    poll(lambda: ps_status(gw, "tok-alice") == 401, what="the tokens to be revoked")

    async def check_again() -> None:  # what the next lookups' periodic checks do, without waiting
        gw.gateway.auth.tokens.reload_if_changed()

    for _ in range(3):
        gw.server.call(check_again)
        assert ps_status(gw, "tok-bob") == 401
    (warning,) = auth_records(caplog, logging.WARNING)
    assert warning.getMessage() == f"tokens file {gw.tokens_path}: deleted; its 4 token(s) no longer work"
    gw.tokens_path.write_text(json.dumps(TOKENS))
    poll(lambda: ps_status(gw, "tok-alice") == 200, what="the file's tokens to work again")
