"""Issue 3, every credential kind end to end: real clients -> real gateway -> fake backend.

API keys (ollama-py with X-API-Key or Bearer, openai-py with api_key), registered users
(httpx form login, Bearer JWT, refresh), the IP whitelist (the client bound to another
loopback source address) and trusted proxies; then the priorities each credential grants,
shown by the order a held backend receives queued requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import jwt
import ollama
import openai
import pytest

from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import markers, wait_until
from tests.support.identity import (
    PASSWORD,
    Admin,
    Shared,
    bearer,
    from_ip,
    http,
    login,
    new_user,
    post_chat,
    register,
    shared_gateway,
    start,
)

ANSWER = "chunk0 chunk1 chunk2 "
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with shared_gateway(tmp_path_factory, "identity") as shared:
        yield shared


@pytest.fixture
def gw(gateways: GatewayFactory, backend: FakeBackend) -> RunningGateway:
    """conftest's `gw` (one slot, its own gateway), with the fast password hasher."""
    return start(gateways, [backend])


# ------------------------------------------------------------------ API keys


def test_api_key_in_x_api_key_header_with_ollama(env: Shared) -> None:
    key = env.admin.create_key("ollama-header")["key"]
    client = ollama.Client(host=env.url, headers={"X-API-Key": key})
    assert client.chat(model="llama3", messages=MESSAGES).message.content == ANSWER
    parts = list(client.chat(model="llama3", messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in parts) == ANSWER


def test_api_key_as_bearer_with_ollama(env: Shared) -> None:
    key = env.admin.create_key("ollama-bearer")["key"]
    client = ollama.Client(host=env.url, headers={"Authorization": f"Bearer {key}"})
    assert client.generate(model="llama3", prompt="hi").response == ANSWER


def test_api_key_with_openai_client(env: Shared) -> None:
    key = env.admin.create_key("openai")["key"]
    client = openai.OpenAI(base_url=env.url + "/v1", api_key=key, max_retries=0, timeout=10)
    resp = client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert resp.choices[0].message.content == ANSWER
    wrong = openai.OpenAI(base_url=env.url + "/v1", api_key=key + "x", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="llama3", messages=MESSAGES)


def test_api_key_creation_returns_key_once_with_its_fields(env: Shared) -> None:
    created = env.admin.create_key("fields", priority=4, allowed_models=["llama3"], rate_limit_per_min=30)
    assert created["key"].startswith("sdk-") and created["key"].startswith(created["prefix"])
    assert len(created["prefix"]) < len(created["key"])
    assert (created["priority"], created["allowed_models"], created["rate_limit_per_min"]) == (4, ["llama3"], 30)
    assert created["is_active"] is True and created["is_admin"] is False and created["last_used"] is None
    listed = next(k for k in env.admin.api_keys() if k["id"] == created["id"])
    assert "key" not in listed and listed["prefix"] == created["prefix"]


def test_api_key_last_used_is_recorded_after_use(env: Shared) -> None:
    key = env.admin.create_key("last-used")
    assert post_chat(env.url, {"X-API-Key": key["key"]}).status_code == 200
    # Batched (write-behind), so it lands within the flush interval, not synchronously.
    wait_until(lambda: next(k for k in env.admin.api_keys() if k["id"] == key["id"])["last_used"] is not None,
               "last_used to be flushed", timeout=5)


# ------------------------------------------------------------------ users and JWT


def test_register_then_form_login_then_bearer_jwt(env: Shared) -> None:
    token = env.admin.registration_token()
    created = register(env.url, "wendy", token)
    assert created.status_code == 201 and created.json() == {"username": "wendy", "is_admin": False}
    response = login(env.url, "wendy")
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) >= {"access_token", "refresh_token", "token_type"} and pair["token_type"] == "bearer"
    assert response.headers["cache-control"] == "no-store"
    chat_resp = post_chat(env.url, bearer(pair["access_token"]))
    assert chat_resp.status_code == 200 and chat_resp.json()["message"]["content"] == ANSWER
    client = ollama.Client(host=env.url, headers=bearer(pair["access_token"]))
    assert client.chat(model="llama3", messages=MESSAGES).message.content == ANSWER
    me = http.get(env.url + "/auth/me", headers=bearer(pair["access_token"])).json()
    assert me == {"name": "wendy", "kind": "jwt", "priority": 3, "is_admin": False, "limits": {"enabled": False}}


