"""Assertions shared by the HTTP-level test files: error body shapes and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

_TRACE_MARKERS = ("Traceback", 'File "', "most recent call last")


def no_trace(response: httpx.Response) -> None:
    """A gateway error body never carries a stack trace."""
    text = response.text
    for marker in _TRACE_MARKERS:
        assert marker not in text, f"stack trace text in body: {text[:300]!r}"


def native_error(response: httpx.Response, status: int) -> str:
    """Assert Ollama's `{"error": "..."}` shape with `status`; return the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    no_trace(response)
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def openai_error(response: httpx.Response, status: int) -> str:
    """Assert OpenAI's `{"error": {"message","type","param","code"}}` shape; return the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    no_trace(response)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error["message"]


def poll(predicate: Callable[[], Any], timeout: float = 3.0, what: str = "condition") -> Any:
    """Call `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
