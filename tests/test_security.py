"""Issue 3, the security cases, one test each, through a real gateway.

The shared gateway is configured with a known `auth.jwt_secret`, so tests can forge tokens
exactly as an attacker who knew (or guessed wrong) the secret would.
"""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import openai
import pytest

from tests.conftest import ALICE, GatewayFactory
from tests.support.checks import native_error, openai_error, poll
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat
from tests.support.identity import (
    PASSWORD,
    Admin,
    Shared,
    bearer,
    capture_all_logs,
    from_ip,
    http,
    login,
    new_user,
    post_chat,
    register,
    shared_gateway,
    snapshot,
    start,
)

SECRET = "test-secret-for-forging-tokens-" + "0123456789" * 4  # long enough for HS512
WHITELISTED = "127.0.0.4"


@dataclass
class Env:
    shared: Shared
    eve: dict[str, Any]       # a non-admin user's token pair
    user_key: str             # a non-admin API key
    victim_key_id: int

    @property
    def url(self) -> str:
        return self.shared.url

    @property
    def admin(self) -> Admin:
        return self.shared.admin


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with shared_gateway(tmp_path_factory, "security", auth={"jwt_secret": SECRET}) as shared:
        admin = shared.admin
        eve = new_user(shared.url, admin, "eve")
        user_key = admin.create_key("eve-key", priority=2)["key"]
        victim = admin.create_key("victim")
        admin.whitelist(WHITELISTED)
        admin.whitelist("10.77.0.1")
        new_user(shared.url, admin, "victim")
        new_user(shared.url, admin, "sleeper")
        admin.ok("POST", "/api/admin/users/sleeper/deactivate")
        yield Env(shared, eve, user_key, victim["id"])


def forge(sub: str = "eve", *, secret: str = SECRET, alg: str = "HS256", typ: str = "access",
          exp_in: int = 600) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now - 60, "exp": now + exp_in, "typ": typ, "jti": "forged"}
    return jwt.encode(claims, secret, algorithm=alg)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# ------------------------------------------------------------------ JWT


def test_forged_token_with_the_right_secret_works(env: Env) -> None:
    """The control for the JWT cases below: only the property each one breaks differs."""
    assert post_chat(env.url, bearer(forge())).status_code == 200


def test_expired_jwt_is_401(env: Env) -> None:
    assert "expired" in native_error(post_chat(env.url, bearer(forge(exp_in=-5))), 401)


def test_jwt_with_wrong_signature_is_401(env: Env) -> None:
    assert "signature" in native_error(post_chat(env.url, bearer(forge(secret=SECRET + "-wrong"))), 401)
    header, _, signature = env.eve["access_token"].split(".")
    claims = jwt.decode(env.eve["access_token"], options={"verify_signature": False})
    tampered = f"{header}.{b64({**claims, 'sub': 'victim'})}.{signature}"
    assert native_error(post_chat(env.url, bearer(tampered)), 401)


