"""Issue 6, accounts that hold: bootstrap tokens, failed registrations, rotating refresh
tokens, logout, login throttling and bounded hashing, and a CLI-made user's JWT working at
once. Real gateways over real HTTP; the CLI as a subprocess on the gateway's database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from seadragon_gw.auth.passwords import PasswordHasher
from seadragon_gw.config import ConfigError, load_config, parse_config
from seadragon_gw.gateway import Clocks
from tests.conftest import FAST_AUTH, FakeClock, GatewayFactory
from tests.support.checks import native_error, poll
from tests.support.fakebackend import FakeBackend
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
from tests.test_identity_cli import FULL_TOKEN, cli, ok

ROTATED_OUT = "unauthorized: refresh token was already used; the session is revoked"
LOGGED_OUT = "unauthorized: the session is logged out"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with shared_gateway(tmp_path_factory, "accounts") as shared:
        yield shared


def refresh(url: str, token: str) -> httpx.Response:
    return http.post(url + "/auth/refresh", json={"refresh_token": token})


def token_listing(admin: Admin, token: str) -> dict[str, object]:
    prefix = token[:12]
    return next(t for t in admin.ok("GET", "/api/admin/tokens")["tokens"] if t["prefix"] == prefix)


# ------------------------------------------------------------------ registration


def test_a_failed_registration_leaves_its_token_unused(env: Shared) -> None:
    new_user(env.url, env.admin, "taken-name")
    token = env.admin.registration_token()
    assert native_error(register(env.url, "TAKEN-name", token), 409) == "username 'TAKEN-name' is taken"
    assert native_error(register(env.url, "shorty", token, "short"), 400).startswith("password:")
    listed = token_listing(env.admin, token)
    assert (listed["used_at"], listed["used_by"]) == (None, None)
    assert register(env.url, "second-try", token).status_code == 201
    assert token_listing(env.admin, token)["used_by"] == "second-try"


def test_bootstrap_token_stops_once_the_cli_made_an_admin(
        gateways: GatewayFactory, tmp_path: Path, backend: FakeBackend,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": "gw.db", "auth": {"tokens_file": "tokens.json", **FAST_AUTH},
                                      "backends": [{"name": "b0", "url": backend.url}]}))
    gw = start(gateways, config=load_config(config))
    (bootstrap,) = FULL_TOKEN.findall(capsys.readouterr().out)
    ok(cli(config, "admin", "create", "console-admin", "--password-stdin", stdin=PASSWORD + "\n"))
    refused = register(gw.url, "latecomer", bootstrap)
    assert native_error(refused, 403) == "the bootstrap registration token no longer works: an admin exists"
    assert [u["username"] for u in Admin(gw.url).users()] == ["console-admin"]


def test_bootstrap_token_stops_once_another_token_made_an_admin(
        gateways: GatewayFactory, backend: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    gw = start(gateways, [backend])
    (bootstrap,) = FULL_TOKEN.findall(capsys.readouterr().out)
    admin = Admin(gw.url)
    assert register(gw.url, "by-admin-token", admin.registration_token(is_admin=True)).status_code == 201
    assert native_error(register(gw.url, "latecomer", bootstrap), 403) == \
        "the bootstrap registration token no longer works: an admin exists"


# ------------------------------------------------------------------ refresh rotation and logout


def test_each_refresh_rotates_and_the_old_refresh_token_is_refused(env: Shared) -> None:
    first = new_user(env.url, env.admin, "rotor")
    second = refresh(env.url, first["refresh_token"])
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    third = refresh(env.url, pair["refresh_token"])
    assert third.status_code == 200 and third.json()["refresh_token"] != pair["refresh_token"]
    assert post_chat(env.url, bearer(third.json()["access_token"])).status_code == 200
    # The spent one again: someone else holds it, so the whole session ends.
    assert native_error(refresh(env.url, first["refresh_token"]), 401) == ROTATED_OUT
    assert native_error(refresh(env.url, third.json()["refresh_token"]), 401) == LOGGED_OUT
    assert native_error(post_chat(env.url, bearer(third.json()["access_token"])), 401) == LOGGED_OUT
    assert login(env.url, "rotor").status_code == 200  # a new login is a new session


def test_logout_with_the_refresh_token_ends_the_session(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "leaver")
    other = login(env.url, "leaver").json()  # a second session (another device)
    out = http.post(env.url + "/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status_code == 200 and out.json() == {"logged_out": True}
    assert native_error(refresh(env.url, pair["refresh_token"]), 401) == LOGGED_OUT
    assert native_error(post_chat(env.url, bearer(pair["access_token"])), 401) == LOGGED_OUT
    assert post_chat(env.url, bearer(other["access_token"])).status_code == 200
    assert refresh(env.url, other["refresh_token"]).status_code == 200


def test_logout_with_the_access_token_ends_its_session(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "quitter")
    out = http.post(env.url + "/auth/logout", headers=bearer(pair["access_token"]))
    assert out.status_code == 200
    assert native_error(http.get(env.url + "/auth/me", headers=bearer(pair["access_token"])), 401) == LOGGED_OUT
    assert native_error(refresh(env.url, pair["refresh_token"]), 401) == LOGGED_OUT


def test_logout_needs_a_token(env: Shared) -> None:
    assert native_error(http.post(env.url + "/auth/logout"), 400) == \
        "refresh_token: required (or send the access token as Bearer)"
    bad = http.post(env.url + "/auth/logout", json={"refresh_token": "not.a.jwt"})
    assert native_error(bad, 401).startswith("unauthorized:")


# ------------------------------------------------------------------ deactivation


def test_tokens_from_before_a_deactivation_stay_dead_after_reactivation(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "phoenix")
    env.admin.ok("POST", "/api/admin/users/phoenix/deactivate")
    env.admin.ok("POST", "/api/admin/users/phoenix/activate")
    assert native_error(post_chat(env.url, bearer(pair["access_token"])), 401) == \
        "unauthorized: token was issued before the user was deactivated"
    assert native_error(refresh(env.url, pair["refresh_token"]), 401) == \
        "unauthorized: user is unknown or deactivated"
    assert post_chat(env.url, bearer(login(env.url, "phoenix").json()["access_token"])).status_code == 200


def test_the_last_active_admin_cannot_be_deactivated(gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend])
    admin = Admin(gw.url)
    jwt = new_user(gw.url, admin, "only-admin", is_admin=True)["access_token"]
    refused = admin.request("POST", "/api/admin/users/only-admin/deactivate")
    assert native_error(refused, 409) == "'only-admin' is the last active admin; make another admin first"
    assert http.get(gw.url + "/api/admin/users", headers=bearer(jwt)).status_code == 200
    new_user(gw.url, admin, "deputy", is_admin=True)
    assert admin.ok("POST", "/api/admin/users/only-admin/deactivate")["is_active"] is False
    assert native_error(admin.request("POST", "/api/admin/users/deputy/deactivate"), 409)


def test_an_admin_makes_a_user_admin_and_back_but_never_demotes_the_last_one(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    gw = start(gateways, [backend])
    admin = Admin(gw.url)
    jwt = new_user(gw.url, admin, "wes")["access_token"]
    assert http.get(gw.url + "/api/admin/users", headers=bearer(jwt)).status_code == 403
    promoted = admin.ok("PATCH", "/api/admin/users/wes", {"is_admin": True})
    assert (promoted["username"], promoted["is_admin"]) == ("wes", True)
    # The same token, issued before: admin at once (the authenticator reads the user, not the claims).
    assert http.get(gw.url + "/api/admin/users", headers=bearer(jwt)).status_code == 200
    refused = admin.request("PATCH", "/api/admin/users/wes", {"is_admin": False})
    assert native_error(refused, 409) == "'wes' is the last active admin; make another admin first"
    new_user(gw.url, admin, "xia", is_admin=True)
    assert admin.ok("PATCH", "/api/admin/users/wes", {"is_admin": False})["is_admin"] is False
    assert http.get(gw.url + "/api/admin/users", headers=bearer(jwt)).status_code == 403
    assert native_error(admin.request("PATCH", "/api/admin/users/wes", {"is_admin": "yes"}), 400) == \
        "is_admin: must be true or false"
    assert native_error(admin.request("PATCH", "/api/admin/users/wes", {}), 400) == \
        "tier or is_admin: required (tier null for the default limits)"
    assert native_error(admin.request("PATCH", "/api/admin/users/ghost", {"is_admin": True}), 404) == \
        "no user 'ghost'"


# ------------------------------------------------------------------ login throttling and hashing


class CountingHasher(PasswordHasher):
    """The fast test hasher, counting verifications (from the worker threads)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self._lock = threading.Lock()
        self.verified = 0

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.verified += 1
        return super().verify(password_hash, password)