def test_login_with_wrong_password_is_401(env: Shared) -> None:
    new_user(env.url, env.admin, "walter")
    assert native_error(login(env.url, "walter", PASSWORD + "!"), 401)
    assert native_error(login(env.url, "nobody-here", PASSWORD), 401)


def test_refresh_gives_a_working_new_pair(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "rita")
    refreshed = http.post(env.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200
    fresh = refreshed.json()
    assert fresh["token_type"] == "bearer"
    assert fresh["access_token"] != pair["access_token"] and fresh["refresh_token"] != pair["refresh_token"]
    assert post_chat(env.url, bearer(fresh["access_token"])).status_code == 200
    # The OAuth2 form of the same thing, on /auth/token.
    form = http.post(env.url + "/auth/token",
                      data={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]})
    assert form.status_code == 200
    assert post_chat(env.url, bearer(form.json()["access_token"])).status_code == 200


def test_jwt_secret_from_environment_signs_the_tokens(
        gateways: GatewayFactory, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "from-the-environment-" + "x" * 32
    monkeypatch.setenv("SEADRAGON_JWT_SECRET", secret)
    gw = start(gateways, [backend])
    access = new_user(gw.url, Admin(gw.url), "envy")["access_token"]
    claims = jwt.decode(access, secret, algorithms=["HS256"])  # verifies with the env secret
    assert (claims["sub"], claims["typ"], claims["exp"] - claims["iat"]) == ("envy", "access", 3600)
    assert gw.server.call(gw.gateway.store.settings.get, "jwt_secret") is None  # nothing generated


def test_access_token_is_refused_by_refresh(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "ross")
    response = http.post(env.url + "/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert native_error(response, 401)


# ------------------------------------------------------------------ IP whitelist and proxies


def test_whitelisted_source_address_needs_no_header(env: Shared) -> None:
    env.admin.whitelist("127.0.0.2", label="cline")
    with from_ip("127.0.0.2") as allowed, from_ip("127.0.0.3") as other:
        assert post_chat(env.url, client=allowed).status_code == 200
        assert native_error(post_chat(env.url, client=other), 401)
    ide = ollama.Client(host=env.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert ide.chat(model="llama3", messages=MESSAGES).message.content == ANSWER
    stranger = ollama.Client(host=env.url, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
    with pytest.raises(ollama.ResponseError) as error:
        stranger.chat(model="llama3", messages=MESSAGES)
    assert error.value.status_code == 401


def test_whitelisted_cidr_range_covers_its_hosts(env: Shared) -> None:
    env.admin.whitelist("127.0.5.0/24")
    with from_ip("127.0.5.9") as inside, from_ip("127.0.6.9") as outside:
        assert post_chat(env.url, client=inside).status_code == 200
        assert post_chat(env.url, client=outside).status_code == 401


def test_trusted_proxy_forwarded_for_is_believed(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend], auth={"trusted_proxies": ["127.0.0.1"]})
    Admin(gw.url).whitelist("10.1.2.3")
    assert post_chat(gw.url, {"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert post_chat(gw.url, {"X-Real-IP": "10.1.2.3"}).status_code == 200
    # The proxy itself (127.0.0.1) is not whitelisted, nor is another forwarded client.
    assert native_error(post_chat(gw.url), 401)
    assert native_error(post_chat(gw.url, {"X-Forwarded-For": "10.1.2.4"}), 401)


# ------------------------------------------------------------------ priorities, by dispatch order


class Queuer:
    """Sends requests on worker threads, each confirmed queued in the gateway before the next."""

    def __init__(self, gw: RunningGateway, backend: FakeBackend) -> None:
        self.gw = gw
        self.backend = backend
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.sent: list[Future[httpx.Response]] = []

    def _post(self, marker: str, headers: dict[str, str] | None, source: str) -> httpx.Response:
        with from_ip(source) as client:
            return post_chat(self.gw.url, headers, marker=marker, client=client)

    def occupy(self) -> None:
        """Hold the backend and park a first request in its only slot."""
        self.backend.hold()
        self.sent.append(self.pool.submit(self._post, "first", ALICE, "127.0.0.1"))
        self.backend.wait_waiting(1)

    def enqueue(self, marker: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1") -> None:
        before = self.gw.waiting()
        self.sent.append(self.pool.submit(self._post, marker, headers, source))
        wait_until(lambda: self.gw.waiting() == before + 1, f"{marker} to be queued")

    def release_and_order(self) -> list[str]:
        self.backend.release()
        assert [f.result(timeout=10).status_code for f in self.sent] == [200] * len(self.sent)
        self.pool.shutdown()
        order = markers(self.backend)
        assert order[0] == "first"
        return order[1:]


def test_api_key_custom_priority_orders_dispatch(gw: RunningGateway, backend: FakeBackend) -> None:
    admin = Admin(gw.url)
    vip = admin.create_key("vip", priority=0)["key"]
    batch = admin.create_key("batch", priority=5)["key"]
    q = Queuer(gw, backend)
    q.occupy()
    q.enqueue("batch-p5", {"X-API-Key": batch})
    q.enqueue("alice-p2", ALICE)
    q.enqueue("vip-p0", bearer(vip))
    assert q.release_and_order() == ["vip-p0", "alice-p2", "batch-p5"]


def test_x_priority_high_cannot_raise_above_the_key(gw: RunningGateway, backend: FakeBackend) -> None:
    admin = Admin(gw.url)
    normal = admin.create_key("normal", priority=2)["key"]
    prio1 = admin.create_key("prio1", priority=1)["key"]
    q = Queuer(gw, backend)
    q.occupy()
    q.enqueue("p2-asks-high", {"X-API-Key": normal, "X-Priority": "high"})
    q.enqueue("p1-plain", {"X-API-Key": prio1})
    # Had `high` lifted the first to 1 it would tie and win by arrival; it stays at 2.
    assert q.release_and_order() == ["p1-plain", "p2-asks-high"]


def test_x_priority_low_lowers_the_request(gw: RunningGateway, backend: FakeBackend) -> None:
    vip = Admin(gw.url).create_key("vip", priority=0)["key"]
    q = Queuer(gw, backend)
    q.occupy()
    q.enqueue("vip-asks-low", {"X-API-Key": vip, "X-Priority": "low"})       # 0 -> 3
    q.enqueue("vip-asks-normal", {"X-API-Key": vip, "X-Priority": "normal"})  # 0 -> 2
    q.enqueue("alice-p2", ALICE)
    q.enqueue("vip-plain", {"X-API-Key": vip})                                # 0
    assert q.release_and_order() == ["vip-plain", "vip-asks-normal", "alice-p2", "vip-asks-low"]


def test_jwt_gets_3_and_whitelist_defaults_to_1(gw: RunningGateway, backend: FakeBackend) -> None:
    admin = Admin(gw.url)
    admin.whitelist("127.0.0.2")
    jwt = new_user(gw.url, admin, "webchat")["access_token"]
    q = Queuer(gw, backend)
    q.occupy()
    q.enqueue("jwt", bearer(jwt))
    q.enqueue("alice-p2", ALICE)
    q.enqueue("whitelisted", None, source="127.0.0.2")
    assert q.release_and_order() == ["whitelisted", "alice-p2", "jwt"]


def test_bad_x_priority_is_400(env: Shared) -> None:
    key = env.admin.create_key("bad-prio")["key"]
    assert "X-Priority" in native_error(post_chat(env.url, {"X-API-Key": key, "X-Priority": "urgent"}), 400)
