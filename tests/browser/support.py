"""Helpers for the browser tests: a gateway with an admin user, logging in through the page,
watching the page's own state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend
from tests.support.identity import PASSWORD, Admin, register

POLL_MS = 150  # the pages' polling interval in these tests (`?poll_ms=`; 2000 in use)
TIMEOUT_MS = 10_000


@dataclass
class Site:
    gw: RunningGateway
    backend: FakeBackend  # (None when the gateway's backends are given as specs)
    admin: Admin  # the API, as tokens.json's admin

    @property
    def url(self) -> str:
        return self.gw.url


def site(tmp: Path, backend: FakeBackend | None, users: dict[str, bool], *,
         backends: list[dict[str, Any]] | None = None, **sections: Any) -> Iterator[Site]:
    """A gateway in front of `backend` (or of `backends`, specs) with web chat users
    (name -> is_admin), all with PASSWORD."""
    factory = GatewayFactory(tmp)
    try:
        gw = factory.start([backend] if backend is not None else backends, **sections)
        admin = Admin(gw.url)
        for name, is_admin in users.items():
            response = register(gw.url, name, admin.registration_token(is_admin=is_admin))
            assert response.status_code == 201, response.text
        yield Site(gw, backend, admin)
    finally:
        factory.close()


def log_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