async def _flood(url: str, source: str, username: str, count: int) -> list[httpx.Response]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=30) as client:
        return list(await asyncio.gather(*(
            client.post(url + "/auth/token", data={"username": username, "password": f"wrong {i}"})
            for i in range(count))))


def test_a_hundred_concurrent_wrong_logins_are_throttled_before_hashing(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    clock, hasher = FakeClock(), CountingHasher()
    gw = start(gateways, [backend], clocks=Clocks(monotonic=clock), hasher=hasher)
    admin = Admin(gw.url)
    for name in ("target", "bystander"):
        new_user(gw.url, admin, name)
    before = hasher.verified

    answers = asyncio.run(_flood(gw.url, "127.0.0.50", "target", 100))

    # At most 5 attempts (failed or in flight) per key get as far as a hash; the rest are 429,
    # or 503 when both hashing slots are busy (which counts as no attempt).
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {401, 429, 503}, statuses
    assert 1 <= statuses.count(401) <= 5 and statuses.count(429) >= 1
    assert hasher.verified - before == statuses.count(401)  # nothing else was hashed
    throttled = next(r for r in answers if r.status_code == 429)
    assert native_error(throttled, 429) == "too many failed logins for this username; try again later"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    with from_ip("127.0.0.51") as elsewhere, from_ip("127.0.0.50") as attacker:
        def form(client: httpx.Client, user: str, password: str = PASSWORD) -> httpx.Response:
            return client.post(gw.url + "/auth/token", data={"username": user, "password": password})

        # One at a time (no 503 now), the attacker's failures reach the limit.
        tail = [form(attacker, "target", "wrong again").status_code for _ in range(6 - statuses.count(401))]
        assert tail == [401] * (5 - statuses.count(401)) + [429]
        # Another user from another address is served at once; the throttle holds per key.
        assert form(elsewhere, "bystander").status_code == 200
        assert native_error(form(elsewhere, "target"), 429).endswith("for this username; try again later")
        assert native_error(form(attacker, "bystander"), 429) == \
            "too many failed logins for this address; try again later"
        clock.advance(61)  # the window has passed
        assert form(elsewhere, "target").status_code == 200
        assert form(attacker, "bystander").status_code == 200


class GateHasher(PasswordHasher):
    """Verification waits for `gate`, so a test can hold every hashing slot."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()

    def verify(self, password_hash: str, password: str) -> bool:
        self.entered.release()
        self.gate.wait(10)
        return super().verify(password_hash, password)


def test_hashing_beyond_its_slots_is_503_at_once(gateways: GatewayFactory, backend: FakeBackend) -> None:
    hasher = GateHasher()
    gw = start(gateways, [backend], hasher=hasher, auth={"hash_concurrency": 2})
    admin = Admin(gw.url)
    for name in ("first", "second", "third"):
        assert register(gw.url, name, admin.registration_token()).status_code == 201
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(login, gw.url, name) for name in ("first", "second")]
        for _ in held:
            assert hasher.entered.acquire(timeout=10)  # both slots are hashing now
        busy = login(gw.url, "third")
        assert native_error(busy, 503) == "too many logins at once; try again in a moment"
        assert busy.headers["retry-after"] == "1"
        hasher.gate.set()
        assert [f.result(10).status_code for f in held] == [200, 200]
    assert login(gw.url, "third").status_code == 200  # a busy answer is no failed login


# ------------------------------------------------------------------ a CLI-made user


def test_a_user_made_by_the_cli_uses_a_jwt_at_once(gateways: GatewayFactory, tmp_path: Path,
                                                   backend: FakeBackend) -> None:
    """No poll: the cache polls only every 10 minutes here, and the login alone makes it work."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": "gw.db", "auth": {"credentials_poll_s": 600},
                                      "backends": [{"name": "b0", "url": backend.url}]}))
    gw = start(gateways, config=load_config(config))
    ok(cli(config, "admin", "create", "fresh", "--password-stdin", stdin=PASSWORD + "\n"))
    response = login(gw.url, "fresh")
    assert response.status_code == 200
    jwt = response.json()["access_token"]
    assert http.get(gw.url + "/auth/me", headers=bearer(jwt)).json()["name"] == "fresh"
    assert http.get(gw.url + "/api/admin/users", headers=bearer(jwt)).status_code == 200
    assert post_chat(gw.url, bearer(jwt)).status_code == 200


