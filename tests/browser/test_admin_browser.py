"""The admin page at /admin in real Chromium: log in, the overview, API keys shown once and
revoked, the whitelist, a held request in the queue page and cleared from it, users, the
logs, and the "admin only" page for a non-admin. One browser and one admin page load for the
module; pages are switched by the URL's #hash as a user clicks through them."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.support import POLL_MS, TIMEOUT_MS, Site, log_in, site
from tests.conftest import ALICE
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, wait_until


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with FakeBackend() as backend:
        yield from site(tmp_path_factory.mktemp("admin-web"), backend, {"ops": True, "ann": False})


@pytest.fixture(scope="module")
def page(browser: Any, web: Site) -> Iterator[Any]:
    """The admin page, logged in as the admin user `ops`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{web.url}/admin?poll_ms={POLL_MS}")
    log_in(page, "ops")
    page.wait_for_selector("[data-card=health] .badge")
    yield page
    context.close()


def show(page: Any, name: str) -> None:
    page.click(f"nav a[data-page={name}]")
    page.wait_for_selector(f".page-{name}")


def test_the_overview_shows_health_backends_and_models(page: Any, web: Site, screenshots: Path) -> None:
    assert page.text_content("[data-card=health] .badge") == "healthy"
    backends = page.locator("section.panel", has_text="Backends")
    assert backends.locator("td").first.text_content() == "b0"
    models = page.locator("section.panel", has_text="Queues per model").text_content()
    assert "llama3:latest" in models
    assert page.text_content("header .who") == "logged in as ops"
    page.screenshot(path=str(screenshots / "admin-overview.png"), full_page=True)


def test_an_api_key_is_shown_once_then_revoked(page: Any, web: Site, screenshots: Path) -> None:
    show(page, "keys")
    page.fill("input[name=name]", "browser-key")
    page.fill("input[name=priority]", "1")
    page.fill("input[name=allowed_models]", "llama3, qwen2.5:7b")
    page.click(".page-keys button[type=submit]")
    secret = page.locator("[data-secret]").input_value()
    listed = {k["name"]: k for k in web.admin.api_keys()}
    key = listed["browser-key"]
    assert secret.startswith(key["prefix"]) and key["priority"] == 1
    assert key["allowed_models"] == ["llama3", "qwen2.5:7b"]
    # the key works, and the page's list shows only its prefix
    assert httpx.get(web.url + "/auth/me", headers={"X-API-Key": secret}).json()["name"] == "browser-key"
    row = page.locator("tr", has_text="browser-key")
    row.wait_for()
    page.screenshot(path=str(screenshots / "admin-keys-created.png"), full_page=True)
    show(page, "whitelist")
    show(page, "keys")  # back again: the secret is gone for good
    page.locator("tr", has_text="browser-key").wait_for()
    assert page.locator("[data-secret]").count() == 0
    assert secret not in page.content()
    page.click("[data-revoke=browser-key]")
    page.wait_for_selector(f"text=Revoked API key 'browser-key' ({key['prefix']}).")
    assert page.locator("tr", has_text="browser-key").locator(".badge").first.text_content() == "revoked"
    assert [k["is_active"] for k in web.admin.api_keys() if k["name"] == "browser-key"] == [False]


def test_api_errors_are_shown_as_the_api_wrote_them(page: Any, web: Site) -> None:
    show(page, "keys")
    page.fill("input[name=name]", "bad-key")
    page.fill("input[name=priority]", "5000")
    page.click(".page-keys button[type=submit]")
    assert page.text_content(".error") == "400: priority: must be between 0 and 1000"
    assert "bad-key" not in [k["name"] for k in web.admin.api_keys()]


def test_a_whitelist_entry_is_added_and_removed(page: Any, web: Site, screenshots: Path) -> None:
    show(page, "whitelist")
    page.fill("input[name=ip]", "10.9.0.0/16")
    page.fill("input[name=priority]", "1")
    page.fill("input[name=label]", "<b>build farm</b>")  # shown as text, never as markup
    page.click(".page-whitelist button[type=submit]")
    page.wait_for_selector("text=Whitelisted 10.9.0.0/16 (priority 1).")
    row = page.locator("tr", has_text="10.9.0.0/16")
    assert row.locator("td").nth(2).text_content() == "<b>build farm</b>"
    assert page.locator("main b").count() == 0
    assert web.admin.ok("GET", "/api/admin/whitelist")["whitelist"][0]["label"] == "<b>build farm</b>"
    page.fill("input[name=ip]", "10.9.0.0/16")
    page.click(".page-whitelist button[type=submit]")
    assert page.text_content(".error") == "409: ip: 10.9.0.0/16 is already whitelisted"
    page.screenshot(path=str(screenshots / "admin-whitelist.png"), full_page=True)
    page.click("[data-remove='10.9.0.0/16']")
    page.wait_for_selector("text=Removed 10.9.0.0/16 from the whitelist.")
    assert page.locator("tr", has_text="10.9.0.0/16").count() == 0
    assert web.admin.ok("GET", "/api/admin/whitelist") == {"whitelist": []}


