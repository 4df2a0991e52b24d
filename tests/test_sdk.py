"""The Python SDK (`seadragon_gw.client`) against a real gateway in front of a fake backend:
every method at least once, streams as iterators, typed errors with the server's message,
JWT login and refresh on expiry, X-Client-ID and X-Priority."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from seadragon_gw.client import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    GatewayClient,
    NotFound,
    PermissionDenied,
    WaitTimeout,
)
from seadragon_gw.gateway import Clocks
from tests.conftest import ADMIN, FakeClock, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import wait_until

HELLO = [{"role": "user", "content": "hello"}]
PASSWORD = "a-long-password-1"
FAKE_SERVER = str(Path(__file__).parent / "support" / "fake_model_server.py")


@pytest.fixture
def admin(gw: RunningGateway) -> Any:
    with GatewayClient(gw.url, token="tok-admin") as client:
        yield client


@pytest.fixture
def alice(gw: RunningGateway) -> Any:
    with GatewayClient(gw.url, token="tok-alice") as client:
        yield client


def test_inference_answers_and_streams(alice: GatewayClient, backend: FakeBackend) -> None:
    answer = alice.chat("llama3", HELLO)
    assert answer["done"] is True
    assert answer["message"]["role"] == "assistant"
    chunks = list(alice.chat_stream("llama3", HELLO))
    assert len(chunks) == backend.chunks + 1
    assert chunks[-1]["done"] is True
    assert all(not c["done"] for c in chunks[:-1])
    assert alice.generate("llama3", "hi")["done"] is True
    generated = list(alice.generate_stream("llama3", "hi"))
    assert generated[-1]["done"] is True and len(generated) == backend.chunks + 1
    embedded = alice.embed("nomic-embed-text", ["a", "b"])
    assert len(embedded["embeddings"]) == 2
    completion = alice.chat_completion("llama3", HELLO)
    assert completion["object"] == "chat.completion"
    events = list(alice.chat_completion_stream("llama3", HELLO))
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    bodies = [r.json or {} for r in backend.inference_requests()]
    assert [b.get("stream") for b in bodies] == [False, True, False, True, None, False, True]


def test_listings_health_and_me(alice: GatewayClient) -> None:
    assert "llama3:latest" in [m["name"] for m in alice.models()["models"]]
    assert alice.health()["status"] == "healthy"
    me = alice.me()
    assert (me["name"], me["kind"], me["priority"], me["is_admin"]) == ("alice", "token", 2, False)
    assert alice.request("GET", "/api/version")["version"] == "0.12.6"


def test_typed_errors_carry_status_and_the_servers_message(gw: RunningGateway, alice: GatewayClient,
                                                           admin: GatewayClient) -> None:
    with pytest.raises(NotFound) as missing:
        alice.chat("no-such-model", HELLO)
    assert missing.value.status == 404
    assert missing.value.message == "model 'no-such-model' not found"
    assert missing.value.request_id
    with pytest.raises(PermissionDenied) as denied:
        alice.admin.list_keys()
    assert (denied.value.status, denied.value.message) == (403, "forbidden: this route needs an admin credential")
    with pytest.raises(BadRequest) as bad:
        admin.admin.create_key("x", allowed_models=[])
    assert bad.value.message == "allowed_models: must name at least one model (leave it out for all models)"
    with GatewayClient(gw.url, token="wrong") as stranger, pytest.raises(AuthenticationError) as refused:
        stranger.me()
    assert (refused.value.status, refused.value.message) == (401, "unauthorized: missing or invalid credentials")
    with pytest.raises(NotFound) as openai_missing:
        alice.chat_completion("no-such-model", HELLO)
    assert openai_missing.value.message == "model 'no-such-model' not found"
    with GatewayClient("http://127.0.0.1:9", token="x", timeout=2) as nowhere, \
            pytest.raises(ConnectionFailed) as unreachable:
        nowhere.me()
    assert unreachable.value.status == 0
    assert unreachable.value.message.startswith("GET /auth/me: ConnectError")


def test_api_keys_whitelist_tokens_and_users(gw: RunningGateway, admin: GatewayClient) -> None:
    created = admin.admin.create_key("sdk-app", priority=1, allowed_models=["llama3"])
    assert created["name"] == "sdk-app" and created["key"].startswith("sdk-")
    with GatewayClient(gw.url, api_key=created["key"]) as app:
        assert app.me()["name"] == "sdk-app"
        assert app.chat("llama3", HELLO)["done"] is True
        with pytest.raises(PermissionDenied):
            app.chat("qwen2.5:7b", HELLO)
        assert [k["name"] for k in admin.admin.list_keys()] == ["sdk-app"]
        assert admin.admin.revoke_key(created["id"])["is_active"] is False
        with pytest.raises(AuthenticationError) as revoked:
            app.me()
        assert revoked.value.status == 401

    entry = admin.admin.add_whitelist("10.20.0.0/16", priority=1, label="lab")
    assert (entry["ip"], entry["label"]) == ("10.20.0.0/16", "lab")
    with pytest.raises(Conflict) as twice:
        admin.admin.add_whitelist("10.20.0.0/16")
    assert twice.value.message == "ip: 10.20.0.0/16 is already whitelisted"
    assert [e["ip"] for e in admin.admin.list_whitelist()] == ["10.20.0.0/16"]
    assert admin.admin.remove_whitelist("10.20.0.0/16") == {"removed": "10.20.0.0/16"}

    token = admin.admin.create_registration_token(note="for ann")
    assert [t["note"] for t in admin.admin.list_registration_tokens()] == ["bootstrap admin", "for ann"]
    _register(gw, "ann", token["token"])
    assert [u["username"] for u in admin.admin.list_users()] == ["ann"]
    assert admin.admin.set_user_active("ann", False)["is_active"] is False
    assert admin.admin.set_user_active("ann", True)["is_active"] is True
    with pytest.raises(BadRequest) as tier:
        admin.admin.set_user_tier("ann", "gold")
    assert tier.value.message == "tier: no tier 'gold': no tiers are configured (rate_limits.tiers)"
    assert admin.admin.set_user_tier("ann", None)["tier"] is None


def _register(gw: RunningGateway, username: str, token: str) -> None:
    answer = httpx.post(gw.url + "/auth/register", json={"username": username, "password": PASSWORD,
                                                         "registration_token": token})
    assert answer.status_code == 201, answer.text


def test_password_login_and_refresh_when_the_access_token_expires(gateways: GatewayFactory,
                                                                  backend: FakeBackend) -> None:
    wall = FakeClock(time.time())
    gw = gateways.start([backend], clocks=Clocks(wall=wall), auth={"jwt_access_ttl_s": 60})
    with GatewayClient(gw.url, token="tok-admin") as admin:
        _register(gw, "ann", admin.admin.create_registration_token()["token"])
    with GatewayClient(gw.url, username="ann", password=PASSWORD) as ann:
        assert ann.session.token is None  # logs in at the first call
        assert ann.me()["kind"] == "jwt"
        first_access, first_refresh = ann.session.token, ann.session.refresh_token
        wall.advance(61)  # the access token has expired; the refresh token has not
        assert ann.chat("llama3", HELLO, priority="low")["done"] is True
        assert ann.session.token != first_access
        assert ann.session.refresh_token not in (None, first_refresh)  # refreshed, and rotated
        ann.logout()
        assert ann.session.refresh_token is None
    with GatewayClient(gw.url, username="ann", password="wrong-password") as wrong, \
            pytest.raises(AuthenticationError) as refused:
        wrong.me()
    assert refused.value.message == "unauthorized: wrong username or password"


def test_threads_sharing_a_client_refresh_once(gateways: GatewayFactory, backend: FakeBackend) -> None:
    """Sixteen threads share one client whose access token has expired and that holds only a
    refresh token: one refresh between them. A second refresh would send the refresh token the
    first one ended, and with no password to log in again that thread's call would fail."""
    wall = FakeClock(time.time())
    gw = gateways.start([backend], clocks=Clocks(wall=wall), auth={"jwt_access_ttl_s": 60})
    with GatewayClient(gw.url, token="tok-admin") as admin:
        _register(gw, "ann", admin.admin.create_registration_token()["token"])
    with GatewayClient(gw.url, username="ann", password=PASSWORD) as ann:
        ann.me()
        kept = ann.session.refresh_token
    sent: list[str] = []
    http = httpx.Client(base_url=gw.url, event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the GIL changes hands every microsecond: any check-then-set race shows
    try:
        with GatewayClient(gw.url, refresh_token=kept, http=http) as resumed:
            resumed.session.token = "expired"  # as a token past its lifetime is: answered 401
            start = threading.Barrier(16)
            names: list[str] = []
            errors: list[Exception] = []

            def call() -> None:
                start.wait()
                try:
                    names.append(resumed.me()["name"])
                except Exception as exc:  # collected: the assertion below shows them
                    errors.append(exc)

            threads = [threading.Thread(target=call) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and names == ["ann"] * 16
    assert sent.count("/auth/refresh") == 1, sent


def test_jobs_submit_get_wait_cancel_list(alice: GatewayClient, backend: FakeBackend) -> None:
    accepted = alice.jobs.submit("/api/generate", {"model": "llama3", "prompt": "hi"})
    assert accepted["status"] == "queued"
    done = alice.jobs.wait(accepted["request_id"], timeout=10, poll_s=0.02)
    assert done["status"] == "completed"
    assert done["result"]["done"] is True
    assert alice.jobs.get(accepted["request_id"])["status"] == "completed"
    backend.hold()
    held = alice.jobs.submit("/api/chat", {"model": "llama3", "messages": HELLO})
    with pytest.raises(WaitTimeout) as waited:
        alice.jobs.wait(held["request_id"], timeout=0.05, poll_s=0.01)
    assert waited.value.message.startswith(f"job {held['request_id']} is still ")
    assert alice.jobs.cancel(held["request_id"])["status"] == "cancelled"
    backend.release()
    assert [j["request_id"] for j in alice.jobs.list()] == [held["request_id"], accepted["request_id"]]
    assert [j["request_id"] for j in alice.jobs.list(status="completed")] == [accepted["request_id"]]
    with pytest.raises(NotFound):
        alice.jobs.get("no-such-job")


def test_client_id_and_priority_reach_the_queue(gw: RunningGateway, backend: FakeBackend,
                                                admin: GatewayClient) -> None:
    backend.hold()
    answers: list[dict[str, Any]] = []
    with GatewayClient(gw.url, token="tok-alice", client_id="sdk-ci") as alice:
        threads = [threading.Thread(target=lambda: answers.append(alice.chat("llama3", HELLO, priority="low")))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(admin.queue.status()["waiting"]) == 1, "one request waiting")
        waiting = admin.queue.status()["waiting"][0]
        assert (waiting["client_id"], waiting["priority"]) == ("sdk-ci", 3)
        backend.release()
        for thread in threads:
            thread.join(10)
    assert [a["done"] for a in answers] == [True, True]
    groups = admin.admin.usage(group_by="client")["groups"]
    assert [(g["client"], g["requests"]) for g in groups] == [("sdk-ci", 2)]


def test_queue_and_operations_views(admin: GatewayClient, alice: GatewayClient) -> None:
    assert alice.chat("llama3", HELLO)["done"] is True
    status = alice.queue.status()
    assert status["waiting"] == []
    assert {m["model"] for m in status["models"]} >= {"llama3:latest"}
    assert admin.queue.clear("llama3") == {"cleared": 0, "model": "llama3"}
    assert admin.admin.clear_queue() == {"cleared": 0, "model": None}
    assert admin.admin.stats()["queue_length"] == 0
    assert admin.admin.model_queue("llama3")["total_processed"] == 1
    with pytest.raises(NotFound):
        alice.chat("ghost", HELLO)
    assert [m["model_name"] for m in admin.admin.missing_models()] == ["ghost"]
    assert admin.admin.crashes(limit=5) == []
    assert admin.admin.usage(group_by="model")["groups"][0]["requests"] == 1


def test_managed_models_start_profile_stop(gateways: GatewayFactory, tmp_path: Path) -> None:
    managed = {"name": "local", "kind": "openai", "models": ["fake-model"], "max_concurrent": 1, "managed": {
        "command": [sys.executable, FAKE_SERVER, "--port", "{port}", "--host", "{host}"],
        "health": {"interval_s": 0.02}, "start_timeout_s": 10, "log_dir": str(tmp_path / "logs"),
        "start": "manual", "profiles": {"small": {"args": ["--tag", "small"]}, "large": {"args": ["--tag", "large"]}},
        "default_profile": "small"}}
    gw = gateways.start([managed])
    with GatewayClient(gw.url, token="tok-admin") as admin:
        assert [m["status"] for m in admin.admin.list_models()] == ["stopped"]
        started = admin.admin.start_model("local", profile="large")
        assert (started["status"], started["profile"]) == ("started", "large")
        switched = admin.admin.switch_profile("local", "small")
        assert (switched["status"], switched["profile"]) == ("switched", "small")
        assert admin.admin.list_backends()[0]["healthy"] is True
        assert isinstance(admin.admin.model_logs("local", lines=5)["lines"], list)
        with pytest.raises(BadRequest) as unknown:
            admin.admin.switch_profile("local", "huge")
        assert "huge" in unknown.value.message
        assert admin.admin.stop_model("local", graceful=False) == {"status": "stopped", "model": "local",
                                                                   "graceful": False}
        assert [m["status"] for m in admin.admin.list_models()] == ["stopped"]


def test_ocr_sends_the_image_and_resolution(gw: RunningGateway, alice: GatewayClient, tmp_path: Path) -> None:
    """No OCR backend here: the request still reaches /api/ocr with its resolution header and
    the gateway's answer comes back typed."""
    image = tmp_path / "page.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with pytest.raises(NotFound) as none:
        alice.ocr(image, resolution="1024")
    assert none.value.message == "no OCR backend: configure a backend with role: ocr"


def test_admin_headers_are_never_needed_by_hand(gw: RunningGateway) -> None:
    """The plain-httpx equivalent of admin.list_keys, for comparison: the SDK sends the same."""
    assert httpx.get(gw.url + "/api/admin/apikeys", headers=ADMIN).json() == {"apikeys": []}