def test_a_jwt_for_a_user_this_gateway_does_not_know_yet_reloads_its_cache(
        gateways: GatewayFactory, backend: FakeBackend) -> None:
    """Two gateways on one database: the second has not seen the user the first registered;
    the refused JWT makes it reload early instead of at its next (10-minute) poll."""
    first = start(gateways, [backend])
    second = start(gateways, [backend], auth={"credentials_poll_s": 600})  # the same database
    jwt = new_user(first.url, Admin(first.url), "roamer")["access_token"]
    assert native_error(post_chat(second.url, bearer(jwt)), 401) == "unauthorized: user is unknown or deactivated"
    poll(lambda: post_chat(second.url, bearer(jwt)).status_code == 200, what="the second gateway to reload")



@pytest.mark.parametrize("key", ["login_max_failures", "login_window_s", "hash_concurrency", "tokens_check_s",
                                 "credentials_poll_s", "last_used_flush_s"])
def test_auth_intervals_and_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"auth": {key: 0}})
    assert str(error.value) == f"auth.{key}: must be positive"


def test_an_overlong_password_is_refused_without_hashing(gateways: GatewayFactory, backend: FakeBackend) -> None:
    hasher = CountingHasher()
    gw = start(gateways, [backend], hasher=hasher)
    new_user(gw.url, Admin(gw.url), "longpw")
    before = hasher.verified
    with from_ip("127.0.0.70") as client:
        response = client.post(gw.url + "/auth/token", data={"username": "longpw", "password": "x" * 60_000})
    assert native_error(response, 401) == "unauthorized: wrong username or password"
    assert hasher.verified == before
