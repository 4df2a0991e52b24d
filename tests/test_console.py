"""The terminal console, headless (textual's pilot) against a real gateway: rows per model
with utilization bars and health, r refresh, c clear with a confirmation, s start/stop a
managed backend, q quit."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from seadragon_gw.client import AsyncGatewayClient
from seadragon_gw.console.__main__ import parser
from seadragon_gw.console.app import ConsoleApp
from seadragon_gw.console.view import bar
from tests.conftest import ALICE, GatewayFactory, RunningGateway
from tests.support.fakebackend import FakeBackend

FAKE_SERVER = str(Path(__file__).parent / "support" / "fake_model_server.py")
HELLO = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def _until(predicate: Callable[[], object], what: str, pilot: Pilot[None], limit_s: float = 10.0) -> None:
    """Poll (pressing r to refresh) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            app = pilot.app
            assert isinstance(app, ConsoleApp)
            raise AssertionError(f"timed out waiting for {what}: {app.rows}")
        await pilot.press("r")
        await pilot.pause(0.02)


def test_bar() -> None:
    assert bar(0.35, 20) == "[#######.............]  35%"
    assert bar(2.0, 4) == "[####] 100%"


def test_seed_004_command_line_forms() -> None:
    args = parser().parse_args(["http://gw:11435", "tok"])
    assert (args.url, args.token_arg) == ("http://gw:11435", "tok")
    args = parser().parse_args(["--username", "ann"])
    assert (args.url, args.username) == ("http://127.0.0.1:11435", "ann")


async def test_rows_health_and_clearing_a_queue(gw: RunningGateway, backend: FakeBackend) -> None:
    backend.hold()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        httpx.post(gw.url + "/api/chat", json=HELLO, headers=ALICE, timeout=20).status_code)) for _ in range(2)]
    for thread in threads:
        thread.start()
    app = ConsoleApp(AsyncGatewayClient(gw.url, token="tok-admin"), refresh_s=60)
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        await _until(lambda: any(r.model == "llama3:latest" and r.waiting == 1 for r in app.rows), "a waiting row",
                     pilot)
        assert "health: healthy   backends up: 1/1" in str(app.query_one("#health", Static).render())
        index = [r.model for r in app.rows].index("llama3:latest")
        row = table.get_row_at(index)
        assert row[:5] == ["llama3:latest", "served", "-", "1/1", "1"]
        assert row[5] == bar(1.0)
        table.move_cursor(row=index)
        await pilot.press("c")
        await pilot.press("n")
        assert "not cleared" in str(app.query_one("#message", Static).render())
        await pilot.press("c")
        await pilot.press("y")
        await _until(lambda: "cleared 1 waiting" in str(app.query_one("#message", Static).render()), "cleared",
                     pilot)
        backend.release()
        await pilot.press("q")
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [200, 503]
    await app.client.aclose()


async def test_start_and_stop_a_managed_backend(gateways: GatewayFactory, tmp_path: Path) -> None:
    managed = {"name": "local", "kind": "openai", "models": ["fake-model"], "max_concurrent": 1, "managed": {
        "command": [sys.executable, FAKE_SERVER, "--port", "{port}", "--host", "{host}"],
        "health": {"interval_s": 0.02}, "start_timeout_s": 10, "log_dir": str(tmp_path / "logs"),
        "start": "manual"}}
    gw = gateways.start([managed])
    app = ConsoleApp(AsyncGatewayClient(gw.url, token="tok-admin"), refresh_s=60)
    async with app.run_test() as pilot:
        await _until(lambda: [(r.model, r.status) for r in app.rows] == [("fake-model:latest", "stopped")], "stopped",
                     pilot)
        await pilot.press("s")
        await _until(lambda: app.rows and app.rows[0].status == "running", "running", pilot)
        assert "local: started" in str(app.query_one("#message", Static).render())
        await pilot.press("s")
        await _until(lambda: app.rows and app.rows[0].status == "stopped", "stopped again", pilot)
        await pilot.press("q")
    await app.client.aclose()


def test_cli_console_subcommand_reaches_the_console(capsys: object) -> None:
    from seadragon_gw.cli import main

    try:
        main(["console", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.startswith("usage: seadragon-gw console [-h] [--token TOKEN] [--username USERNAME]")