def test_a_held_request_appears_in_the_queue_page_and_is_cleared(page: Any, web: Site, screenshots: Path) -> None:
    backend = web.backend
    backend.hold()
    headers = {**ALICE, "X-Client-ID": "queue-test"}
    with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, web.url + "/api/chat", json=chat("first"), headers=ALICE)
        backend.wait_waiting(1)  # the only slot is taken, at the backend
        waiting = pool.submit(client.post, web.url + "/api/chat", json=chat("second"), headers=headers)
        wait_until(lambda: web.gw.waiting() == 1, "the second request to wait in the gateway's queue")
        show(page, "queue")
        row = page.locator(".waiting tr", has_text="queue-test")
        row.wait_for()
        cells = [c.strip() for c in row.locator("td").all_text_contents()]
        assert cells[1:6] == ["token:alice", "queue-test", "llama3:latest", "1", "2"]
        page.screenshot(path=str(screenshots / "admin-queue.png"), full_page=True)
        page.click("[data-clear='llama3:latest']")
        page.click("[data-confirm-clear='llama3:latest']")
        page.wait_for_selector("text=Cleared 1 waiting request(s) for llama3:latest.")
        answer = waiting.result(timeout=10)
        assert (answer.status_code, answer.json()) == (503, {"error": "queue cleared by an administrator"})
        page.wait_for_selector(".waiting td.empty")
        assert page.text_content(".waiting td.empty") == "nobody is waiting"
        backend.release()
        assert running.result(timeout=10).status_code == 200


def test_users_are_deactivated_and_activated(page: Any, web: Site) -> None:
    show(page, "users")
    page.click("[data-deactivate=ann]")
    page.wait_for_selector("text=ann: deactivated.")
    assert [u["is_active"] for u in web.admin.users() if u["username"] == "ann"] == [False]
    page.click("[data-activate=ann]")
    page.wait_for_selector("text=ann: activated.")
    assert [u["is_active"] for u in web.admin.users() if u["username"] == "ann"] == [True]


def test_registration_token_is_shown_once(page: Any, web: Site) -> None:
    show(page, "tokens")
    page.fill("input[name=note]", "for bea")
    page.click(".page-tokens button[type=submit]")
    token = page.locator("[data-secret]").input_value()
    tokens = web.admin.ok("GET", "/api/admin/tokens")["tokens"]
    assert [t["note"] for t in tokens if token.startswith(t["prefix"])] == ["for bea"]


def test_usage_crashes_and_missing_models_pages(page: Any, web: Site, screenshots: Path) -> None:
    missing = httpx.post(web.url + "/api/chat", json=chat("x", model="no-such-model"), headers=ALICE)
    assert missing.status_code == 404
    show(page, "missing")
    row = page.locator("tr", has_text="no-such-model")
    row.wait_for()
    assert row.locator("td").nth(1).text_content() == "token:alice"
    page.screenshot(path=str(screenshots / "admin-missing-models.png"), full_page=True)
    show(page, "crashes")
    page.wait_for_selector(".page-crashes table")
    page.screenshot(path=str(screenshots / "admin-crashes.png"), full_page=True)
    show(page, "usage")
    page.select_option("select[name=group_by]", "client")
    wait_until(lambda: _usage_has(web, "token:alice"), "the usage log to hold alice's requests")
    page.click("text=Show")
    page.locator(".page-usage tr", has_text="token:alice").wait_for()
    page.screenshot(path=str(screenshots / "admin-usage.png"), full_page=True)


def _usage_has(web: Site, client: str) -> bool:
    groups = web.admin.ok("GET", "/api/admin/usage?group_by=client")["groups"]
    return any(g["client"] == client for g in groups)


def test_logout_then_a_non_admin_sees_admin_only(page: Any, web: Site, screenshots: Path) -> None:
    page.click("text=Log out")
    page.wait_for_selector("input[name=username]")
    log_in(page, "ann")
    page.wait_for_selector(".admin-only")
    assert page.text_content(".admin-only h2") == "Admin only"
    assert "ann, who is not an administrator" in page.text_content(".admin-only")
    page.screenshot(path=str(screenshots / "admin-only.png"))
    page.click("text=Log out")
    log_in(page, "ops", "wrong password")
    assert page.text_content(".error") == "401: unauthorized: wrong username or password"