def test_jwt_with_alg_none_is_401(env: Env) -> None:
    claims = jwt.decode(forge(), options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."
        assert "algorithm" in native_error(post_chat(env.url, bearer(unsigned)), 401)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_jwt_with_another_algorithm_is_401(env: Env, alg: str) -> None:
    assert "algorithm" in native_error(post_chat(env.url, bearer(forge(alg=alg))), 401)


def test_refresh_token_used_as_access_token_is_401(env: Env) -> None:
    assert native_error(post_chat(env.url, bearer(env.eve["refresh_token"])), 401)
    assert native_error(post_chat(env.url, bearer(forge(typ="refresh"))), 401)


def test_jwt_for_unknown_user_is_401(env: Env) -> None:
    assert native_error(post_chat(env.url, bearer(forge("mallory"))), 401)


def test_deactivated_users_jwt_is_401(env: Env) -> None:
    pair = new_user(env.url, env.admin, "dana")
    assert post_chat(env.url, bearer(pair["access_token"])).status_code == 200
    env.admin.ok("POST", "/api/admin/users/dana/deactivate")
    assert native_error(post_chat(env.url, bearer(pair["access_token"])), 401)
    assert native_error(http.post(env.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401)
    assert native_error(login(env.url, "dana"), 401)


# ------------------------------------------------------------------ API keys


def test_revoked_key_is_401_on_the_next_request(env: Env) -> None:
    key = env.admin.create_key("to-revoke")
    assert post_chat(env.url, {"X-API-Key": key["key"]}).status_code == 200
    env.admin.ok("DELETE", f"/api/admin/apikeys/{key['id']}")
    assert native_error(post_chat(env.url, {"X-API-Key": key["key"]}), 401)
    assert native_error(post_chat(env.url, bearer(key["key"])), 401)


def test_expired_key_is_401(env: Env) -> None:
    key = env.admin.create_key("short-lived", expires_in_s=1)
    headers = {"X-API-Key": key["key"]}
    assert post_chat(env.url, headers).status_code == 200
    poll(lambda: post_chat(env.url, headers).status_code == 401, what="the key to expire")
    assert native_error(post_chat(env.url, headers), 401) == "unauthorized: API key expired"


def test_key_for_a_model_outside_its_allowed_list_is_403(env: Env) -> None:
    key = env.admin.create_key("llama-only", allowed_models=["llama3"])["key"]
    assert "qwen2.5:7b" in native_error(post_chat(env.url, {"X-API-Key": key}, model="qwen2.5:7b"), 403)
    assert post_chat(env.url, {"X-API-Key": key}, model="llama3:latest").status_code == 200
    assert post_chat(env.url, {"X-API-Key": key}, model="llama3").status_code == 200
    client = openai.OpenAI(base_url=env.url + "/v1", api_key=key, max_retries=0, timeout=10)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="qwen2.5:7b", messages=chat()["messages"])
    embed = http.post(env.url + "/api/embed", json={"model": "nomic-embed-text", "input": "x"},
                      headers={"X-API-Key": key})
    assert native_error(embed, 403)


def test_model_restricted_key_sees_only_its_models_in_listings(env: Env) -> None:
    key = env.admin.create_key("llama-lister", allowed_models=["llama3"])["key"]
    tags = http.get(env.url + "/api/tags", headers={"X-API-Key": key}).json()["models"]
    assert [m["name"] for m in tags] == ["llama3:latest"]
    assert len(http.get(env.url + "/api/tags").json()["models"]) > 1  # anonymous: the full list
    client = openai.OpenAI(base_url=env.url + "/v1", api_key=key, max_retries=0, timeout=10)
    assert [m.id for m in client.models.list()] == ["llama3:latest"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("qwen2.5:7b")


# ------------------------------------------------------------------ addresses


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(env: Env) -> None:
    env.admin.whitelist("10.9.9.9")  # no trusted_proxies configured: 127.0.0.1 is just a client
    assert native_error(post_chat(env.url, {"X-Forwarded-For": "10.9.9.9"}), 401)
    assert native_error(post_chat(env.url, {"X-Real-IP": "10.9.9.9"}), 401)
    assert native_error(post_chat(env.url, {"X-Forwarded-For": "10.9.9.9, 127.0.0.1"}), 401)


@pytest.mark.parametrize("headers", [
    {"X-API-Key": "sdk-not-a-real-key"},
    {"Authorization": "Bearer sdk-not-a-real-key"},
    {"Authorization": "Bearer tok-unknown"},
    {"Authorization": f"Bearer {forge(secret=SECRET[::-1])}"},
    {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    {"Authorization": "Bearer"},
], ids=["x-api-key", "bearer-key", "bearer-token", "bearer-jwt", "basic-scheme", "empty-bearer"])
def test_invalid_explicit_credential_from_whitelisted_address_is_401(env: Env, headers: dict[str, str]) -> None:
    with from_ip(WHITELISTED) as client:
        assert post_chat(env.url, client=client).status_code == 200  # the address alone is enough
        assert native_error(post_chat(env.url, headers, client=client), 401)


def test_no_credential_is_401(env: Env) -> None:
    response = post_chat(env.url)
    assert native_error(response, 401) and response.headers["www-authenticate"] == "Bearer"
    assert openai_error(http.post(env.url + "/v1/chat/completions", json=chat()), 401)
    assert native_error(http.get(env.url + "/auth/me"), 401)


# ------------------------------------------------------------------ registration


def test_registration_token_reused_is_403(env: Env) -> None:
    token = env.admin.registration_token()
    assert register(env.url, "first-comer", token).status_code == 201
    assert native_error(register(env.url, "second-comer", token), 403)
    assert "second-comer" not in {u["username"] for u in env.admin.users()}


def test_expired_registration_token_is_403(env: Env) -> None:
    made = env.admin.ok("POST", "/api/admin/tokens", {"expires_in_s": 0.2}, status=201)
    poll(lambda: time.time() > made["expires_at"], what="the token's expiry time to pass")
    assert native_error(register(env.url, "too-late", made["token"]), 403) == \
        "registration token is invalid, used or expired"
    assert "too-late" not in {u["username"] for u in env.admin.users()}


# ------------------------------------------------------------------ admin routes

# (method, concrete path, body): every admin route, aimed at real rows where it names one.
ADMIN_CALLS = [
    ("GET", "/api/admin/whitelist", None),
    ("POST", "/api/admin/whitelist", {"ip": "10.66.0.1"}),
    ("DELETE", "/api/admin/whitelist/10.77.0.1", None),
    ("GET", "/api/admin/tokens", None),
    ("POST", "/api/admin/tokens", {"is_admin": True}),
    ("GET", "/api/admin/apikeys", None),
    ("POST", "/api/admin/apikeys", {"name": "sneaky", "is_admin": True}),
    ("DELETE", "/api/admin/apikeys/{victim_key_id}", None),
    ("GET", "/api/admin/users", None),
    ("POST", "/api/admin/users/victim/deactivate", None),
    ("POST", "/api/admin/users/sleeper/activate", None),
    ("GET", "/api/admin/stats", None),  # operations: queue, stats, metrics
    ("GET", "/api/admin/queue/llama3", None),
    ("GET", "/admin/queue/llama3", None),
    ("POST", "/api/queue/clear", None),
    ("GET", "/metrics", None),
    ("PATCH", "/api/admin/users/victim", {"tier": None}),  # rate-limit tiers; usage, crash, missing-model logs
    ("GET", "/api/admin/usage", None),
    ("GET", "/api/admin/crashes", None),
    ("GET", "/admin/crashes", None),
    ("GET", "/api/admin/missing-models", None),
    ("GET", "/admin/missing-models", None),
    ("GET", "/api/admin/models", None),  # managed models and backends (issue 9)
    ("GET", "/admin/models", None),
    ("POST", "/api/admin/models/b0/start", None),
    ("POST", "/api/admin/models/b0/stop?graceful=false", None),
    ("POST", "/admin/models/b0/stop", None),
    ("POST", "/api/admin/models/b0/profile?profile=large", None),
    ("GET", "/api/admin/models/b0/logs", None),
    ("GET", "/api/admin/backends", None),
    ("GET", "/api/admin/overview", None),  # the admin page's overview (issue 10)
    ("POST", "/api/admin/ocr/resolution?resolution=tiny", None),  # OCR (issue 9)
    ("POST", "/admin/ocr/resolution?resolution=tiny", None),
    ("PATCH", "/api/admin/users/victim", {"is_admin": True}),
]
# Which route template each call exercises, to check the list covers the app's routes.
ADMIN_TEMPLATES = {
    ("GET", "/api/admin/whitelist"), ("POST", "/api/admin/whitelist"), ("DELETE", "/api/admin/whitelist/{ip:path}"),
    ("GET", "/api/admin/tokens"), ("POST", "/api/admin/tokens"), ("GET", "/api/admin/apikeys"),
    ("POST", "/api/admin/apikeys"), ("DELETE", "/api/admin/apikeys/{key}"), ("GET", "/api/admin/users"),
    ("POST", "/api/admin/users/{username}/{action:str}"),
    ("GET", "/api/admin/stats"), ("GET", "/api/admin/queue/{model:path}"),
    ("PATCH", "/api/admin/users/{username}"), ("GET", "/api/admin/usage"), ("GET", "/api/admin/crashes"),
    ("GET", "/api/admin/missing-models"),
    ("GET", "/api/admin/models"), ("POST", "/api/admin/models/{name}/start"), ("POST", "/api/admin/models/{name}/stop"),
    ("POST", "/api/admin/models/{name}/profile"), ("GET", "/api/admin/models/{name}/logs"),
    ("GET", "/api/admin/backends"), ("GET", "/api/admin/overview"), ("POST", "/api/admin/ocr/resolution"),
}


def test_admin_call_list_covers_every_admin_route(env: Env) -> None:
    routes = {(method, route.path) for route in env.shared.gw.app.routes
              if getattr(route, "path", "").startswith("/api/admin") for method in route.methods - {"HEAD"}}
    assert routes == ADMIN_TEMPLATES


def _call(env: Env, who: str, method: str, path: str, body: Any) -> httpx.Response:
    headers = {"alice": ALICE, "key": {"X-API-Key": env.user_key}, "key-bearer": bearer(env.user_key),
               "jwt": bearer(env.eve["access_token"]), "whitelisted": {}, "nobody": {}}[who]
    if who != "whitelisted":
        return http.request(method, env.url + path, json=body, headers=headers)
    with from_ip(WHITELISTED) as client:
        return client.request(method, env.url + path, json=body)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
@pytest.mark.parametrize(("who", "status"), [
    ("alice", 403), ("key", 403), ("key-bearer", 403), ("jwt", 403), ("whitelisted", 403), ("nobody", 401),
])
def test_non_admin_on_every_admin_route_is_refused(
        env: Env, who: str, status: int, method: str, path: str, body: Any) -> None:
    before = snapshot(env.admin)
    response = _call(env, who, method, path.format(victim_key_id=env.victim_key_id), body)
    assert native_error(response, status)
    assert snapshot(env.admin) == before  # and nothing changed


# ------------------------------------------------------------------ secrets at rest and in logs


def test_secrets_are_not_stored_in_the_database_file(env: Env) -> None:
    key = env.admin.create_key("at-rest")["key"]
    token = env.admin.registration_token()
    assert register(env.url, "rest", token, "at rest password 1").status_code == 201
    files = sorted(env.shared.tmp_path.glob("gw.db*"))
    assert files and any(f.name == "gw.db" for f in files)
    for file in files:
        data = file.read_bytes()
        for secret in (key, token, "at rest password 1", key[len("sdk-"):]):
            assert secret.encode() not in data, (file.name, secret[:8])


def test_secrets_never_appear_in_logs(
        gateways: GatewayFactory, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    wrong_key, wrong_password = "sdk-" + "W" * 43, "not the password 1"
    with capture_all_logs(caplog.handler):
        # log_config=None: uvicorn's own dictConfig would drop the capture handler from its loggers.
        gw = start(gateways, [backend], server={"log_level": "debug", "access_log": True, "log_config": None})
        admin = Admin(gw.url)
        key = admin.create_key("logged")["key"]
        assert post_chat(gw.url, {"X-API-Key": key}).status_code == 200
        assert post_chat(gw.url, bearer(key)).status_code == 200
        assert post_chat(gw.url, {"X-API-Key": wrong_key}).status_code == 401
        token = admin.registration_token()
        assert register(gw.url, "logan", token).status_code == 201
        assert register(gw.url, "logan2", token).status_code == 403
        assert login(gw.url, "logan", wrong_password).status_code == 401
        pair = login(gw.url, "logan").json()
        assert post_chat(gw.url, bearer(pair["access_token"])).status_code == 200
        assert post_chat(gw.url, bearer(pair["access_token"] + "x")).status_code == 401
        fresh = http.post(gw.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
        jwt_secret = gw.server.call(gw.gateway.store.settings.get, "jwt_secret")

    messages = [f"{r.name}: {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    assert any(r.name == "uvicorn.access" and "/auth/token" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("seadragon_gw") and "logan" in r.getMessage() for r in caplog.records)
    secrets = {"key": key, "wrong key": wrong_key, "registration token": token, "password": PASSWORD,
               "wrong password": wrong_password, "access token": pair["access_token"],
               "refresh token": pair["refresh_token"], "refreshed access token": fresh["access_token"],
               "jwt secret": jwt_secret}
    for what, secret in secrets.items():
        leaks = [m for m in messages if secret in m]
        assert not leaks, f"{what} in logs: {leaks[0][:200]!r}"
    assert not any(secret in caplog.text for secret in secrets.values())


# ------------------------------------------------------------------ body limits before reading

CHUNK = 64 * 1024
TOO_LARGE = "request body too large (limit 65536 bytes)"


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def _read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers and body of one response (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_200_mb_chunked_body_to_auth_token_is_refused_without_being_read(env: Env) -> None:
    """The gateway answers 413 after reading just past 64 KiB, while the client is still
    sending, and closes the connection: the other 199 MB are never read."""
    sock = _connect(env.url)
    with sock:
        sock.sendall(b"POST /auth/token HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (CHUNK, b"a" * CHUNK)
        sent = 0
        while sent < 200 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            if sent >= 1024 * 1024:  # the first megabyte, then wait for the answer
                assert select.select([sock], [], [], 10)[0], "no answer after 1 MB"
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
        status, headers, body = _read_response(sock)
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert json.loads(body) == {"error": TOO_LARGE}
        assert headers["connection"] == "close"
        assert sent <= 1024 * 1024
        assert _closed(sock)


@pytest.mark.parametrize(("path", "headers"), [
    ("/auth/token", b""),
    ("/auth/register", b"Content-Type: application/json\r\n"),
    ("/api/admin/apikeys", b"Content-Type: application/json\r\nAuthorization: Bearer tok-admin\r\n"),
])
def test_a_content_length_over_the_limit_is_refused_before_any_byte_of_the_body(
        env: Env, path: str, headers: bytes) -> None:
    sock = _connect(env.url)
    with sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Length: 200000000\r\n%s\r\n" % (path.encode(), headers))
        status, response_headers, body = _read_response(sock)
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert json.loads(body) == {"error": TOO_LARGE} and response_headers["connection"] == "close"
        assert _closed(sock)


def test_a_body_just_under_the_limit_is_read(env: Env) -> None:
    body = {"username": "u" * 10, "password": "p" * 20, "pad": "x" * (64 * 1024 - 100)}
    with from_ip("127.0.0.60") as client:  # its failed login counts against another address
        response = client.post(env.url + "/auth/token", json=body)
    assert native_error(response, 401) == "unauthorized: wrong username or password"


def test_a_client_leaving_mid_body_is_no_error(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="seadragon_gw")
    with _connect(env.url) as sock:
        sock.sendall(b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"username\": ")
    poll(lambda: any("client left during the body of POST /auth/register" in r.getMessage()
                     for r in caplog.records), what="the gateway to notice the client left")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
