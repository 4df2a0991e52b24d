"""The web chat at /chat in real Chromium: register with a registration token, pick a
model, a streamed answer, the queue position while the request waits, and Stop, which
must reach the backend (the fake backend sees its connection closed), and the access token
refreshed before it expires. One browser, one page load."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.support import POLL_MS, TIMEOUT_MS, Site, site
from tests.conftest import ALICE
from tests.support.fakebackend import FakeBackend
from tests.support.gwclient import chat, wait_until
from tests.support.identity import PASSWORD

expect = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing").expect


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with FakeBackend(chunks=4) as backend:
        # a 2 s access token: the page must keep refreshing it (at 80% of its life) for the module
        yield from site(tmp_path_factory.mktemp("chat-web"), backend, {}, auth={"jwt_access_ttl_s": 2})


@pytest.fixture(scope="module")
def page(browser: Any, web: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{web.url}/chat?poll_ms={POLL_MS}")
    yield page
    context.close()


def send(page: Any, text: str) -> Any:
    page.fill("textarea[name=message]", text)
    page.click("form.compose button[type=submit]")
    return page.locator(".msg.assistant").last


def test_register_with_a_token_and_log_in(page: Any, web: Site) -> None:
    page.fill("input[name=username]", "bea")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=registration_token]", "not-a-token")
    page.click("button[name=register]")
    assert page.text_content(".error") == "403: registration token is invalid, used or expired"
    page.fill("input[name=registration_token]", web.admin.registration_token(note="bea"))
    page.click("button[name=register]")
    page.wait_for_selector("select[name=model] option", state="attached")
    options = page.locator("select[name=model] option").all_text_contents()
    assert options == ["llama3:latest", "qwen2.5:7b", "nomic-embed-text:latest"]
    assert [u["username"] for u in web.admin.users()] == ["bea"]


def test_a_streamed_answer(page: Any, web: Site, screenshots: Path) -> None:
    web.backend.hold_mid_stream()  # the first chunk arrives, the rest waits: it is a stream
    answer = send(page, "hello <i>there</i>")
    expect(answer.locator(".content")).to_have_text("chunk0 ")
    assert "streaming" in (answer.get_attribute("class") or "")
    web.backend.release()
    answer.locator(".meta").wait_for()
    assert answer.locator(".content").text_content() == "chunk0 chunk1 chunk2 chunk3 "
    assert answer.locator(".meta").text_content() == "4 tokens · 0.01 s · stop"
    sent = web.backend.inference_requests()[-1].json
    assert sent["messages"] == [{"role": "user", "content": "hello <i>there</i>"}]
    assert sent["model"] == "llama3:latest" and sent["stream"] is True
    assert page.locator(".log i").count() == 0  # the user's text is text, not markup
    page.screenshot(path=str(screenshots / "chat-answer.png"))


def test_the_conversation_goes_on_in_the_page(page: Any, web: Site) -> None:
    answer = send(page, "and again")
    answer.locator(".meta").wait_for()
    sent = web.backend.inference_requests()[-1].json
    assert [m["content"] for m in sent["messages"]] == ["hello <i>there</i>", "chunk0 chunk1 chunk2 chunk3 ",
                                                        "and again"]


def test_stop_cancels_the_answer_upstream(page: Any, web: Site, screenshots: Path) -> None:
    backend = web.backend
    backend.hold_mid_stream()
    before = backend.disconnects
    answer = send(page, "a long story")
    expect(answer.locator(".content")).to_have_text("chunk0 ")
    page.click("button[name=stop]")
    backend.wait_disconnects(before + 1)  # the backend saw its client go: cancelled upstream
    answer.locator("[data-stopped]").wait_for()
    assert page.text_content("[data-status]") == "Stopped."
    assert answer.locator(".content").text_content() == "chunk0 "
    page.screenshot(path=str(screenshots / "chat-stopped.png"))
    backend.release()
    wait_until(lambda: web.gw.active() == [0], "the slot to be free again")


def test_the_queue_position_is_shown_while_waiting(page: Any, web: Site, screenshots: Path) -> None:
    backend = web.backend
    backend.hold()
    with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, web.url + "/api/chat", json=chat("first"), headers=ALICE)
        backend.wait_waiting(1)  # alice has the only slot
        answer = send(page, "my turn?")
        page.wait_for_selector("text=Waiting in the queue: position 1")
        page.screenshot(path=str(screenshots / "chat-queued.png"))
        backend.release()
        answer.locator(".meta").wait_for()
        assert page.text_content("[data-status]") == ""
        assert running.result(timeout=10).status_code == 200


def test_the_access_token_is_refreshed_before_it_expires(page: Any, web: Site) -> None:
    def refresh(request: Any) -> bool:
        return request.url.endswith("/auth/token") and "grant_type=refresh_token" in (request.post_data or "")

    for _ in range(2):  # two refreshes: past the 2 s life of every token the page had before
        with page.expect_request(refresh, timeout=TIMEOUT_MS) as seen:
            pass
        assert seen.value.response().status == 200
    answer = send(page, "still logged in?")
    answer.locator(".meta").wait_for()
    assert answer.locator(".content").text_content() == "chunk0 chunk1 chunk2 chunk3 "
