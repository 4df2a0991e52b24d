"""The terminal console (seed 004): live model status, queue load with utilization bars and
health, refreshed every `refresh_s`; keys: q quit, r refresh, s start/stop the selected
model's managed backend, c clear its queue (after a y/n confirmation).

All data comes from the gateway's API through the SDK (`AsyncGatewayClient`), so it shows
exactly what the admin API answers, errors included.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static

from ..client import AsyncGatewayClient, GatewayError, PermissionDenied
from .view import ModelRow, Snapshot, bar, snapshot

COLUMNS = ("model", "status", "profile", "running", "waiting", "utilization")


class Confirm(ModalScreen[bool]):
    """Yes or no, for changes that answer other people's requests."""

    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConsoleApp(App[None]):
    TITLE = "seadragon_gw console"
    BINDINGS = [Binding("q", "quit", "quit"), Binding("r", "refresh", "refresh"),
                Binding("s", "start_stop", "start/stop"), Binding("c", "clear_queue", "clear queue")]

    def __init__(self, client: AsyncGatewayClient, refresh_s: float = 2.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_s = refresh_s
        self.rows: list[ModelRow] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting...", id="health")
        yield DataTable(id="models", cursor_type="row")
        yield Static("", id="message")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        await self.action_refresh()
        self.set_interval(self.refresh_s, self.action_refresh)

    async def fetch(self) -> Snapshot:
        health = await self.client.health()
        queue = await self.client.queue.status()
        try:
            managed = await self.client.admin.list_models()
        except PermissionDenied:
            managed = []
        return snapshot(health, queue, managed)

    async def action_refresh(self) -> None:
        try:
            shot = await self.fetch()
        except GatewayError as exc:
            self.query_one("#health", Static).update(f"gateway: {exc.message}")
            return
        self.rows = shot.rows
        self.query_one("#health", Static).update(
            f"health: {shot.health}   backends up: {shot.backends_up}/{shot.backends}")
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for row in shot.rows:
            table.add_row(row.model, row.status, row.profile or "-", f"{row.processing}/{row.max_concurrent}",
                          str(row.waiting), bar(row.utilization), key=row.model)
        if shot.rows:
            table.move_cursor(row=min(cursor, len(shot.rows) - 1))

    def selected(self) -> ModelRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def say(self, text: str) -> None:
        self.query_one("#message", Static).update(text)

    async def action_start_stop(self) -> None:
        row = self.selected()
        if row is None or row.backend is None:
            self.say("the selected model is not a managed backend's")
            return
        try:
            if row.status in ("stopped", "crashed"):
                answer: dict[str, Any] = await self.client.admin.start_model(row.backend)
            else:
                answer = await self.client.admin.stop_model(row.backend)
            self.say(f"{row.backend}: {answer.get('status')}")
        except GatewayError as exc:
            self.say(f"{row.backend}: {exc.message}")
        await self.action_refresh()

    def action_clear_queue(self) -> None:
        row = self.selected()
        if row is None:
            self.say("no model selected")
            return

        async def confirmed(yes: bool | None) -> None:
            if not yes:
                self.say("not cleared")
                return
            try:
                answer = await self.client.queue.clear(row.model)
                self.say(f"{row.model}: cleared {answer['cleared']} waiting request(s)")
            except GatewayError as exc:
                self.say(f"{row.model}: {exc.message}")
            await self.action_refresh()

        self.push_screen(Confirm(f"Clear the queue of {row.model}? Waiting requests get 503."), confirmed)
