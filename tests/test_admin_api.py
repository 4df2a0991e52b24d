"""Issue 3, the admin API over real HTTP: whitelist, registration tokens, API keys, users,
validation errors that name the field, and everything surviving a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.support.checks import native_error
from tests.support.fakebackend import FakeBackend
from tests.support.identity import (
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
    snapshot,
    start,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with shared_gateway(tmp_path_factory, "admin") as shared:
        yield shared


# ------------------------------------------------------------------ who may call it


def test_admin_key_admin_jwt_and_admin_token_entry_may_call_admin_routes(env: Shared) -> None:
    admin_key = env.admin.create_key("ops", is_admin=True)["key"]
    admin_jwt = new_user(env.url, env.admin, "adele", is_admin=True)["access_token"]
    for headers in ({"X-API-Key": admin_key}, bearer(admin_key), bearer(admin_jwt), env.admin.headers):
        response = http.get(env.url + "/api/admin/users", headers=headers)
        assert response.status_code == 200, (headers, response.text)
    assert any(u["username"] == "adele" and u["is_admin"] for u in env.admin.users())


# ------------------------------------------------------------------ whitelist


def test_whitelist_add_list_remove(env: Shared) -> None:
    made = env.admin.whitelist("10.20.0.0/16", priority=4, label="office")
    assert (made["ip"], made["priority"], made["label"]) == ("10.20.0.0/16", 4, "office")
    single = env.admin.whitelist("10.30.0.7")
    assert (single["ip"], single["priority"]) == ("10.30.0.7/32", 1)  # the configured default
    listed = env.admin.ok("GET", "/api/admin/whitelist")["whitelist"]
    assert {"10.20.0.0/16", "10.30.0.7/32"} <= {e["ip"] for e in listed}
    assert env.admin.ok("DELETE", "/api/admin/whitelist/10.20.0.0/16") == {"removed": "10.20.0.0/16"}
    assert env.admin.ok("DELETE", "/api/admin/whitelist/10.30.0.7")  # any spelling of the entry
    left = {e["ip"] for e in env.admin.ok("GET", "/api/admin/whitelist")["whitelist"]}
    assert not left & {"10.20.0.0/16", "10.30.0.7/32"}


def test_whitelist_remove_absent_is_404(env: Shared) -> None:
    assert "10.99.99.99" in native_error(env.admin.request("DELETE", "/api/admin/whitelist/10.99.99.99"), 404)


def test_whitelist_duplicate_is_409(env: Shared) -> None:
    env.admin.whitelist("10.40.0.1")
    assert native_error(env.admin.request("POST", "/api/admin/whitelist", {"ip": "10.40.0.1/32"}), 409)


def test_whitelist_removal_takes_effect_on_next_request(env: Shared) -> None:
    env.admin.whitelist("127.0.0.6")
    with from_ip("127.0.0.6") as client:
        assert post_chat(env.url, client=client).status_code == 200
        env.admin.ok("DELETE", "/api/admin/whitelist/127.0.0.6")
        assert post_chat(env.url, client=client).status_code == 401


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/admin/whitelist", {"ip": "300.1.1.1"}, "ip"),
    ("/api/admin/whitelist", {"ip": "10.0.0.0/99"}, "ip"),
    ("/api/admin/whitelist", {}, "ip"),
    ("/api/admin/whitelist", {"ip": "10.0.0.1", "priority": "high"}, "priority"),
    ("/api/admin/whitelist", {"ip": "10.0.0.1", "label": 7}, "label"),
    ("/api/admin/whitelist", {"ip": "10.0.0.1", "colour": "red"}, "colour"),
    ("/api/admin/apikeys", {}, "name"),
    ("/api/admin/apikeys", {"name": ""}, "name"),
    ("/api/admin/apikeys", {"name": "k", "priority": "1"}, "priority"),
    ("/api/admin/apikeys", {"name": "k", "priority": 1.5}, "priority"),
    ("/api/admin/apikeys", {"name": "k", "priority": True}, "priority"),
    ("/api/admin/apikeys", {"name": "k", "expires_in_s": -5}, "expires_in_s"),
    ("/api/admin/apikeys", {"name": "k", "allowed_models": "llama3"}, "allowed_models"),
    ("/api/admin/apikeys", {"name": "k", "rate_limit_per_min": 0}, "rate_limit_per_min"),
    ("/api/admin/apikeys", {"name": "k", "is_admin": "yes"}, "is_admin"),
    ("/api/admin/apikeys", {"name": "k", "key": "sdk-mine"}, "key"),
    ("/api/admin/tokens", {"is_admin": 1}, "is_admin"),
    ("/api/admin/tokens", {"expires_in_s": "soon"}, "expires_in_s"),
    ("/api/admin/tokens", {"uses": 3}, "uses"),
])
def test_invalid_body_is_400_naming_the_field(env: Shared, path: str, body: dict[str, Any], field: str) -> None:
    before = snapshot(env.admin)
    message = native_error(env.admin.request("POST", path, body), 400)
    assert message.startswith(f"{field}:"), message
    assert snapshot(env.admin) == before  # nothing was created


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_non_object_json_body_is_400(env: Shared, raw: bytes) -> None:
    response = http.post(env.url + "/api/admin/apikeys", content=raw, headers={
        **env.admin.headers, "Content-Type": "application/json"})
    assert native_error(response, 400)


@pytest.mark.parametrize(("body", "field"), [
    ({"username": "has space", "password": "long enough pw"}, "username"),
    ({"username": "", "password": "long enough pw"}, "username"),
    ({"username": "shorty", "password": "short"}, "password"),
    ({"username": "nopass"}, "password"),
    ({"username": "numpass", "password": 12345678}, "password"),
    ({"username": "notoken", "password": "long enough pw"}, "registration_token"),
])
def test_register_validation_names_the_field(env: Shared, body: dict[str, Any], field: str) -> None:
    message = native_error(http.post(env.url + "/auth/register", json=body), 400)
    assert message.startswith(f"{field}:"), message


# ------------------------------------------------------------------ API keys and tokens


def test_key_and_token_lists_never_return_the_secret(env: Shared) -> None:
    key = env.admin.create_key("listed")
    token = env.admin.ok("POST", "/api/admin/tokens", {"note": "listed"}, status=201)
    keys_resp = env.admin.request("GET", "/api/admin/apikeys")
    tokens_resp = env.admin.request("GET", "/api/admin/tokens")
    assert key["key"] not in keys_resp.text and token["token"] not in tokens_resp.text
    listed_key = next(k for k in keys_resp.json()["apikeys"] if k["id"] == key["id"])
    listed_token = next(t for t in tokens_resp.json()["tokens"] if t["id"] == token["id"])
    assert not {"key", "key_hash"} & set(listed_key) and listed_key["prefix"] == key["prefix"]
    assert not {"token", "token_hash"} & set(listed_token) and listed_token["prefix"] == token["prefix"]


@pytest.mark.parametrize("by", ["id", "prefix"])
def test_revoke_key_by_id_or_prefix(env: Shared, by: str) -> None:
    key = env.admin.create_key(f"revoke-by-{by}")
    assert post_chat(env.url, {"X-API-Key": key["key"]}).status_code == 200
    revoked = env.admin.ok("DELETE", f"/api/admin/apikeys/{key[by]}")
    assert revoked["id"] == key["id"] and revoked["is_active"] is False and "key" not in revoked
    assert next(k for k in env.admin.api_keys() if k["id"] == key["id"])["is_active"] is False
    assert post_chat(env.url, {"X-API-Key": key["key"]}).status_code == 401


def test_revoke_unknown_key_is_404(env: Shared) -> None:
    assert native_error(env.admin.request("DELETE", "/api/admin/apikeys/987654"), 404)
    assert native_error(env.admin.request("DELETE", "/api/admin/apikeys/sdk-nOnExist"), 404)


def test_registration_token_list_shows_who_used_it(env: Shared) -> None:
    made = env.admin.ok("POST", "/api/admin/tokens", {"note": "for tess", "expires_in_s": 3600}, status=201)
    assert made["used_at"] is None and made["expires_at"] is not None and made["is_admin"] is False
    assert register(env.url, "tess", made["token"]).status_code == 201
    listed = next(t for t in env.admin.ok("GET", "/api/admin/tokens")["tokens"] if t["id"] == made["id"])
    assert listed["used_by"] == "tess" and listed["used_at"] is not None and listed["note"] == "for tess"


# ------------------------------------------------------------------ users


def test_users_list_deactivate_and_activate(env: Shared) -> None:
    pair = new_user(env.url, env.admin, "uma")
    jwt = pair["access_token"]
    listed = next(u for u in env.admin.users() if u["username"] == "uma")
    assert listed["is_active"] is True and listed["is_admin"] is False and listed["last_login"] is not None
    assert not {"password", "password_hash"} & set(listed)

    off = env.admin.ok("POST", "/api/admin/users/uma/deactivate")
    assert off["username"] == "uma" and off["is_active"] is False
    assert next(u for u in env.admin.users() if u["username"] == "uma")["is_active"] is False
    assert post_chat(env.url, bearer(jwt)).status_code == 401
    assert login(env.url, "uma").status_code == 401

    assert env.admin.ok("POST", "/api/admin/users/uma/activate")["is_active"] is True
    # Tokens issued before the deactivation stay dead; a new login works.
    assert native_error(post_chat(env.url, bearer(jwt)), 401) == \
        "unauthorized: token was issued before the user was deactivated"
    refreshed = http.post(env.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert native_error(refreshed, 401) == "unauthorized: user is unknown or deactivated"
    fresh = login(env.url, "uma")
    assert fresh.status_code == 200
    assert post_chat(env.url, bearer(fresh.json()["access_token"])).status_code == 200


def test_unknown_user_or_action_is_404(env: Shared) -> None:
    assert native_error(env.admin.request("POST", "/api/admin/users/ghost/deactivate"), 404)
    new_user(env.url, env.admin, "vic")
    assert native_error(env.admin.request("POST", "/api/admin/users/vic/promote"), 404)


# ------------------------------------------------------------------ restart


def test_everything_created_through_the_api_survives_a_restart(
        gateways: GatewayFactory, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEADRAGON_JWT_SECRET", raising=False)  # the secret must come from the database
    gw = start(gateways, [backend])
    admin = Admin(gw.url)
    key = admin.create_key("survivor", priority=4, allowed_models=["llama3"])
    gone = admin.create_key("revoked-before")
    admin.ok("DELETE", f"/api/admin/apikeys/{gone['id']}")
    admin.whitelist("127.0.0.2", priority=1, label="ide")
    pair = new_user(gw.url, admin, "perry")
    spare = admin.ok("POST", "/api/admin/tokens", {"note": "spare"}, status=201)
    before = snapshot(admin)
    assert post_chat(gw.url, {"X-API-Key": key["key"]}).status_code == 200  # last_used: batched

    gw.server.stop()  # flushes the pending last_used on the way down
    again = start(gateways, config=gw.config)
    assert not gw.server.running
    admin = Admin(again.url)

    after = snapshot(admin)
    for part in ("keys", "whitelist", "users"):
        assert after[part] == before[part], part
    # Still no admin, so this start printed another bootstrap token and ended the old one;
    # every other row is unchanged.
    old_rows = before["tokens"]["tokens"]
    kept = [t for t in old_rows if t["note"] != "bootstrap admin"]
    assert [t for t in after["tokens"]["tokens"] if t["note"] != "bootstrap admin"] == kept
    old_boot = next(t for t in after["tokens"]["tokens"] if t["note"] == "bootstrap admin")
    assert old_boot["expires_at"] <= time.time() and old_boot["used_at"] is None
    assert [t["note"] for t in after["tokens"]["tokens"][len(old_rows):]] == ["bootstrap admin"]
    assert next(k for k in admin.api_keys() if k["id"] == key["id"])["last_used"] is not None
    assert post_chat(again.url, {"X-API-Key": key["key"]}).status_code == 200
    assert post_chat(again.url, {"X-API-Key": key["key"]}, model="qwen2.5:7b").status_code == 403
    assert post_chat(again.url, {"X-API-Key": gone["key"]}).status_code == 401
    with from_ip("127.0.0.2") as client:
        assert post_chat(again.url, client=client).status_code == 200
    assert post_chat(again.url, bearer(pair["access_token"])).status_code == 200  # same JWT secret
    refreshed = http.post(again.url + "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200
    assert login(again.url, "perry").status_code == 200
    assert register(again.url, "sparrow", spare["token"]).status_code == 201


def test_revoke_refuses_a_full_key_in_the_url(env: Shared) -> None:
    """A full key in a URL lands in access and proxy logs: only id or prefix are accepted."""
    key = env.admin.create_key("url-leak")
    response = env.admin.request("DELETE", f"/api/admin/apikeys/{key['key']}")
    assert "prefix" in native_error(response, 400)
    assert post_chat(env.url, {"X-API-Key": key["key"]}).status_code == 200
    assert env.admin.ok("DELETE", f"/api/admin/apikeys/{key['prefix']}")["is_active"] is False


# ------------------------------------------------------------------ rules of the admin service

NO_MODELS = "allowed_models: must name at least one model (leave it out for all models)"


def test_an_empty_allowed_models_list_is_refused(env: Shared) -> None:
    """`[]` used to mean "every model": one typo from "none" must not grant everything."""
    before = snapshot(env.admin)
    response = env.admin.request("POST", "/api/admin/apikeys", {"name": "nothing", "allowed_models": []})
    assert native_error(response, 400) == NO_MODELS
    assert snapshot(env.admin) == before


def test_a_model_restricted_admin_key_grants_nothing_wider_than_its_models(env: Shared) -> None:
    restricted = Admin(env.url, {"X-API-Key": env.admin.create_key(
        "llama-admin", is_admin=True, allowed_models=["llama3"])["key"]})
    before = snapshot(env.admin)
    refusals = [
        (("POST", "/api/admin/apikeys", {"name": "wide"}),
         "a model-restricted key cannot create a key for every model"),
        (("POST", "/api/admin/apikeys", {"name": "other", "allowed_models": ["llama3", "qwen2.5:7b"]}),
         "allowed_models: outside this key's own models: qwen2.5:7b"),
        (("POST", "/api/admin/whitelist", {"ip": "10.55.0.1"}),
         "a model-restricted key cannot create a whitelist entry for every model"),
        (("POST", "/api/admin/tokens", {}),
         "a model-restricted key cannot create a registration token for every model"),
    ]
    for (method, path, body), message in refusals:
        assert native_error(restricted.request(method, path, body), 403) == message, path
    assert snapshot(env.admin) == before
    narrower = restricted.ok("POST", "/api/admin/apikeys", {"name": "same", "allowed_models": ["LLAMA3:latest"]},
                             status=201)
    assert narrower["allowed_models"] == ["LLAMA3:latest"]
    assert post_chat(env.url, {"X-API-Key": narrower["key"]}).status_code == 200


def test_the_admin_service_names_who_changed_what(env: Shared, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seadragon_gw.admin")
    key = env.admin.create_key("audited")
    env.admin.ok("DELETE", f"/api/admin/apikeys/{key['id']}")
    lines = [r.getMessage() for r in caplog.records if r.name == "seadragon_gw.admin"]
    assert f"token:root created API key {key['id']} ({key['prefix']}) 'audited'" in lines
    assert f"token:root revoked API key {key['id']} ({key['prefix']})" in lines
    assert not any(key["key"] in line for line in lines)
