"""Helpers for the identity tests (issue 3): admin API calls, accounts, source-bound clients.

Everything goes over real HTTP to a running gateway. The admin calls use the `root` entry of
tokens.json (an admin token), so no test needs an admin user before it needs one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat
from tests.support.shared import SharedGateways

PASSWORD = "correct horse battery"
def start(factory: GatewayFactory, backends: list[FakeBackend] | None = None, *,
          server: dict[str, Any] | None = None, **kwargs: Any) -> RunningGateway:
    """`factory.start` with uvicorn overrides named as these tests name them."""
    return factory.start(backends, uvicorn=server, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# One pooled client for the plain calls. `verify=False` only skips loading the CA bundle
# (~30 ms a client): every URL here is plain http on loopback.
http = httpx.Client(timeout=10, verify=False)


def from_ip(address: str) -> httpx.Client:
    """An httpx client whose connections leave from `address` (any 127.x.y.z works on Linux),
    so the gateway on 127.0.0.1 sees that address as the TCP peer."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address, verify=False), timeout=10)


def post_chat(url: str, headers: dict[str, str] | None = None, *, model: str = "llama3",
              marker: str = "hello", client: httpx.Client | None = None) -> httpx.Response:
    """One non-streaming /api/chat through the gateway."""
    return (client or http).post(url + "/api/chat", json=chat(marker, model=model), headers=headers)


class Admin:
    """The admin API of one gateway, called with an admin credential (tokens.json `root`)."""

    def __init__(self, url: str, headers: dict[str, str] = ADMIN) -> None:
        self.url = url
        self.headers = headers

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return http.request(method, self.url + path, json=body, headers=self.headers)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.request(method, path, body)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json()

    def create_key(self, name: str = "key", **fields: Any) -> dict[str, Any]:
        """The created key's JSON, plaintext `key` included."""
        created: dict[str, Any] = self.ok("POST", "/api/admin/apikeys", {"name": name, **fields}, status=201)
        return created

    def whitelist(self, ip: str, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = self.ok("POST", "/api/admin/whitelist", {"ip": ip, **fields}, status=201)
        return entry

    def registration_token(self, **fields: Any) -> str:
        return str(self.ok("POST", "/api/admin/tokens", fields, status=201)["token"])

    def api_keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self.ok("GET", "/api/admin/apikeys")["apikeys"]
        return keys

    def users(self) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = self.ok("GET", "/api/admin/users")["users"]
        return users


def snapshot(admin: Admin) -> dict[str, Any]:
    """Everything the admin API lists (minus last_used, which moves with use)."""
    keys = [{k: v for k, v in key.items() if k != "last_used"} for key in admin.api_keys()]
    return {"keys": keys, "whitelist": admin.ok("GET", "/api/admin/whitelist"),
            "tokens": admin.ok("GET", "/api/admin/tokens"), "users": admin.users()}


def register(url: str, username: str, token: str, password: str = PASSWORD) -> httpx.Response:
    body = {"username": username, "password": password, "registration_token": token}
    return http.post(url + "/auth/register", json=body)


def login(url: str, username: str, password: str = PASSWORD) -> httpx.Response:
    """The OAuth2 password form, as the web chat sends it."""
    return http.post(url + "/auth/token", data={"username": username, "password": password})


def new_user(gw_url: str, admin: Admin, username: str, *, is_admin: bool = False,
             password: str = PASSWORD) -> dict[str, Any]:
    """Register through the API with a fresh registration token, then log in: the token pair."""
    response = register(gw_url, username, admin.registration_token(is_admin=is_admin), password)
    assert response.status_code == 201, response.text
    pair = login(gw_url, username, password)
    assert pair.status_code == 200, pair.text
    tokens: dict[str, Any] = pair.json()
    return tokens


@dataclass
class Shared:
    """One gateway (and its fake backend) shared by a module's tests, which use distinct names."""

    gw: RunningGateway
    backend: FakeBackend
    admin: Admin
    tmp_path: Path

    @property
    def url(self) -> str:
        return self.gw.url


@contextlib.contextmanager
def shared_gateway(tmp_path_factory: pytest.TempPathFactory, name: str, **sections: Any) -> Iterator[Shared]:
    """One `SharedGateways` gateway for a whole module, with an admin client."""
    root = tmp_path_factory.mktemp(name)
    gateways = SharedGateways(lambda prefix: root)
    try:
        gw = gateways.get(**sections)
        yield Shared(gw, gateways.backend, Admin(gw.url), root)
    finally:
        gateways.close()


@contextlib.contextmanager
def capture_all_logs(handler: logging.Handler) -> Iterator[None]:
    """Route every logger's records, uvicorn's non-propagating ones included, to `handler` at DEBUG."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level, lg.handlers[:]) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        if handler not in lg.handlers and (lg.name == "root" or not lg.propagate):
            lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
