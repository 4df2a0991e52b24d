"""The admin page's managed models in real Chromium: a managed backend running
tests/support/fake_model_server.py (a real process) started, switched to another profile,
its log read, and stopped at once (force), all by clicking; the overview shows its profile."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.support import POLL_MS, TIMEOUT_MS, Site, log_in, site
from tests.conftest import ADMIN

FAKE = str(Path(__file__).resolve().parents[1] / "support" / "fake_model_server.py")
expect = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing").expect


def _managed(tmp: Path) -> dict[str, Any]:
    return {"name": "local", "kind": "openai", "models": ["fake-model"], "max_concurrent": 1, "managed": {
        "command": [sys.executable, FAKE, "--port", "{port}"], "health": {"interval_s": 0.02},
        "start_timeout_s": 10, "start": "manual", "log_dir": str(tmp / "logs"), "default_profile": "small",
        "profiles": {"small": {"args": ["--tag", "small"]}, "large": {"args": ["--tag", "large"]}}}}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("models-web")
    yield from site(tmp, None, {"ops": True}, backends=[_managed(tmp)])


@pytest.fixture(scope="module")
def page(browser: Any, web: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{web.url}/admin?poll_ms={POLL_MS}#models")
    log_in(page, "ops")
    page.wait_for_selector(".page-models tr:has-text('local')")
    yield page
    context.close()


def _model(web: Site) -> dict[str, Any]:
    (model,) = httpx.get(web.url + "/api/admin/models", headers=ADMIN).json()["models"]
    return dict(model)


def _status(page: Any) -> Any:
    return page.locator(".page-models tr", has_text="local").locator("td").nth(2)


def test_start_switch_read_the_log_and_stop(page: Any, web: Site, screenshots: Path) -> None:
    expect(_status(page)).to_have_text("stopped")
    page.click("[data-start=local]")
    page.wait_for_selector("text=local: start done.")
    model = _model(web)
    assert (model["status"], model["profile"]) == ("running", "small")
    expect(_status(page)).to_have_text("running")
    page.screenshot(path=str(screenshots / "admin-models-running.png"), full_page=True)

    page.select_option(".page-models select[aria-label=profile]", "large")
    page.click("[data-switch=local]")
    page.wait_for_selector("text=local: switch to large done.")
    assert (_model(web)["status"], _model(web)["profile"]) == ("running", "large")
    argv = httpx.get(f"http://127.0.0.1:{_model(web)['port']}/argv").json()["argv"]
    assert argv[-2:] == ["--tag", "large"]

    page.click("button[data-log=local]")
    log = page.locator("pre[data-log-text=local]")
    expect(log).to_contain_text("GET /health")
    page.screenshot(path=str(screenshots / "admin-models-log.png"), full_page=True)

    page.check(".page-models tr:has-text('local') input[type=checkbox]")
    page.click("[data-stop=local]")
    page.wait_for_selector("text=local: stop (force) done.")
    assert _model(web)["status"] == "stopped"
    expect(_status(page)).to_have_text("stopped")


def test_the_overview_shows_the_profile(page: Any, web: Site) -> None:
    page.click("nav a[data-page=overview]")
    row = page.locator(".page-overview tr", has_text="local")
    expect(row.locator("td").nth(4)).to_have_text("large")  # the one it starts with next: the last switched to
    expect(row.locator("td").nth(2)).to_have_text("stopped")
