"""The database file under the gateway's feet: made read-only or immutable, read-only from the
start, deleted. Writes get a clear 503, reads keep working, the log says it once, and the process
stays up (before this, an immutable WAL `-shm` killed it with SIGBUS on the next read).

Read-only is made the way an operator makes it: `chattr +i` as root (root ignores permission
bits), `chmod` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from seadragon_gw.store.bundle import Store
from tests.conftest import ADMIN, ALICE, GatewayFactory, RunningGateway
from tests.support.checks import native_error, poll
from tests.support.fakebackend import FakeBackend

READ_ONLY = "database is read-only"
CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
MakeReadOnly = Callable[[Path], None]


@pytest.fixture
def make_read_only() -> Iterator[MakeReadOnly]:
    """Make a file or folder unwritable for this process; undone after the test."""
    undo: list[Callable[[], object]] = []

    def apply(path: Path) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(path)], check=True)
            undo.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
        else:
            mode = stat.S_IMODE(path.stat().st_mode)
            path.chmod(mode & ~0o222)
            undo.append(lambda: path.chmod(mode))

    yield apply
    for step in reversed(undo):
        step()


def store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seadragon_gw.store" and r.levelno >= logging.ERROR]


def create_key(gw: RunningGateway, name: str) -> httpx.Response:
    return httpx.post(gw.url + "/api/admin/apikeys", headers=ADMIN, json={"name": name}, timeout=10)


def list_key_names(gw: RunningGateway) -> list[str]:
    response = httpx.get(gw.url + "/api/admin/apikeys", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return [k["name"] for k in response.json()["apikeys"]]


def assert_still_serving(gw: RunningGateway) -> None:
    chat = httpx.post(gw.url + "/api/chat", headers=ALICE, json=CHAT, timeout=10)
    assert chat.status_code == 200, chat.text
    assert chat.json()["done"] is True


@pytest.mark.parametrize("what", ["file", "folder", "file, folder and every sidecar"])
def test_database_made_read_only_while_running_refuses_writes_with_503_and_one_error_line(
        what: str, gateways: GatewayFactory, backend: FakeBackend, make_read_only: MakeReadOnly,
        caplog: pytest.LogCaptureFixture) -> None:
    gw = gateways.start([backend], database_check_s=0.05)
    assert create_key(gw, "before").status_code == 201
    db = Path(gw.config.resolve_path(gw.config.database))
    caplog.set_level(logging.INFO, logger="seadragon_gw.store")
    targets = {"file": [db], "folder": [db.parent],
               "file, folder and every sidecar": [*db.parent.glob(db.name + "*"), db.parent]}[what]
    for path in targets:
        make_read_only(path)

    for attempt in range(3):
        assert native_error(create_key(gw, f"during-{attempt}"), 503) == READ_ONLY
    assert list_key_names(gw) == ["before"]
    assert_still_serving(gw)
    errors = store_errors(caplog)
    assert len(errors) == 1, errors
    assert str(db) in errors[0] and "read-only" in errors[0]


def test_gateway_starts_on_a_read_only_database_and_serves_reads(
        gateways: GatewayFactory, backend: FakeBackend, make_read_only: MakeReadOnly,
        caplog: pytest.LogCaptureFixture) -> None:
    first = gateways.start([backend])
    assert create_key(first, "kept").status_code == 201
    db = Path(first.config.resolve_path(first.config.database))
    asyncio.run(_add_admin(str(db)))  # with an admin, start-up has nothing to write
    gateways.close()
    make_read_only(db)

    caplog.set_level(logging.INFO, logger="seadragon_gw.store")
    gw = gateways.start([backend])
    errors = store_errors(caplog)
    assert len(errors) == 1 and "read-only" in errors[0] and "restarted" in errors[0], errors
    assert list_key_names(gw) == ["kept"]
    assert_still_serving(gw)
    assert native_error(create_key(gw, "refused"), 503) == READ_ONLY
    assert len(store_errors(caplog)) == 1


async def _add_admin(path: str) -> None:
    store = await Store.open(path, watch_interval_s=None)
    try:
        await store.users.create("operator", "not-a-real-hash", is_admin=True)
    finally:
        await store.close()


def test_deleted_database_file_is_noticed_and_logged_once(
        gateways: GatewayFactory, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    gw = gateways.start([backend], database_check_s=0.05)
    assert create_key(gw, "before").status_code == 201
    db = Path(gw.config.resolve_path(gw.config.database))
    caplog.set_level(logging.INFO, logger="seadragon_gw.store")
    db.unlink()

    poll(lambda: store_errors(caplog), timeout=15, what="the ERROR line about the deleted file")
    message = "database file was deleted or replaced; restart the gateway"
    assert native_error(create_key(gw, "after"), 503) == message
    assert native_error(create_key(gw, "again"), 503) == message
    assert list_key_names(gw) == ["before"]  # reads still see what it had
    assert_still_serving(gw)
    errors = store_errors(caplog)
    assert len(errors) == 1 and str(db) in errors[0] and "was deleted" in errors[0], errors
