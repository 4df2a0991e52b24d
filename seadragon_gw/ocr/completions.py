"""OpenAI chat completion answers for OCR text, whole or as SSE chunks, with `usage` counted.

Usage rule (also in the README): `prompt_tokens` is the number of images plus the words of the
request's text parts; `completion_tokens` the words of the answer (whitespace-separated, so a
line of CJK text without spaces is one word). OCR has no tokenizer; words are what a quota can
count honestly.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def json(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def usage_of(images: int, prompt_words: int, text: str) -> Usage:
    return Usage(images + prompt_words, len(text.split()))


def _head(model: str, kind: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": kind, "created": int(time.time()),
            "model": model}


def completion(model: str, text: str, usage: Usage) -> dict[str, Any]:
    """The whole answer: one assistant message with the text, lines separated by newlines."""
    return {**_head(model, "chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage.json()}


def chunks(model: str, text: str, usage: Usage) -> Iterator[bytes]:
    """The same answer as SSE events: the role, one chunk per line, the end with `usage`, [DONE]."""
    head = _head(model, "chat.completion.chunk")

    def event(delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    for line in text.splitlines(keepends=True):
        yield event({"content": line})
    yield event({}, "stop", usage=usage.json())
    yield b"data: [DONE]\n\n"
