"""Issue 3, the CLI and bootstrap: `seadragon-gw` subprocesses on the configured database,
also while a gateway runs on it, the one-time admin token, and a corrupt database."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from seadragon_gw.config import load_config
from tests.conftest import FAST_AUTH, GatewayFactory, RunningGateway
from tests.support.checks import poll
from tests.support.fakebackend import FakeBackend
from tests.support.identity import (
    Admin,
    bearer,
    from_ip,
    http,
    login,
    post_chat,
    register,
    start,
)
from tests.support.server import free_port

BIN = Path(sys.executable).with_name("seadragon-gw")
FULL_KEY = re.compile(r"sdk-[A-Za-z0-9_-]{40,}")
FULL_TOKEN = re.compile(r"sdr-[A-Za-z0-9_-]{40,}")
ADMIN_PASSWORD = "stdin pass phrase 9"


@pytest.fixture
def config(tmp_path: Path, backend: FakeBackend) -> Path:
    """config.yaml next to its database (and the tokens.json the gateway fixture writes)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": "cli.db",
        "auth": {"tokens_file": "tokens.json", **FAST_AUTH},
        "backends": [{"name": "b0", "kind": "ollama", "url": backend.url, "max_concurrent": 1}],
    }))
    return path


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEADRAGON_")}
    return subprocess.run([str(BIN), *args, "--config", str(config)], check=False, input=stdin, capture_output=True,
                          text=True, timeout=60, env=env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def running(gateways: GatewayFactory, config: Path) -> RunningGateway:
    return start(gateways, config=load_config(config))


def db_bytes(config: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(config.parent.glob("cli.db*")))


# ------------------------------------------------------------------ keys


def test_keys_create_prints_the_key_once(config: Path) -> None:
    out = ok(cli(config, "keys", "create", "ci-bot", "--priority", "4", "--models", "llama3,qwen2.5:7b"))
    (key,) = FULL_KEY.findall(out)
    listing = ok(cli(config, "keys", "list"))
    assert "ci-bot" in listing and key[:12] in listing
    assert key not in listing and key.encode() not in db_bytes(config)


def test_keys_revoke_while_the_gateway_runs_is_401_within_seconds(
        gateways: GatewayFactory, config: Path) -> None:
    gw = running(gateways, config)
    out = ok(cli(config, "keys", "create", "live"))
    (key,) = FULL_KEY.findall(out)
    key_id = re.search(r"API key (\d+)", out).group(1)  # type: ignore[union-attr]
    poll(lambda: post_chat(gw.url, {"X-API-Key": key}).status_code == 200, 5, "the new key to work")

    assert f"revoked key {key_id}" in ok(cli(config, "keys", "revoke", key_id))
    poll(lambda: post_chat(gw.url, {"X-API-Key": key}).status_code == 401, 5, "the revoked key to be refused")
    row = ok(cli(config, "keys", "list")).splitlines()[1].split()
    assert (row[0], row[2], row[4]) == (key_id, "live", "False")  # id, name, active
    assert cli(config, "keys", "revoke", "4242").returncode == 1


# ------------------------------------------------------------------ whitelist


def test_whitelist_add_list_remove_while_the_gateway_runs(gateways: GatewayFactory, config: Path) -> None:
    gw = running(gateways, config)
    assert "127.0.0.2/32" in ok(cli(config, "whitelist", "add", "127.0.0.2", "--label", "roo-code"))
    listing = ok(cli(config, "whitelist", "list"))
    assert "127.0.0.2/32" in listing and "roo-code" in listing
    with from_ip("127.0.0.2") as client:
        poll(lambda: post_chat(gw.url, client=client).status_code == 200, 5, "the address to be let in")
        ok(cli(config, "whitelist", "remove", "127.0.0.2"))
        poll(lambda: post_chat(gw.url, client=client).status_code == 401, 5, "the address to be refused")
    assert "127.0.0.2" not in ok(cli(config, "whitelist", "list"))
    again = cli(config, "whitelist", "remove", "127.0.0.2")
    assert again.returncode == 1 and "not whitelisted" in again.stderr
    garbage = cli(config, "whitelist", "add", "10.0.0.300")
    assert garbage.returncode == 1 and len(garbage.stderr.strip().splitlines()) == 1


def test_whitelist_add_defaults_to_the_configured_priority(config: Path) -> None:
    text = config.read_text()
    config.write_text(text + "\n" if "auth:" in text else text)
    raw = yaml.safe_load(config.read_text())
    raw.setdefault("auth", {})["whitelist_priority"] = 4
    config.write_text(yaml.safe_dump(raw))
    assert "priority 4" in ok(cli(config, "whitelist", "add", "10.7.0.0/16"))
    assert "priority 0" in ok(cli(config, "whitelist", "add", "10.8.0.1", "--priority", "0"))


# ------------------------------------------------------------------ registration tokens and admins


def test_tokens_create_list_then_register(gateways: GatewayFactory, config: Path) -> None:
    gw = running(gateways, config)
    (token,) = FULL_TOKEN.findall(ok(cli(config, "tokens", "create", "--admin", "--note", "for ada")))
    listing = ok(cli(config, "tokens", "list"))
    mine = next(line for line in listing.splitlines() if "for ada" in line)
    assert "admin" in mine and "unused" in mine and token not in listing
    created = register(gw.url, "ada", token)
    assert created.status_code == 201 and created.json()["is_admin"] is True
    assert "used by ada" in ok(cli(config, "tokens", "list"))


def test_admin_create_with_password_stdin_then_login(gateways: GatewayFactory, config: Path) -> None:
    gw = running(gateways, config)
    result = cli(config, "admin", "create", "boss", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert "admin 'boss' created" in ok(result)
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    response = login(gw.url, "boss", ADMIN_PASSWORD)
    assert response.status_code == 200
    jwt = response.json()["access_token"]
    users = poll(lambda: (r := http.get(gw.url + "/api/admin/users", headers=bearer(jwt))).status_code == 200 and r,
                 5, "the CLI-made admin to be seen")
    assert [(u["username"], u["is_admin"]) for u in users.json()["users"]] == [("boss", True)]
    # The CLI hashed with the default argon2 costs; the login re-hashed with the gateway's.
    with sqlite3.connect(config.parent / "cli.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM users WHERE username = 'boss'").fetchone()
    assert stored.startswith("$argon2id$") and "m=1024,t=1,p=1" in stored
    assert login(gw.url, "boss", ADMIN_PASSWORD).status_code == 200
    assert cli(config, "admin", "create", "boss", "--password-stdin", stdin=ADMIN_PASSWORD + "\n").returncode == 1


# ------------------------------------------------------------------ bootstrap


def test_users_set_admin_yes_and_no(config: Path) -> None:
    ok(cli(config, "admin", "create", "ann", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"))
    ok(cli(config, "admin", "create", "bob", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"))
    assert ok(cli(config, "users", "set-admin", "bob", "no")).strip() == "user 'bob' is no longer an admin"
    last = cli(config, "users", "set-admin", "ann", "no")
    assert (last.returncode, last.stderr.strip()) == (
        1, "seadragon-gw: 'ann' is the last active admin; make another admin first")
    assert ok(cli(config, "users", "set-admin", "bob", "yes")).strip() == "user 'bob' is now an admin"


def test_bootstrap_prints_a_one_time_admin_token(
        gateways: GatewayFactory, backend: FakeBackend, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    gw = start(gateways, [backend])
    (token,) = FULL_TOKEN.findall(capsys.readouterr().out)
    warnings = [r for r in caplog.records if r.name.startswith("seadragon_gw") and "no admin" in r.getMessage()]
    assert len(warnings) == 1
    assert not any(token in r.getMessage() for r in caplog.records)

    created = register(gw.url, "first-admin", token)
    assert created.status_code == 201 and created.json()["is_admin"] is True
    jwt = login(gw.url, "first-admin").json()["access_token"]
    users = http.get(gw.url + "/api/admin/users", headers=bearer(jwt))
    assert users.status_code == 200 and users.json()["users"][0]["username"] == "first-admin"
    assert register(gw.url, "second-admin", token).status_code == 403

    gw.server.stop()
    caplog.clear()
    start(gateways, config=gw.config)  # an admin exists now: nothing is printed
    assert not FULL_TOKEN.search(capsys.readouterr().out)
    assert not any("no admin" in r.getMessage() for r in caplog.records)


def test_a_new_bootstrap_token_replaces_the_unused_one(
        gateways: GatewayFactory, backend: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    gw = start(gateways, [backend])
    (first,) = FULL_TOKEN.findall(capsys.readouterr().out)
    gw.server.stop()
    gw = start(gateways, config=gw.config)  # still no admin: a new token, the old one ends
    (second,) = FULL_TOKEN.findall(capsys.readouterr().out)
    assert second != first
    assert register(gw.url, "early-bird", first).status_code == 403
    assert register(gw.url, "real-admin", second).status_code == 201


# ------------------------------------------------------------------ serve


def test_serve_with_corrupt_database_exits_2_with_one_line(config: Path) -> None:
    database = config.parent / "cli.db"
    database.write_bytes(b"this is not an SQLite database\n" * 200)
    result = subprocess.run([str(BIN), "serve", "--config", str(config)], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(database) in lines[0], result.stderr


def test_serve_ignores_spoofed_forwarded_for(config: Path, tmp_path: Path) -> None:
    """The real entrypoint's uvicorn must not rewrite the client address from headers."""
    ok(cli(config, "whitelist", "add", "10.9.9.9"))
    ok(cli(config, "whitelist", "add", "127.0.0.2"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen([str(BIN), "serve", "--config", str(config), "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return http.get(url + "/api/version").status_code == 200
            except httpx.TransportError:
                return False

        poll(up, 15, "seadragon-gw serve to answer")
        assert post_chat(url, {"X-Forwarded-For": "10.9.9.9"}).status_code == 401
        assert post_chat(url, {"X-Real-IP": "10.9.9.9"}).status_code == 401
        with from_ip("127.0.0.2") as client:
            assert post_chat(url, client=client).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_cli_store_commands_leave_admin_api_consistent(gateways: GatewayFactory, config: Path) -> None:
    """Rows the CLI writes are what the admin API lists."""
    gw = running(gateways, config)
    ok(cli(config, "keys", "create", "from-cli", "--priority", "7"))
    ok(cli(config, "whitelist", "add", "10.8.0.0/16", "--priority", "3", "--label", "vpn"))
    admin = Admin(gw.url)
    key = next(k for k in admin.api_keys() if k["name"] == "from-cli")
    assert key["priority"] == 7 and key["is_active"] is True
    entry = next(e for e in admin.ok("GET", "/api/admin/whitelist")["whitelist"] if e["ip"] == "10.8.0.0/16")
    assert (entry["priority"], entry["label"]) == (3, "vpn")


# ------------------------------------------------------------------ one service, one set of messages


def test_cli_and_api_refuse_the_same_mistakes_with_the_same_words(
        gateways: GatewayFactory, config: Path) -> None:
    gw = running(gateways, config)
    admin = Admin(gw.url)
    empty = cli(config, "keys", "create", "nothing", "--models", " , ")
    api_empty = admin.request("POST", "/api/admin/apikeys", {"name": "nothing", "allowed_models": []})
    assert empty.returncode == 1 and api_empty.status_code == 400
    assert empty.stderr.strip() == f"seadragon-gw: {api_empty.json()['error']}"
    assert api_empty.json()["error"] == "allowed_models: must name at least one model (leave it out for all models)"

    (key,) = FULL_KEY.findall(ok(cli(config, "keys", "create", "leaky")))
    by_full_key = cli(config, "keys", "revoke", key)
    assert by_full_key.returncode == 1 and key not in by_full_key.stderr
    assert by_full_key.stderr.strip() == \
        "seadragon-gw: key: give the key's id or its display prefix, never the key itself"
    assert post_chat(gw.url, {"X-API-Key": key}).status_code == 200  # still valid

    bad_ip = cli(config, "whitelist", "add", "10.0.0.300")
    api_bad_ip = admin.request("POST", "/api/admin/whitelist", {"ip": "10.0.0.300"})
    assert bad_ip.stderr.strip() == f"seadragon-gw: {api_bad_ip.json()['error']}"
    assert api_bad_ip.json()["error"].startswith("ip: not an IP address or CIDR network")
